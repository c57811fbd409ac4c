"""Kafka at the edges: the one place that holds Kafka options, for Spark and for Python clients.

Spark reads and writes Kafka through its official connector (``format("kafka")``);
the bulk producer (``fraudstream produce``) uses librdkafka through confluent-kafka,
because kafka-python tops out near 10,000 records/s; the other Python tools (tail,
label reader, tests) use kafka-python. Security settings (SASL, TLS)
pass through as client properties: ``security.protocol=SASL_SSL`` and so on, written
the Java way, in one properties file (``--kafka-properties FILE`` or
``$FRAUDSTREAM_KAFKA_PROPERTIES``), read here and translated for each client: Spark's
connector takes them as they are (``kafka.``-prefixed), librdkafka and kafka-python
under their own names (see :func:`.propfile.librdkafka_settings`).

The package has three modules: :mod:`.propfile` (the one properties file and its
translation for each client), :mod:`.clients` (Python clients: admin, producers,
consumer, the pre-flight check) and :mod:`.streams` (Spark's Kafka source and sink,
the only one that imports pyspark, so that commands without Spark do not load it).
"""
