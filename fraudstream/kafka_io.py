"""Kafka at the edges: the one place that holds Kafka options, for Spark and for Python clients.

Spark reads and writes Kafka through its official connector (``format("kafka")``);
the bulk producer (``fraudstream produce``) uses librdkafka through confluent-kafka,
because kafka-python tops out near 10,000 records/s; the other Python tools (tail,
label reader, tests) use kafka-python. Security settings (SASL, TLS)
pass through as client properties: ``security.protocol=SASL_SSL`` and so on, written
the Java way, which both sides accept.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812


class KafkaSetupError(RuntimeError):
    """Kafka is not there as a command needs it; the message is one sentence for the user."""


def require_topics(bootstrap_servers: str, topics: list[str]) -> None:
    """Fail with one clear sentence if the brokers cannot be reached or a topic is missing.

    Called before long work starts, so that a typo or a stopped broker does not show
    up a minute later as a timeout deep in a client library.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, request_timeout_ms=10000)
    except KafkaError as error:
        raise KafkaSetupError(
            f"Cannot reach Kafka at {bootstrap_servers} ({error.__class__.__name__}); "
            "is the broker running (fraudstream kafka start)?"
        ) from None
    try:
        existing = consumer.topics()
    finally:
        consumer.close()
    missing = [topic for topic in topics if topic not in existing]
    if missing:
        raise KafkaSetupError(
            f"Topic(s) {', '.join(missing)} do not exist on {bootstrap_servers}; "
            "create them (fraudstream kafka start creates the design's topics)."
        )


def spark_options(bootstrap_servers: str, client_properties: dict[str, str] | None = None) -> dict:
    """Return the options of Spark's Kafka source or sink.

    Parameters
    ----------
    bootstrap_servers : str
        ``host:port[,host:port...]``.
    client_properties : dict, optional
        Kafka client properties (``security.protocol``, ``sasl.mechanism``, ...),
        passed with the ``kafka.`` prefix Spark expects.
    """
    options = {"kafka.bootstrap.servers": bootstrap_servers}
    for key, value in (client_properties or {}).items():
        options[f"kafka.{key}"] = value
    return options


def read_stream(
    spark: SparkSession,
    bootstrap_servers: str,
    topic: str,
    starting_offsets: str = "earliest",
    max_offsets_per_trigger: int | None = None,
    client_properties: dict[str, str] | None = None,
) -> DataFrame:
    """Open a streaming read of ``topic`` with Spark's Kafka source.

    ``starting_offsets`` applies only to a new checkpoint: a query restarted on its
    checkpoint resumes where it was. Missing offsets (data deleted by retention) fail
    the query rather than skip silently.
    """
    reader = (
        spark.readStream.format("kafka")
        .options(**spark_options(bootstrap_servers, client_properties))
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        .option("failOnDataLoss", "true")
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def kafka_timestamp_date() -> Column:
    """The UTC date of a Kafka record's timestamp, for partitioning."""
    return F.to_date(F.col("kafka_timestamp"))


def raw_records(kafka_rows: DataFrame) -> DataFrame:
    """Keep a Kafka record as it came: key and value as text, and where it came from.

    Parameters
    ----------
    kafka_rows : DataFrame
        Rows of Spark's Kafka source.

    Returns
    -------
    DataFrame
        ``key``, ``value`` (UTF-8 text), ``topic``, ``partition``, ``offset``,
        ``kafka_timestamp`` and ``date`` (of the timestamp, UTC).
    """
    return (
        kafka_rows.withColumnRenamed("timestamp", "kafka_timestamp")
        .withColumn("date", kafka_timestamp_date())
        .select(
            F.col("key").cast("string").alias("key"),
            F.col("value").cast("string").alias("value"),
            "topic",
            "partition",
            "offset",
            "kafka_timestamp",
            "date",
        )
    )


def producer(bootstrap_servers: str, client_properties: dict[str, str] | None = None, **settings):
    """Return a kafka-python producer that does not lose or duplicate what it sends.

    ``acks=all`` and the idempotent producer: a retried send is written once.
    ``client_properties`` take Java-style names (``security.protocol``).
    """
    from kafka import KafkaProducer

    options = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 20,
        "compression_type": None,
    }
    for key, value in (client_properties or {}).items():
        options[key.replace(".", "_")] = value
    options.update(settings)
    return KafkaProducer(**options)


class DeliveryError(KafkaSetupError):
    """A record could not be written (after the client's own retries)."""


class BulkProducer:
    """A librdkafka producer for hundreds of thousands of records a second.

    ``acks=all`` and the idempotent producer, as ``producer``; records are batched
    (``linger.ms=20``) and lz4-compressed, which on a machine shared with the broker
    triples the rate (see ``bench/bench_produce.py``). Delivery reports come only for
    failures, and ``flush`` raises the first. ``client_properties`` use the Java names,
    which librdkafka shares (``security.protocol``, ``sasl.mechanism``, ...).
    """

    def __init__(self, bootstrap_servers: str, client_properties: dict[str, str] | None = None):
        from confluent_kafka import Producer

        self.failures: list[str] = []
        options = {
            "bootstrap.servers": bootstrap_servers,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            # Java's partitioner (murmur2), not librdkafka's default (crc32): a card's
            # payments land on the partition every other producer (Java clients,
            # kafka-python, Kafka Connect) picks, so its order holds across sources.
            "partitioner": "murmur2_random",
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        options.update(client_properties or {})
        self._producer = Producer(options)

    def _on_delivery(self, error, message) -> None:
        if error is not None:
            self.failures.append(f"{message.topic()}: {error.str()}")

    def send_all(self, topic: str, keys: list, values: list) -> None:
        """Queue one record per (key, value); waits only while the local queue is full."""
        produce = self._producer.produce
        for key, value in zip(keys, values, strict=True):
            try:
                produce(topic, value, key)
            except BufferError:
                # The local queue is full: let librdkafka send, then retry this record.
                while True:
                    self._producer.poll(0.05)
                    try:
                        produce(topic, value, key)
                        break
                    except BufferError:
                        continue
        self._producer.poll(0)

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every record is acknowledged; raise ``DeliveryError`` if one was not."""
        left = self._producer.flush(timeout)
        if self.failures:
            raise DeliveryError(f"Kafka refused a record ({self.failures[0]}).")
        if left:
            raise DeliveryError(
                f"{left:,} records were not acknowledged within {timeout:.0f} s; is the broker up?"
            )


def consumer(bootstrap_servers: str, client_properties: dict[str, str] | None = None, **settings):
    """Return a kafka-python consumer in no group: it reads what it is told, commits nothing."""
    from kafka import KafkaConsumer

    options = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": 30000,
    }
    for key, value in (client_properties or {}).items():
        options[key.replace(".", "_")] = value
    options.update(settings)
    return KafkaConsumer(**options)
