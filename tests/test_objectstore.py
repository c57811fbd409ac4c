"""S3-compatible object stores: the library's S3A settings, then Spark on s3a:// paths of a
local S3 server (moto's, started by the ``s3_endpoint`` fixture): Parquet, a stateful
stream's checkpoint, and a missing bucket."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from botocore.exceptions import ClientError
from py4j.protocol import Py4JJavaError
from pyspark.sql import types as T  # noqa: N812
from pyspark.testing import assertDataFrameEqual

from fraudstream import config, objectstore

PAYMENTS_SCHEMA = T.StructType(
    [
        T.StructField("card_id", T.StringType()),
        T.StructField("amount_cents", T.LongType()),
        T.StructField("date", T.StringType()),
    ]
)
CARDS_SCHEMA = T.StructType([T.StructField("card_id", T.StringType())])


def test_s3a_settings_for_a_local_http_endpoint():
    settings = objectstore.s3a_settings(
        "http://127.0.0.1:9000", access_key="key", secret_key="secret"
    )

    assert settings == {
        "fs.s3a.endpoint": "http://127.0.0.1:9000",
        "fs.s3a.endpoint.region": "us-east-1",
        "fs.s3a.path.style.access": "true",
        "fs.s3a.connection.ssl.enabled": "false",
        "fs.s3a.access.key": "key",
        "fs.s3a.secret.key": "secret",
    }


def test_s3a_settings_use_tls_for_https_and_leave_credentials_to_the_default_chain():
    settings = objectstore.s3a_settings(
        "https://storage.example.com", region="eu-west-1", path_style_access=False
    )

    assert settings == {
        "fs.s3a.endpoint": "https://storage.example.com",
        "fs.s3a.endpoint.region": "eu-west-1",
        "fs.s3a.path.style.access": "false",
        "fs.s3a.connection.ssl.enabled": "true",
    }


def test_s3a_settings_reject_an_endpoint_without_scheme():
    with pytest.raises(ValueError, match="not an http:// or https:// URL"):
        objectstore.s3a_settings("127.0.0.1:9000")


def test_s3a_settings_reject_half_the_credentials():
    with pytest.raises(ValueError, match="both the S3 access key and the secret key"):
        objectstore.s3a_settings("http://127.0.0.1:9000", access_key="key")


def test_for_bucket_narrows_the_settings_to_one_bucket():
    settings = {"fs.s3a.endpoint": "http://127.0.0.1:9000", "fs.s3a.path.style.access": "true"}

    assert objectstore.for_bucket(settings, "lake") == {
        "fs.s3a.bucket.lake.endpoint": "http://127.0.0.1:9000",
        "fs.s3a.bucket.lake.path.style.access": "true",
    }


def test_spark_conf_prefixes_the_hadoop_keys():
    assert objectstore.spark_conf({"fs.s3a.endpoint": "http://127.0.0.1:9000"}) == {
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000"
    }


def test_docs_show_the_library_settings():
    page = (config.PROJECT_ROOT / "docs" / "cluster.md").read_text()
    documented = dict(re.findall(r"--conf (spark\.hadoop\.fs\.s3a\.[\w.]+)=(\S+)", page))

    expected = objectstore.spark_conf(
        objectstore.s3a_settings(documented["spark.hadoop.fs.s3a.endpoint"])
    )
    assert documented == expected


def _object_keys(s3_client, bucket: str, prefix: str) -> set[str]:
    listing = s3_client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {item["Key"] for item in listing.get("Contents", [])}


def test_partitioned_parquet_on_s3a_reads_back_as_written(spark, s3a_bucket, s3_client):
    payments = spark.createDataFrame(
        [
            ("c1", 1250, "2018-04-01"),
            ("c2", 990, "2018-04-01"),
            ("c1", 15000, "2018-04-02"),
        ],
        PAYMENTS_SCHEMA,
    )
    path = f"s3a://{s3a_bucket}/lake/payments"

    payments.write.partitionBy("date").parquet(path)

    assertDataFrameEqual(spark.read.schema(PAYMENTS_SCHEMA).parquet(path), payments)
    keys = _object_keys(s3_client, s3a_bucket, "lake/payments/")
    assert "lake/payments/_SUCCESS" in keys
    assert {key.split("/")[2] for key in keys if key.endswith(".parquet")} == {
        "date=2018-04-01",
        "date=2018-04-02",
    }


def _put_cards(s3_client, bucket: str, key: str, cards: list[str]) -> None:
    lines = "\n".join(json.dumps({"card_id": card}) for card in cards)
    s3_client.put_object(Bucket=bucket, Key=key, Body=lines.encode())


def _count_cards_once(spark, source: str, checkpoint: str) -> dict[int, set[tuple[str, int]]]:
    """Count payments per card over what ``source`` holds now (``Trigger.AvailableNow``).

    Returns the counts each micro-batch updated (output mode ``update``), by batch id.
    """
    updates: dict[int, set[tuple[str, int]]] = {}

    def collect(counts, batch_id):
        updates[batch_id] = {(row["card_id"], row["count"]) for row in counts.collect()}

    query = (
        spark.readStream.schema(CARDS_SCHEMA)
        .json(source)
        .groupBy("card_id")
        .count()
        .writeStream.outputMode("update")
        .option("checkpointLocation", checkpoint)
        .foreachBatch(collect)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    return updates


def test_stateful_stream_resumes_from_an_s3a_checkpoint(spark, s3a_bucket, s3_client):
    source = f"s3a://{s3a_bucket}/payments"
    checkpoint = f"s3a://{s3a_bucket}/checkpoints/card-counts"

    _put_cards(s3_client, s3a_bucket, "payments/part-0.json", ["c1", "c1", "c2"])
    first_run = _count_cards_once(spark, source, checkpoint)
    _put_cards(s3_client, s3a_bucket, "payments/part-1.json", ["c1", "c3"])
    second_run = _count_cards_once(spark, source, checkpoint)

    assert first_run == {0: {("c1", 2), ("c2", 1)}}
    # The second run reads only the new file and adds to the counts the first one kept:
    # c1 goes on from 2 to 3, c2 is not counted again.
    assert second_run == {1: {("c1", 3), ("c3", 1)}}
    keys = _object_keys(s3_client, s3a_bucket, "checkpoints/card-counts/")
    assert {"checkpoints/card-counts/commits/0", "checkpoints/card-counts/commits/1"} <= keys
    assert any(key.startswith("checkpoints/card-counts/state/0/") for key in keys)


def test_missing_bucket_is_named_in_the_error(spark, s3a_settings, s3_client):
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    objectstore.configure(spark, objectstore.for_bucket(s3a_settings, bucket))

    def missing(path: str) -> str:
        return rf"UnknownStoreException: `s3a://{bucket}/{path}'.*bucket does not exist"

    with pytest.raises(Py4JJavaError, match=missing("lake")):
        spark.range(3).write.parquet(f"s3a://{bucket}/lake")
    with pytest.raises(Py4JJavaError, match=missing("checkpoint")):
        (
            spark.readStream.format("rate")
            .load()
            .writeStream.format("noop")
            .option("checkpointLocation", f"s3a://{bucket}/checkpoint")
            .trigger(availableNow=True)
            .start()
        )
    # S3A never makes a bucket on its own.
    with pytest.raises(ClientError, match="404"):
        s3_client.head_bucket(Bucket=bucket)
