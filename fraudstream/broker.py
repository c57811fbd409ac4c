"""A local Apache Kafka broker (KRaft, single node) run from the jars on Maven Central.

``fraudstream kafka start`` formats the storage on first use, starts the broker in
the background on 127.0.0.1, waits until it answers, and creates the design's topics.
``stop`` stops only the process that ``start`` recorded. Everything lives under one
folder (``var/kafka`` by default): ``server.properties``, ``data/``, ``logs/`` and
``broker.pid``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fraudstream import config

#: Broker heap: about 1 GB is plenty for a local broker.
BROKER_HEAP = "1g"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

#: Topics kept forever: the stream is the system of record, and so are the labels
#: and the dead letters (nothing is lost). Alerts keep Kafka's default retention:
#: they are a view, rebuilt by replay.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
DESIGN_TOPICS: dict[str, dict[str, str]] = {
    config.TOPIC_PAYMENTS: KEEP_FOREVER,
    config.TOPIC_LABELS: KEEP_FOREVER,
    config.TOPIC_DEAD_LETTERS: KEEP_FOREVER,
    config.TOPIC_ALERTS: {},
}


class BrokerError(RuntimeError):
    """A broker command could not do what was asked; the message is one sentence."""


@dataclass(frozen=True)
class LocalBroker:
    """Where a local broker lives and listens.

    Parameters
    ----------
    home : Path
        Folder for configuration, data, logs and the PID file.
    port : int
        Client port on 127.0.0.1.
    controller_port : int
        KRaft controller port on 127.0.0.1.
    """

    home: Path = config.VAR_DIR / "kafka"
    port: int = 9092
    controller_port: int = 9093
    host: str = "127.0.0.1"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else "java"


def _classpath() -> str:
    jars_dir = config.KAFKA_BROKER_JARS_DIR
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(
            f"The Kafka broker jars are missing from {jars_dir}: "
            "run scripts/fetch-jars.sh (or scripts/setup.sh) first."
        )
    return str(jars_dir / "*")


def port_in_use(host: str, port: int) -> bool:
    """Return True if something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _write_config(broker: LocalBroker) -> None:
    (broker.home / "logs").mkdir(parents=True, exist_ok=True)
    broker.properties_file.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={broker.host}:{broker.controller_port}",
                f"listeners=PLAINTEXT://{broker.host}:{broker.port},"
                f"CONTROLLER://{broker.host}:{broker.controller_port}",
                f"advertised.listeners=PLAINTEXT://{broker.host}:{broker.port}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={broker.data_dir}",
                "num.partitions=1",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                # Topics are created by `start` with their retention; a typo'd topic
                # name in a job should fail, not create an empty topic.
                "auto.create.topics.enable=false",
                "",
            ]
        )
    )
    (broker.home / "log4j2.properties").write_text(
        "\n".join(
            [
                "status = warn",
                "appender.file.type = File",
                "appender.file.name = FILE",
                f"appender.file.fileName = {broker.log_file}",
                "appender.file.layout.type = PatternLayout",
                "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = INFO",
                "rootLogger.appenderRef.file.ref = FILE",
                "logger.kafka.name = kafka",
                "logger.kafka.level = INFO",
                "logger.apache.name = org.apache",
                "logger.apache.level = WARN",
                "",
            ]
        )
    )


