"""An S3-compatible server for object-storage jobs and tests: reuse one that answers, else
run s3proxy over a local directory.

s3proxy (``org.gaul:s3proxy``) is one self-contained jar from Maven Central
(``s3proxy-pom.xml``), fetched by ``mvn`` into a cache outside the repo at ``up`` time and
never at run time. It runs on the Java 17 the Kafka broker uses, with the filesystem
backend: buckets are directories under ``S3PROXY_DATA_DIR``, kept across ``down``/``up``.
Clients reach it with the standard AWS variables; ``client_env`` gives them.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow.fs as pafs

from core.settings import Settings

from ._common import (
    Managed,
    ServiceError,
    ServiceHandle,
    check_same_address,
    is_local_host,
    maven_fetch,
    our_process,
    pid_file,
    service_lock,
    split_host_port,
    status_line,
    tcp_open,
    terminate,
)

NAME = "s3proxy"
EXPECT = "s3proxy"  # substring of the command line of a server we started
S3PROXY = Managed(NAME, EXPECT, "s3proxy")
POM = Path(__file__).parent / "s3proxy-pom.xml"
READY_TIMEOUT_S = 60.0
DEFAULT_PORT = 9300

PROPERTIES = """\
# Written by devservices: s3proxy over a local directory, for development and tests.
s3proxy.endpoint=http://{host}:{port}
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity={identity}
s3proxy.credential={credential}
jclouds.provider=filesystem
jclouds.filesystem.basedir={data}
"""


def endpoint_url(settings: Settings) -> str:
    host, port = split_host_port(settings.s3proxy_address, DEFAULT_PORT)
    return f"http://{host}:{port}"


def client_env(settings: Settings) -> dict[str, str]:
    """The standard AWS variables that point a client (ours, Spark's, the aws CLI) at it."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url(settings),
        "AWS_ACCESS_KEY_ID": settings.s3proxy_identity,
        "AWS_SECRET_ACCESS_KEY": settings.s3proxy_credential.get_secret_value(),
        "AWS_REGION": "us-east-1",
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    }


def s3proxy_is_up(settings: Settings) -> bool:
    """An S3 server answers at the address and lists its buckets with our credentials."""
    host, port = split_host_port(settings.s3proxy_address, DEFAULT_PORT)
    if not tcp_open(host, port):
        return False
    fs = pafs.S3FileSystem(
        access_key=settings.s3proxy_identity,
        secret_key=settings.s3proxy_credential.get_secret_value(),
        endpoint_override=f"{host}:{port}",
        scheme="http",
        region="us-east-1",
        connect_timeout=1,
        request_timeout=2,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    try:
        fs.get_file_info(pafs.FileSelector("", allow_not_found=True))
    except OSError:
        return False
    return True


def s3proxy_version() -> str:
    """The version pinned in the pom; it names the jar cache directory."""
    version = (
        ET.parse(POM)
        .getroot()
        .findtext(
            "{http://maven.apache.org/POM/4.0.0}properties/"
            "{http://maven.apache.org/POM/4.0.0}s3proxy.version"
        )
    )
    if not version:
        raise ServiceError(f"no <s3proxy.version> in {POM}; restore the file from git")
    return version.strip()


def ensure_jar(settings: Settings) -> Path:
    """Copy s3proxy's jar into the cache once (a marker holds the pom's hash); its path."""
    jar = f"s3proxy-{s3proxy_version()}-jar-with-dependencies.jar"
    return maven_fetch(POM, settings.s3proxy_cache_dir / s3proxy_version(), "s3proxy", jar) / jar


def ensure_s3proxy(settings: Settings) -> ServiceHandle:
    """Return an S3 server that answers, starting s3proxy if needed. Idempotent."""
    host, port = split_host_port(settings.s3proxy_address, DEFAULT_PORT)
    address = f"{host}:{port}"
    services_dir = settings.services_dir
    log = services_dir / "s3proxy.log"
    with service_lock(services_dir, NAME):
        ours = our_process(services_dir, NAME, EXPECT)
        if ours is not None:
            check_same_address(NAME, ours, address)
        if s3proxy_is_up(settings):
            if ours is not None:
                return ServiceHandle(NAME, address, "started", ours.pid, log)
            return ServiceHandle(NAME, address, "reused")
        if ours is not None:  # ours but not answering: replace it
            terminate(ours.pid, EXPECT)
            pid_file(services_dir, NAME).unlink(missing_ok=True)
        if tcp_open(host, port):
            raise ServiceError(
                f"something listens on {address} but does not answer as S3 with"
                " S3PROXY_IDENTITY/S3PROXY_CREDENTIAL; free the port or set S3PROXY_ADDRESS"
            )
        if not is_local_host(host):
            raise ServiceError(f"no S3 server answers at {address} and it is not a local address")
        java = shutil.which("java")
        if not java:
            raise ServiceError("`java` not found on PATH; s3proxy needs Java 17+")
        return _start(java, ensure_jar(settings), settings, host, port)


def _start(java: str, jar: Path, settings: Settings, host: str, port: int) -> ServiceHandle:
    data = settings.s3proxy_data_dir or settings.services_dir / "s3proxy-data"
    data.mkdir(parents=True, exist_ok=True)
    props = settings.services_dir / "s3proxy.properties"
    props.write_text(
        PROPERTIES.format(
            host=host,
            port=port,
            identity=settings.s3proxy_identity,
            credential=settings.s3proxy_credential.get_secret_value(),
            data=data.resolve(),
        )
    )
    os.chmod(props, 0o600)  # it holds the credential
    cmd = [java, "-Xmx256m", "-jar", str(jar), "--properties", str(props)]
    return S3PROXY.launch(
        cmd,
        settings.services_dir / "s3proxy.log",
        settings.services_dir,
        f"{host}:{port}",
        settings.services_dir,
        lambda: s3proxy_is_up(settings),
        READY_TIMEOUT_S,
        0.25,
    )


def stop_s3proxy(settings: Settings) -> int | None:
    """Stop the s3proxy we started (if any); its data directory stays. Returns its pid."""
    return S3PROXY.stop(settings.services_dir)


def s3proxy_status(settings: Settings) -> str:
    host, port = split_host_port(settings.s3proxy_address, DEFAULT_PORT)
    ours = our_process(settings.services_dir, NAME, EXPECT)
    return status_line(NAME, ours, f"{host}:{port}", s3proxy_is_up(settings))
