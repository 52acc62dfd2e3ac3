"""Kafka for the streaming path: reuse a broker that answers, else run a one-node KRaft one.

The broker runs straight from Maven Central jars (``kafka-pom.xml``) cached outside the
repo, so nothing is downloaded twice and no Kafka tarball or Docker is needed. The
controller listens on bootstrap port + 1 (9093 for the default 9092). Topic data lives in
a fresh temporary directory that ``down`` deletes: every ``up`` starts from empty.
A broker whose data survives a stop and start (for fault tests) is
``harness.servers.PrivateKafka``; it shares ``broker_command`` with this one.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

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

NAME = "kafka"
EXPECT = "kafka.Kafka"  # substring of the command line of a broker we started
KAFKA = Managed(NAME, EXPECT, "Kafka broker")
POM = Path(__file__).parent / "kafka-pom.xml"
READY_TIMEOUT_S = 60.0
DATA_PREFIX = "fraud-kafka-"

SERVER_PROPERTIES = """\
# Written by devservices: single-node KRaft broker for local development.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{ctrl_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctrl_port}
advertised.listeners=PLAINTEXT://{host}:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={log_dirs}
"""
# What a one-broker cluster needs (internal topics cannot have more replicas than brokers).
SINGLE_NODE_PROPERTIES = """\
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=true
"""

LOG4J2_PROPERTIES = """\
# INFO to the console, which the launcher sends to <services_dir>/kafka.log.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
# The full config dump (hundreds of lines, several times) buries the useful lines.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
"""


def bootstrap_target(settings: Settings) -> tuple[str, int]:
    """The first ``host:port`` of KAFKA_BOOTSTRAP_SERVERS: the one we would serve."""
    first = settings.kafka_bootstrap_servers.split(",")[0]
    return split_host_port(first, 9092)


def broker_is_up(settings: Settings) -> bool:
    """True if a broker answers a metadata request at the bootstrap servers."""
    host, port = bootstrap_target(settings)
    return broker_answers(settings.kafka_bootstrap_servers, host, port)


def broker_answers(bootstrap: str, host: str, port: int) -> bool:
    """True if ``host:port`` accepts connections and ``bootstrap`` answers a metadata request."""
    if not tcp_open(host, port):  # skip librdkafka's retry noise when nothing listens
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        admin.list_topics(timeout=2)
    except KafkaException:
        return False
    return True


def kafka_version() -> str:
    """The Kafka version pinned in the pom; it names the jar cache directory."""
    root = ET.parse(POM).getroot()
    version = root.findtext(
        "{http://maven.apache.org/POM/4.0.0}properties/"
        "{http://maven.apache.org/POM/4.0.0}kafka.version"
    )
    if not version:
        raise ServiceError(f"no <kafka.version> in {POM}; restore the file from git")
    return version.strip()


def ensure_jars(settings: Settings) -> Path:
    """Copy the broker's jars into the cache once; a marker holds the pom's hash."""
    libs = settings.kafka_cache_dir / kafka_version() / "libs"
    return maven_fetch(POM, libs, "the Kafka jars", "kafka_2.13-*.jar")


def find_java() -> str:
    java = shutil.which("java")
    if not java:
        raise ServiceError(
            "`java` not found on PATH; Kafka 4 needs Java 17+: "
            "`apt-get install openjdk-17-jre-headless` (or set KAFKA_BOOTSTRAP_SERVERS)"
        )
    return java


def _datadir_record(settings: Settings) -> Path:
    return settings.services_dir / "kafka.datadir"


def _remove_datadir(settings: Settings) -> None:
    """Delete the temp dir we recorded, but only if it is one of ours."""
    record = _datadir_record(settings)
    try:
        path = Path(record.read_text().strip())
    except OSError:
        return
    tmp_root = Path(tempfile.gettempdir()).resolve()
    if path.name.startswith(DATA_PREFIX) and path.resolve().parent == tmp_root:
        shutil.rmtree(path, ignore_errors=True)
    record.unlink(missing_ok=True)


def ensure_broker(settings: Settings) -> ServiceHandle:
    """Return a broker that answers, starting a local KRaft one if needed. Idempotent."""
    host, port = bootstrap_target(settings)
    address = f"{host}:{port}"
    services_dir = settings.services_dir
    log = services_dir / "kafka.log"
    with service_lock(services_dir, NAME):
        ours = our_process(services_dir, NAME, EXPECT)
        if ours is not None:
            check_same_address(NAME, ours, address)
        if broker_is_up(settings):
            if ours is not None:
                return ServiceHandle(NAME, address, "started", ours.pid, log)
            return ServiceHandle(NAME, address, "reused")
        if ours is not None:  # ours but not answering: replace it
            terminate(ours.pid, EXPECT)
            pid_file(services_dir, NAME).unlink(missing_ok=True)
        _remove_datadir(settings)
        if tcp_open(host, port):
            raise ServiceError(
                f"something listens on {address} but does not answer as a Kafka broker; "
                "free the port or set KAFKA_BOOTSTRAP_SERVERS"
            )
        if not is_local_host(host):
            raise ServiceError(
                f"no Kafka broker answers at {address} and it is not a local address; "
                "start it there or set KAFKA_BOOTSTRAP_SERVERS=localhost:9092"
            )
        ctrl_port = port + 1
        if ctrl_port > 65535 or tcp_open("127.0.0.1", ctrl_port):
            raise ServiceError(
                f"controller port {ctrl_port} (bootstrap port + 1) is not free; "
                "free it or choose another port in KAFKA_BOOTSTRAP_SERVERS"
            )
        java = find_java()
        libs = ensure_jars(settings)
        return _start(java, libs, settings, host, port)


def _cluster_id() -> str:
    """A random KRaft cluster id, as `kafka-storage random-uuid` makes it.

    Base64 of a UUID can start with '-', which the tool's argument parser then takes for an
    option (a 1-in-64 failure that once broke CI), so such ids are drawn again, as Kafka's
    own `Uuid.randomUuid` does.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _first_error(done: subprocess.CompletedProcess[str]) -> str:
    """The line that says what went wrong: stderr first, as stdout carries INFO logging."""
    for stream in (done.stderr, done.stdout):
        lines = [line.strip() for line in stream.splitlines() if line.strip()]
        if lines:
            return next((line for line in lines if "rror" in line or "xception" in line), lines[-1])
    return "no output"