def _format_storage(broker: LocalBroker) -> None:
    if (broker.data_dir / "meta.properties").exists():
        return
    classpath = _classpath()
    cluster_id = subprocess.run(
        [_java(), "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = subprocess.run(
        [
            _java(),
            "-cp",
            classpath,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(broker.properties_file),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BrokerError(f"Formatting Kafka storage in {broker.data_dir} failed: {result.stderr}")


def running_pid(broker: LocalBroker) -> int | None:
    """Return the PID of the broker that ``start`` recorded, if it is still that broker."""
    try:
        pid = int(broker.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # A recycled PID belongs to another program: never signal it.
    if "kafka.Kafka" in cmdline and str(broker.properties_file) in cmdline:
        return pid
    return None


def _log_tail(broker: LocalBroker, lines: int = 15) -> str:
    try:
        return "\n".join(broker.log_file.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def _wait_until_ready(broker: LocalBroker, process: subprocess.Popen) -> None:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrokerError(
                f"The Kafka broker exited with code {process.returncode} while starting; "
                f"last lines of {broker.log_file}:\n{_log_tail(broker)}"
            )
        if port_in_use(broker.host, broker.port):
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=broker.bootstrap_servers, request_timeout_ms=5000
                )
                admin.list_topics()
                admin.close()
                return
            except KafkaError:
                pass
        time.sleep(0.5)
    raise BrokerError(
        f"The Kafka broker did not answer on {broker.bootstrap_servers} within "
        f"{START_TIMEOUT_S:.0f} s; see {broker.log_file}."
    )


def start(broker: LocalBroker) -> tuple[int, bool]:
    """Start the broker in the background unless it already runs.

    Returns
    -------
    (int, bool)
        The broker's PID, and whether this call started it.

    Raises
    ------
    BrokerError
        If a port is taken by another program, the jars are missing, or the broker
        does not come up.
    """
    pid = running_pid(broker)
    if pid is not None:
        return pid, False
    for port in (broker.port, broker.controller_port):
        if port_in_use(broker.host, port):
            raise BrokerError(
                f"Port {port} on {broker.host} is already in use by another program; "
                "stop it or choose other ports with --port/--controller-port."
            )
    classpath = _classpath()
    broker.home.mkdir(parents=True, exist_ok=True)
    _write_config(broker)
    _format_storage(broker)
    log_config = broker.home / "log4j2.properties"
    with open(broker.home / "logs" / "stdout.log", "ab") as stdout:
        process = subprocess.Popen(
            [
                _java(),
                f"-Xmx{BROKER_HEAP}",
                f"-Xms{BROKER_HEAP}",
                f"-Dlog4j2.configurationFile={log_config}",
                f"-Dkafka.logs.dir={broker.home / 'logs'}",
                "-cp",
                classpath,
                "kafka.Kafka",
                str(broker.properties_file),
            ],
            stdout=stdout,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the shell that started it does not stop it.
            start_new_session=True,
        )
    broker.pid_file.write_text(f"{process.pid}\n")
    try:
        _wait_until_ready(broker, process)
    except BrokerError:
        if process.poll() is None:
            process.kill()
        broker.pid_file.unlink(missing_ok=True)
        raise
    return process.pid, True


def stop(broker: LocalBroker) -> int | None:
    """Stop the broker that ``start`` recorded; return its PID, or None if none ran."""
    pid = running_pid(broker)
    if pid is None:
        broker.pid_file.unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        if _is_zombie(pid):
            break
        time.sleep(0.2)
    else:
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    broker.pid_file.unlink(missing_ok=True)
    return pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def create_topics(
    bootstrap_servers: str,
    topics: dict[str, dict[str, str]] | None = None,
    partitions: int = 4,
    replication_factor: int = 1,
) -> list[str]:
    """Create topics that do not exist yet; return the names created.

    Parameters
    ----------
    bootstrap_servers : str
        Brokers to talk to.
    topics : dict, optional
        Topic name to topic configuration; the design's topics by default.
    partitions : int
        Partition count of each new topic.
    replication_factor : int
        Replicas of each partition.
    """
    from kafka.admin import KafkaAdminClient, NewTopic

    topics = DESIGN_TOPICS if topics is None else topics
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15000)
    try:
        missing = [name for name in topics if name not in set(admin.list_topics())]
        if missing:
            admin.create_topics(
                [
                    NewTopic(name, partitions, replication_factor, topic_configs=topics[name])
                    for name in missing
                ]
            )
        return missing
    finally:
        admin.close()


def describe_topics(bootstrap_servers: str) -> dict[str, dict[str, str]]:
    """Return each non-internal topic's partition count and retention.

    Returns
    -------
    dict
        Topic name to ``{"partitions": "4", "retention.ms": "-1"}``.
    """
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15000)
    try:
        topics = {
            topic["name"]: {"partitions": str(len(topic["partitions"]))}
            for topic in admin.describe_topics()
            if not topic["is_internal"] and not topic["name"].startswith("__")
        }
        if topics:
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, name, {"retention.ms": None})
                for name in topics
            ]
            for name, configs in admin.describe_configs(resources)["topic"].items():
                # A topic on the broker's default retention reports no value here.
                if "retention.ms" in configs:
                    topics[name]["retention.ms"] = configs["retention.ms"]["value"]
        return topics
    finally:
        admin.close()
