"""One Java-style client properties file, translated for Spark, librdkafka and kafka-python;
the clients' pre-flight check where no broker listens."""

from __future__ import annotations

import time

import pytest

from fraudstream.kafka import clients, propfile, streams

from .helpers import busy_port, free_port

LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required"
PROPERTIES = f"""\
# SASL/SCRAM over TLS
security.protocol=SASL_SSL
sasl.mechanism = SCRAM-SHA-512
sasl.jaas.config={LOGIN} \\
    username="fraudstream" password="pa\\"ss";
ssl.truststore.type=PEM
ssl.truststore.location=/certs/ca.pem
"""


@pytest.fixture()
def properties(tmp_path):
    path = tmp_path / "client.properties"
    path.write_text(PROPERTIES)
    return propfile.read_properties(path)


def test_read_properties_joins_continued_lines_and_skips_comments(properties):
    assert properties == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": f'{LOGIN} username="fraudstream" password="pa\\"ss";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/certs/ca.pem",
    }


def test_read_properties_of_a_missing_file_is_one_sentence(tmp_path):
    with pytest.raises(propfile.KafkaSetupError, match=r"^The Kafka properties file .* not exist"):
        propfile.read_properties(tmp_path / "nope.properties")


def test_librdkafka_settings_take_plain_credentials_and_a_pem_ca(properties):
    assert propfile.librdkafka_settings(properties) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "fraudstream",
        "sasl.password": 'pa"ss',
        "ssl.ca.location": "/certs/ca.pem",
    }


def test_python_settings_are_kafka_python_keywords(properties):
    from kafka import KafkaConsumer

    assert propfile.python_settings(properties, set(KafkaConsumer.DEFAULT_CONFIG)) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "fraudstream",
        "sasl_plain_password": 'pa"ss',
        "ssl_cafile": "/certs/ca.pem",
    }


def test_spark_options_pass_java_names_with_the_kafka_prefix(properties):
    options = streams.spark_options("h:1", properties)
    assert options == {"kafka.bootstrap.servers": "h:1"} | {
        f"kafka.{key}": value for key, value in properties.items()
    }


def test_a_jks_truststore_is_refused_for_python_clients_in_one_sentence(properties):
    jks = properties | {"ssl.truststore.type": "JKS", "ssl.truststore.location": "/c/t.jks"}
    with pytest.raises(propfile.KafkaSetupError, match="cannot read a JKS truststore"):
        propfile.librdkafka_settings(jks)
    assert streams.spark_options("h:1", jks)["kafka.ssl.truststore.location"] == "/c/t.jks"


def test_the_environment_names_the_file_when_no_properties_are_given(tmp_path, monkeypatch):
    path = tmp_path / "client.properties"
    path.write_text(PROPERTIES)
    # Set, then removed: monkeypatch then restores the variable as it was after the test.
    monkeypatch.setenv(propfile.PROPERTIES_ENV, str(path))
    monkeypatch.delenv(propfile.PROPERTIES_ENV)
    assert propfile.resolve_properties() == {}
    propfile.use_properties_file(path)
    assert propfile.resolve_properties()["security.protocol"] == "SASL_SSL"
    assert propfile.resolve_properties({}) == {}


def test_connect_worker_gets_the_client_properties_for_each_of_its_clients(tmp_path, monkeypatch):
    """Kafka Connect configures its worker, producer, consumer and admin clients apart."""
    from fraudstream.ops import connect

    properties = tmp_path / "client.properties"
    properties.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n")
    monkeypatch.setenv(propfile.PROPERTIES_ENV, str(properties))
    worker = connect.worker_properties(connect.LocalConnect(home=tmp_path / "connect"))
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert worker[f"{prefix}security.protocol"] == "SASL_SSL"
        assert worker[f"{prefix}sasl.mechanism"] == "SCRAM-SHA-512"
    assert worker["producer.acks"] == "all"
    monkeypatch.delenv(propfile.PROPERTIES_ENV)
    plain = connect.worker_properties(connect.LocalConnect(home=tmp_path / "connect"))
    assert not any("security.protocol" in key for key in plain)


def test_require_topics_where_nothing_listens_fails_at_once_in_one_sentence():
    # Refused at every address: no need to wait out the client's bootstrap timeout.
    address = f"127.0.0.1:{free_port()},localhost:{free_port()}"
    started = time.monotonic()
    with pytest.raises(propfile.KafkaSetupError) as refused:
        clients.require_topics(address, ["payments"])
    assert time.monotonic() - started < clients.BOOTSTRAP_TIMEOUT_MS / 1000 / 2
    assert str(refused.value) == (
        f"Cannot reach Kafka at {address} (ConnectionRefusedError); "
        "is the broker running (fraudstream kafka start)?"
    )
    # Something listens at one address (it may be a broker): the client is asked.
    with busy_port() as port:
        assert not clients._all_refuse(f"127.0.0.1:{free_port()},127.0.0.1:{port}")