def broker_command(java: str, libs: Path, data: Path, host: str, port: int, heap: str) -> list[str]:
    """The single-node broker's command line over ``data`` (see ``node_command``); the
    controller gets port + 1."""
    properties = (
        SERVER_PROPERTIES.format(host=host, port=port, ctrl_port=port + 1, log_dirs=data / "logs")
        + SINGLE_NODE_PROPERTIES
    )
    return node_command(java, libs, data, properties, heap, ["--standalone", "-t", _cluster_id()])


def node_command(
    java: str, libs: Path, data: Path, properties: str, heap: str, format_args: list[str]
) -> list[str]:
    """Write ``properties`` (whose ``log.dirs`` is ``data/logs``) and the log4j config into
    ``data``, format the storage with ``format_args`` unless it is formatted already (so a
    restart over the same ``data`` keeps every topic), and return the broker's command line."""
    props = data / "server.properties"
    props.write_text(properties)
    log4j = data / "log4j2.properties"
    log4j.write_text(LOG4J2_PROPERTIES)
    jvm = [java, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
    if not (data / "logs" / "meta.properties").exists():
        fmt = [*jvm, "kafka.tools.StorageTool", "format", *format_args, "-c", str(props)]
        try:
            done = subprocess.run(fmt, capture_output=True, text=True, timeout=120, cwd=data)
        except subprocess.TimeoutExpired:
            raise ServiceError("formatting Kafka storage took over 2 min; check java") from None
        if done.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed: {_first_error(done)}")
    return [*jvm[:1], "-Xms256m", f"-Xmx{heap}", *jvm[1:], "kafka.Kafka", str(props)]


def _start(java: str, libs: Path, settings: Settings, host: str, port: int) -> ServiceHandle:
    services_dir = settings.services_dir
    log = services_dir / "kafka.log"
    data = Path(tempfile.mkdtemp(prefix=DATA_PREFIX))
    _datadir_record(settings).write_text(f"{data}\n")
    try:
        cmd = broker_command(java, libs, data, host, port, "1g")
    except ServiceError:
        _remove_datadir(settings)
        raise
    return KAFKA.launch(
        cmd,
        log,
        data,
        f"{host}:{port}",
        services_dir,
        lambda: broker_is_up(settings),
        READY_TIMEOUT_S,
        0.25,
        cleanup=lambda: _remove_datadir(settings),
    )


def stop_broker(settings: Settings) -> int | None:
    """Stop the broker we started (if any) and delete its data; returns its pid."""
    return KAFKA.stop(settings.services_dir, cleanup=lambda: _remove_datadir(settings))


def broker_status(settings: Settings) -> str:
    """One line: started (pid) / reused / down."""
    host, port = bootstrap_target(settings)
    ours = our_process(settings.services_dir, NAME, EXPECT)
    return status_line(NAME, ours, f"{host}:{port}", broker_is_up(settings))
