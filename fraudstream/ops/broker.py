"""A local Apache Kafka broker (KRaft, single node) run from the jars on Maven Central.

``fraudstream kafka start`` formats the storage on first use, starts the broker in
the background on 127.0.0.1, waits until it answers, and creates the design's topics.
``stop`` stops only the process that ``start`` recorded. Everything lives under one
folder (``var/kafka`` by default): ``server.properties``, ``data/``, ``logs/`` and
``broker.pid``.

``fraudstream kafka-cluster start`` runs three such nodes (:class:`LocalCluster`), each
broker and controller of one KRaft quorum with static voters, under ``var/kafka-cluster``:
topics replicated three times with ``min.insync.replicas=2``, so one node can stop
without a write or a read failing. Each node listens on a plain port (also the brokers'
own) and on a SASL_SSL port (SCRAM-SHA-512 over TLS) whose users are created when the
storage is formatted; ``client.properties`` beside the nodes holds what a client needs.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fraudstream import config
from fraudstream.errors import FraudstreamError
from fraudstream.ops.process import (
    abandon,
    java,
    launch,
    port_in_use,
    recorded_pid,
    require_free_ports,
    terminate,
    wait_until_ready,
)

#: Broker heap: about 1 GB is plenty for a local broker.
BROKER_HEAP = "1g"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0

#: Topics kept forever: the stream is the system of record, and so are the labels
#: and the dead letters (nothing is lost). Alerts keep Kafka's default retention:
#: they are a view, rebuilt by replay. Rules are compacted: each rule's newest version;
#: the rule sets the scoring jobs applied are kept, for replays to decide the same;
#: so are the model-health events, the model's history of alarms.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
DESIGN_TOPICS: dict[str, dict[str, str]] = {
    config.TOPIC_PAYMENTS: KEEP_FOREVER,
    config.TOPIC_LABELS: KEEP_FOREVER,
    config.TOPIC_DEAD_LETTERS: KEEP_FOREVER,
    config.TOPIC_ALERTS: {},
    config.TOPIC_RULES: {"cleanup.policy": "compact"},
    config.TOPIC_RULES_APPLIED: KEEP_FOREVER,
    config.TOPIC_MODEL_HEALTH: KEEP_FOREVER,
}


class BrokerError(FraudstreamError):
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
    #: KRaft node id; 1 for a single node.
    node_id: int = 1
    #: ``controller.quorum.voters`` of a multi-node quorum; empty for a single node.
    voters: str = ""
    #: SASL_SSL (SCRAM-SHA-512) client port; None for a plain broker only.
    secure_port: int | None = None
    #: Folder of ``scripts/make-certs.sh``'s output, for the SASL_SSL listener.
    certs: Path | None = None
    #: Replication of the internal topics and the default of new ones.
    replication_factor: int = 1

    @property
    def bootstrap_servers(self) -> str:
        """The broker's plain listener, ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """Where ``start`` records the broker's PID."""
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        """The broker's own log (log4j2)."""
        return self.home / "logs" / "server.log"

    @property
    def properties_file(self) -> Path:
        """The broker's ``server.properties``, written by ``start``."""
        return self.home / "server.properties"

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs``: topics and the metadata log."""
        return self.home / "data"


def _classpath() -> str:
    jars_dir = config.KAFKA_BROKER_JARS_DIR
    if not any(jars_dir.glob("kafka_2.13-*.jar")):
        raise BrokerError(
            f"The Kafka broker jars are missing from {jars_dir}: "
            "run scripts/fetch-jars.sh (or scripts/setup.sh) first."
        )
    return str(jars_dir / "*")


def _security_lines(broker: LocalBroker) -> list[str]:
    """The SASL_SSL listener's settings: SCRAM users from the metadata log, TLS from certs."""
    certs = broker.certs
    assert certs is not None, "a node with a SASL_SSL listener has the cluster's certificates"
    store_password = (certs / "store.password").read_text().strip()
    return [
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        # Brokers talk to each other on the plain listener, so the SASL_SSL one only
        # authenticates clients against the SCRAM credentials; no broker-side user.
        "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type=PKCS12",
        f"ssl.keystore.location={certs / 'broker.p12'}",
        f"ssl.keystore.password={store_password}",
        f"ssl.key.password={store_password}",
    ]


