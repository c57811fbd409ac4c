"""The flags that commands and jobs share, each with one default and one help text."""

from __future__ import annotations

import argparse

from fraudstream import config, storage
from fraudstream.kafka import propfile

#: Each topic's default and what it holds, for ``--X-topic`` flags.
TOPICS = {
    "payments": (config.TOPIC_PAYMENTS, "payments topic"),
    "labels": (config.TOPIC_LABELS, "labels topic"),
    "alerts": (config.TOPIC_ALERTS, "alerts topic"),
    "dead-letter": (config.TOPIC_DEAD_LETTERS, "dead-letter topic"),
    "rules": (config.TOPIC_RULES, "rules topic"),
    "rules-log": (config.TOPIC_RULES_APPLIED, "topic of the rule sets scoring jobs applied"),
    "health": (config.TOPIC_MODEL_HEALTH, "topic of the monitor's model-health events"),
}


def add_kafka(parser: argparse.ArgumentParser, *topics: str, flag: str | None = None) -> None:
    """Add ``--brokers``, ``--kafka-properties`` and a flag per topic of ``topics``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's or job's parser.
    *topics : str
        Keys of :data:`TOPICS`; each gets ``--KEY-topic``.
    flag : str, optional
        The flag of the first topic instead (``--topic``), where the command reads or
        writes one topic above all.
    """
    parser.add_argument(
        "--brokers",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    propfile.add_properties_option(parser)
    for index, topic in enumerate(topics):
        default, what = TOPICS[topic]
        name = flag if flag and index == 0 else f"--{topic}-topic"
        parser.add_argument(name, default=default, help=f"{what} (default: %(default)s)")


def add_roots(parser: argparse.ArgumentParser, query: str) -> None:
    """Add ``--out`` and ``--checkpoint``, the roots of a streaming job's views and state.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The job's parser.
    query : str
        The query's folder under the checkpoint root (``score``, ``labels``).
    """
    parser.add_argument(
        "--out",
        type=storage.location,
        default=config.LAKE_DIR,
        help="output root: a folder or a Hadoop URI such as s3a://bucket/lake "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--checkpoint",
        type=storage.location,
        default=config.CHECKPOINT_DIR,
        help=f"checkpoint root, a folder or a Hadoop URI; the query's is CHECKPOINT/{query} "
        "(default: %(default)s)",
    )


def add_metrics(parser: argparse.ArgumentParser) -> None:
    """Add ``--metrics-port`` and ``--metrics-host``: where Prometheus scrapes the process."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve Prometheus metrics on http://METRICS_HOST:PORT/metrics "
        "(default: 0, none; docs/operating.md)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address of the metrics endpoint (default: %(default)s; 0.0.0.0 for a "
        "Prometheus on another machine)",
    )


def check_metrics_port(parser: argparse.ArgumentParser, port: int) -> None:
    """Refuse a ``--metrics-port`` that is no TCP port."""
    if not 0 <= port <= 65535:
        parser.error("--metrics-port must be between 0 (none) and 65535")
