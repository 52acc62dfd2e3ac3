"""Redis for the Feast online store: reuse one that answers, else start ``redis-server``."""

from __future__ import annotations

import os
import shutil
import subprocess

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from core.redis_url import RedisTarget, parse
from core.settings import Settings

from ._common import (
    Managed,
    ServiceError,
    ServiceHandle,
    check_same_address,
    is_local_host,
    our_process,
    pid_file,
    service_lock,
    status_line,
    tcp_open,
    terminate,
)

NAME = "redis"
EXPECT = "redis-server"  # substring of the command line of a server we started
REDIS = Managed(NAME, EXPECT, "redis-server")
READY_TIMEOUT_S = 10.0


def _ping(target: RedisTarget) -> None:
    probe = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    client = redis.Redis(
        host=target.host,
        port=target.port,
        **(target.params | probe),
        retry=Retry(NoBackoff(), 0),  # a probe: the default retries take ~8 s to say "down"
    )
    try:
        client.ping()
    finally:
        client.close()


def redis_is_up(settings: Settings) -> bool:
    """True if a Redis answers PING with the configured address and password."""
    try:
        _ping(parse(settings.redis_connection_string))
    except redis.RedisError:
        return False
    return True


def _install_redis() -> None:
    """Root on Debian/Ubuntu: fetch the package rather than make the user do it."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ServiceError(f"`{' '.join(cmd)}` failed ({exc}); install redis-server") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ServiceError(f"`{' '.join(cmd)}` failed: {last}; install redis-server by hand")


def _redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary:
        return binary
    if os.geteuid() != 0:
        raise ServiceError(
            "redis-server not found; run `sudo apt-get install redis-server` "
            "or point REDIS_CONNECTION_STRING at a running Redis"
        )
    _install_redis()
    binary = shutil.which("redis-server")
    if not binary:
        raise ServiceError("installed redis-server but it is not on PATH; check the install")
    return binary


def ensure_redis(settings: Settings) -> ServiceHandle:
    """Return a Redis that answers PING, starting one on 127.0.0.1 if needed. Idempotent."""
    target = parse(settings.redis_connection_string)
    services_dir = settings.services_dir
    log = services_dir / "redis.log"
    with service_lock(services_dir, NAME):
        ours = our_process(services_dir, NAME, EXPECT)
        if ours is not None:
            check_same_address(NAME, ours, target.address)
        if redis_is_up(settings):
            if ours is not None:
                return ServiceHandle(NAME, target.address, "started", ours.pid, log)
            return ServiceHandle(NAME, target.address, "reused")
        if ours is not None:  # ours but not answering: replace it
            terminate(ours.pid, EXPECT)
            pid_file(services_dir, NAME).unlink(missing_ok=True)
        if tcp_open(target.host, target.port):
            try:
                _ping(target)
            except redis.RedisError as exc:
                raise ServiceError(
                    f"something listens on {target.address} but PING fails ({exc}); "
                    "fix the password in REDIS_CONNECTION_STRING or free the port"
                ) from None
        if not is_local_host(target.host):
            raise ServiceError(
                f"no Redis answers at {target.address} and it is not a local address; "
                "start it there or set REDIS_CONNECTION_STRING=localhost:6379"
            )
        binary = _redis_server_binary()
        if redis_is_up(settings):  # the Debian package may have started a system Redis
            return ServiceHandle(NAME, target.address, "reused")
        return _start(binary, target, settings)


def _start(binary: str, target: RedisTarget, settings: Settings) -> ServiceHandle:
    services_dir = settings.services_dir
    log_path = services_dir / "redis.log"
    cmd = [binary, "--port", str(target.port), "--bind", "127.0.0.1"]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    cmd += ["--dir", str(services_dir)]
    if target.params.get("password"):
        cmd += ["--requirepass", str(target.params["password"])]
    return REDIS.launch(
        cmd,
        log_path,
        services_dir,
        target.address,
        services_dir,
        lambda: redis_is_up(settings),
        READY_TIMEOUT_S,
    )


def stop_redis(settings: Settings) -> int | None:
    """Stop the redis-server we started (if any); returns its pid. External ones are left."""
    return REDIS.stop(settings.services_dir)


def redis_status(settings: Settings) -> str:
    """One line: started (pid) / reused / down."""
    address = parse(settings.redis_connection_string).address
    ours = our_process(settings.services_dir, NAME, EXPECT)
    return status_line(NAME, ours, address, redis_is_up(settings))