def _write_config(broker: LocalBroker) -> None:
    (broker.home / "logs").mkdir(parents=True, exist_ok=True)
    listeners = [f"PLAINTEXT://{broker.host}:{broker.port}"]
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if broker.secure_port is not None:
        listeners.append(f"SASL_SSL://{broker.host}:{broker.secure_port}")
        protocols += ",SASL_SSL:SASL_SSL"
    quorum = (
        f"controller.quorum.voters={broker.voters}"
        if broker.voters
        else f"controller.quorum.bootstrap.servers={broker.host}:{broker.controller_port}"
    )
    replicas = broker.replication_factor
    # With three replicas, two must acknowledge a write: one node may be down, no more.
    min_isr = min(2, replicas)
    broker.properties_file.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={broker.node_id}",
                quorum,
                f"listeners={','.join(listeners)},"
                f"CONTROLLER://{broker.host}:{broker.controller_port}",
                f"advertised.listeners={','.join(listeners)}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                f"listener.security.protocol.map={protocols}",
                *(_security_lines(broker) if broker.secure_port is not None else []),
                f"log.dirs={broker.data_dir}",
                "num.partitions=1",
                f"default.replication.factor={replicas}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={replicas}",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                "group.initial.rebalance.delay.ms=0",
                # Topics are created by `start` with their retention; a typo'd topic
                # name in a job should fail, not create an empty topic.
                "auto.create.topics.enable=false",
                "",
            ]
        )
    )
    # It may hold the keystore's password.
    broker.properties_file.chmod(0o600)
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


