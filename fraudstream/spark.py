"""The one way a fraudstream process gets its SparkSession.

Under ``spark-submit`` the session's master, jars and configuration come from the
submit command (``./spark-submit.sh``); this module only adds what is missing. From
plain Python (tests, notebooks) it adds Spark's Kafka connector from ``jvm/jars`` and
settings that suit a small local machine.
"""

from __future__ import annotations

import os

from pyspark.sql import SparkSession

from fraudstream import config

#: Shuffle partitions for local runs: the default (200) makes stateful queries on two
#: cores crawl, and the value is frozen into a stateful query's checkpoint.
LOCAL_SHUFFLE_PARTITIONS = 4


def get_session(app_name: str = "fraudstream", master: str | None = None) -> SparkSession:
    """Return the active SparkSession, or build one for local use.

    Parameters
    ----------
    app_name : str
        Application name shown in the Spark UI and logs.
    master : str, optional
        Master URL for a session built here; ``local[*]`` by default. Ignored when a
        session already exists (for example under ``spark-submit``).

    Returns
    -------
    SparkSession
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if os.environ.get("SPARK_ENV_LOADED") or os.environ.get("SPARK_SUBMIT_PYFILES"):
        # Launched by spark-submit: its configuration is the whole truth.
        return SparkSession.builder.appName(app_name).getOrCreate()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("SPARK_CONF_DIR", str(config.PROJECT_ROOT / "conf" / "spark"))
    jars = ",".join(str(jar) for jar in config.spark_kafka_jars())
    return (
        SparkSession.builder.master(master or "local[*]")
        .appName(app_name)
        .config("spark.jars", jars)
        .config("spark.sql.shuffle.partitions", LOCAL_SHUFFLE_PARTITIONS)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