def _new_cluster_id() -> str:
    return subprocess.run(
        [java(), "-cp", _classpath(), "kafka.tools.StorageTool", "random-uuid"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _format_storage(
    broker: LocalBroker, cluster_id: str | None = None, scram_users: dict[str, str] | None = None
) -> None:
    if (broker.data_dir / "meta.properties").exists():
        return
    command = [java(), "-cp", _classpath(), "kafka.tools.StorageTool", "format"]
    # One node formats a dynamic quorum of itself; several share static voters.
    command += [] if broker.voters else ["--standalone"]
    command += ["-t", cluster_id or _new_cluster_id(), "-c", str(broker.properties_file)]
    for user, password in (scram_users or {}).items():
        command += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        # The tool's message, never the command: the command holds the passwords.
        raise BrokerError(
            f"Formatting Kafka storage in {broker.data_dir} failed: {result.stderr.strip()}"
        )


def running_pid(broker: LocalBroker) -> int | None:
    """Return the PID of the broker that ``start`` recorded, if it is still that broker."""
    return recorded_pid(broker.pid_file, "kafka.Kafka", str(broker.properties_file))


def _answers(broker: LocalBroker) -> bool:
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    if not port_in_use(broker.host, broker.port):
        return False
    try:
        servers = broker.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000)
        admin.list_topics()
        admin.close()
        return True
    except KafkaError:
        return False


def _wait_until_ready(broker: LocalBroker, process: subprocess.Popen) -> None:
    wait_until_ready(
        lambda: _answers(broker),
        {"The Kafka broker": (process, broker.log_file)},
        START_TIMEOUT_S,
        f"The Kafka broker did not answer on {broker.bootstrap_servers}",
        BrokerError,
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
    _check_ports(broker)
    broker.home.mkdir(parents=True, exist_ok=True)
    _write_config(broker)
    _format_storage(broker)
    process = _launch(broker)
    try:
        _wait_until_ready(broker, process)
    except BrokerError:
        abandon(process, broker.pid_file)
        raise
    return process.pid, True


def _ports(broker: LocalBroker) -> list[int]:
    ports = [broker.port, broker.controller_port]
    return ports + ([broker.secure_port] if broker.secure_port is not None else [])


def _check_ports(broker: LocalBroker) -> None:
    require_free_ports(
        broker.host,
        _ports(broker),
        "stop it or choose other ports with --port/--controller-port.",
        BrokerError,
    )


def _launch(broker: LocalBroker) -> subprocess.Popen:
    """Start the node's JVM in the background and record its PID; do not wait for it."""
    classpath = _classpath()
    log_config = broker.home / "log4j2.properties"
    command = [
        java(),
        f"-Xmx{BROKER_HEAP}",
        f"-Xms{BROKER_HEAP}",
        f"-Dlog4j2.configurationFile={log_config}",
        f"-Dkafka.logs.dir={broker.home / 'logs'}",
        "-cp",
        classpath,
        "kafka.Kafka",
        str(broker.properties_file),
    ]
    return launch(command, broker.home / "logs" / "stdout.log", broker.pid_file)


def stop(broker: LocalBroker) -> int | None:
    """Stop the broker that ``start`` recorded; return its PID, or None if none ran."""
    pid = running_pid(broker)
    if pid is not None:
        terminate(pid, STOP_TIMEOUT_S)
    broker.pid_file.unlink(missing_ok=True)
    return pid


def create_topics(
    bootstrap_servers: str,
    topics: dict[str, dict[str, str]] | None = None,
    partitions: int = 4,
    replication_factor: int = 1,
    client_properties: dict[str, str] | None = None,
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
    client_properties : dict, optional
        Java-style client properties; those of ``--kafka-properties`` by default.
    """
    from kafka.admin import NewTopic

    from fraudstream.kafka import clients

    topics = DESIGN_TOPICS if topics is None else topics
    admin = clients.admin(bootstrap_servers, client_properties, request_timeout_ms=15000)
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


def describe_topics(
    bootstrap_servers: str, client_properties: dict[str, str] | None = None
) -> dict[str, dict[str, str]]:
    """Return each non-internal topic's partition count and retention.

    Returns
    -------
    dict
        Topic name to ``{"partitions": "4", "replicas": "3", "retention.ms": "-1"}``
        (``min.insync.replicas`` too where the topic sets it).
    """
    from kafka.admin import ConfigResource, ConfigResourceType

    from fraudstream.kafka import clients

    admin = clients.admin(bootstrap_servers, client_properties, request_timeout_ms=15000)
    try:
        topics = {
            topic["name"]: {
                "partitions": str(len(topic["partitions"])),
                "replicas": str(len(topic["partitions"][0]["replica_nodes"])),
            }
            for topic in admin.describe_topics()
            if not topic["is_internal"] and not topic["name"].startswith("__")
        }
        if topics:
            resources = [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    name,
                    {"retention.ms": None, "min.insync.replicas": None, "cleanup.policy": None},
                )
                for name in topics
            ]
            for name, configs in admin.describe_configs(resources)["topic"].items():
                # A topic on the broker's default retention reports no value here.
                for key in ("retention.ms", "min.insync.replicas", "cleanup.policy"):
                    if key in configs:
                        topics[name][key] = configs[key]["value"]
        return topics
    finally:
        admin.close()


#: The cluster's users, created with the storage: ``admin`` for operators, ``fraudstream``
#: for the pipeline's commands and jobs.
SCRAM_USERS = ("admin", "fraudstream")
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


@dataclass(frozen=True)
class LocalCluster:
    """Three (or ``nodes``) local KRaft nodes, each broker and controller, on 127.0.0.1.

    Node ``i`` (from 1) listens on ``port + i - 1`` (plain, also between brokers),
    ``secure_port + i - 1`` (SASL_SSL) and ``controller_port + i - 1`` (KRaft), and lives
    in ``home/node-i``. ``home/certs`` holds the TLS material, ``home/client.properties``
    and ``home/admin.properties`` the client properties of the two SCRAM users.
    """

    home: Path = config.VAR_DIR / "kafka-cluster"
    nodes: int = 3
    port: int = 19092
    secure_port: int = 19095
    controller_port: int = 19192
    host: str = "127.0.0.1"

    @property
    def certs(self) -> Path:
        """The TLS material of ``scripts/make-certs.sh``, shared by all nodes."""
        return self.home / "certs"

    @property
    def brokers(self) -> list[LocalBroker]:
        """The nodes, node 1 first, each a broker and a voter of the KRaft quorum."""
        voters = ",".join(
            f"{i}@{self.host}:{self.controller_port + i - 1}" for i in range(1, self.nodes + 1)
        )
        return [
            LocalBroker(
                home=self.home / f"node-{i}",
                port=self.port + i - 1,
                controller_port=self.controller_port + i - 1,
                host=self.host,
                node_id=i,
                voters=voters,
                secure_port=self.secure_port + i - 1,
                certs=self.certs,
                replication_factor=min(3, self.nodes),
            )
            for i in range(1, self.nodes + 1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        """The plain listeners of all nodes."""
        return ",".join(broker.bootstrap_servers for broker in self.brokers)

    @property
    def secure_bootstrap_servers(self) -> str:
        """The SASL_SSL listeners of all nodes."""
        return ",".join(f"{b.host}:{b.secure_port}" for b in self.brokers)

    def properties_file(self, user: str = "fraudstream") -> Path:
        """The client properties file of a SCRAM user (``fraudstream`` or ``admin``)."""
        return self.home / ("client.properties" if user == "fraudstream" else f"{user}.properties")


def _make_certs(cluster: LocalCluster) -> None:
    if (cluster.certs / "broker.p12").exists():
        return
    script = config.PROJECT_ROOT / "scripts" / "make-certs.sh"
    result = subprocess.run([str(script), str(cluster.certs)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"Making certificates with {script} failed: {result.stderr.strip()}")


def client_properties_text(user: str, password: str, ca_file: Path) -> str:
    """A client properties file's text for SASL/SCRAM-SHA-512 over TLS, the Java way."""
    return "\n".join(
        [
            "# SASL/SCRAM-SHA-512 over TLS; give this file to --kafka-properties.",
            "security.protocol=SASL_SSL",
            "sasl.mechanism=SCRAM-SHA-512",
            f'sasl.jaas.config={SCRAM_LOGIN} required username="{user}" password="{password}";',
            # PEM, which Java (Spark), librdkafka and kafka-python all read.
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={ca_file}",
            "",
        ]
    )


def _scram_users(cluster: LocalCluster) -> dict[str, str]:
    """The users' passwords: made once, kept only in the users' properties files (mode 600)."""
    from fraudstream.kafka import propfile

    users = {}
    for user in SCRAM_USERS:
        path = cluster.properties_file(user)
        if path.exists():
            password = propfile.sasl_credentials(propfile.read_properties(path))[1]
            if password is None:
                # The nodes were formatted with this user's password: it cannot be remade.
                raise BrokerError(
                    f"{path} holds no password for {user}; stop the cluster and delete "
                    f"{cluster.home} to start it afresh with new users."
                )
            users[user] = password
            continue
        users[user] = secrets.token_urlsafe(18)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(client_properties_text(user, users[user], cluster.certs / "ca.pem"))
    return users


def start_cluster(cluster: LocalCluster) -> tuple[list[int], bool]:
    """Start every node of the cluster that does not run yet, and wait for all of them.

    Returns
    -------
    (list of int, bool)
        The nodes' PIDs, and whether this call started any.

    Raises
    ------
    BrokerError
        If a port is taken by another program, the jars or tools are missing, or a node
        does not come up.
    """
    brokers = cluster.brokers
    stopped = [broker for broker in brokers if running_pid(broker) is None]
    if not stopped:
        return _running_pids(brokers), False
    for broker in stopped:
        _check_ports(broker)
    _make_certs(cluster)
    users = _scram_users(cluster)
    id_file = cluster.home / "cluster.id"
    if not id_file.exists():
        id_file.write_text(_new_cluster_id() + "\n")
    cluster_id = id_file.read_text().strip()
    launched = []
    for broker in stopped:
        broker.home.mkdir(parents=True, exist_ok=True)
        _write_config(broker)
        _format_storage(broker, cluster_id, users)
        launched.append((broker, _launch(broker)))
    try:
        # A node answers only once a majority of the quorum is up: start all, then wait.
        for broker, process in launched:
            _wait_until_ready(broker, process)
    except (BrokerError, KeyboardInterrupt):
        # Interrupted or failed, the start leaves no node behind.
        for broker, process in launched:
            abandon(process, broker.pid_file)
        raise
    return _running_pids(brokers), True


def _running_pids(brokers: list[LocalBroker]) -> list[int]:
    return [pid for broker in brokers if (pid := running_pid(broker)) is not None]


def stop_cluster(cluster: LocalCluster, node: int | None = None) -> list[int]:
    """Stop the cluster's nodes (or only node ``node``) that ``start_cluster`` recorded.

    Returns
    -------
    list of int
        PIDs of the nodes stopped.
    """
    from concurrent.futures import ThreadPoolExecutor

    brokers = cluster.brokers if node is None else [cluster.brokers[node - 1]]
    # All at once: stopped one by one, the last node waits for a quorum that is gone
    # and is killed only after STOP_TIMEOUT_S.
    with ThreadPoolExecutor(len(brokers)) as pool:
        return [pid for pid in pool.map(stop, brokers) if pid is not None]
