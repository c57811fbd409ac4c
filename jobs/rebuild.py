"""Rebuild the views by replaying payments from the oldest offset, and verify them.

Runs the scoring job's own code (``jobs/score.py``, the same micro-batch processor)
over ``payments`` from its oldest offset into a new output root and checkpoint, with
the model version that scored the live views, then compares each view with the live
one key by key and prints the differences. For the same model version there should
be none: the stream is the system of record, and every view is a function of it.

The rebuild sends nothing to Kafka (no alerts, no dead letters): dashboards never see
a replay. Its output root is a complete set of views; to replace lost or damaged live
views, point the scoring job at it (with its checkpoint) or move it into place.

Usage::

    ./spark-submit.sh rebuild [--view alerts|card-locations|scored|dead-letters|all]
        [--live data/lake] [--out data/rebuild/STAMP] [--checkpoint data/checkpoints/rebuild-STAMP]
        [--model as-live|models:/fraudstream/3|...] [--brokers HOST:PORT] [--kafka-properties FILE]
        [--payments-topic payments] [--labels-topic fraud-labels]
        [--rules-log-topic fraud-rules-applied]

Exit status: 0 when the compared views are identical, 1 when they differ, 2 when the
rebuild cannot run (no live views, a missing topic, an output root in use).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import replace

from fraudstream import config, logs, storage
from fraudstream.cli import options
from fraudstream.errors import reports_errors
from fraudstream.kafka import clients, propfile
from fraudstream.scoring import model as scoring_model
from fraudstream.scoring import query, state, verify
from fraudstream.scoring.rebuild import (
    AS_LIVE,
    RebuildConfig,
    RebuildError,
    resolve_challenger,
    resolve_model,
    run,
)
from fraudstream.spark import get_session

_LOG = logging.getLogger("fraudstream.jobs.rebuild")


def parse_args(argv: list[str]) -> tuple[RebuildConfig, float | None]:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh rebuild",
        description="Rebuild the views by replaying payments from the oldest offset into a "
        "new output root, and compare them with the live views key by key.",
    )
    parser.add_argument(
        "--view",
        choices=[*verify.VIEW_NAMES, "all"],
        default="all",
        help="the view to compare (default: all; every view is rebuilt anyway)",
    )
    parser.add_argument(
        "--live",
        type=storage.location,
        default=config.LAKE_DIR,
        help="live output root, a folder or a Hadoop URI (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=storage.location,
        default=config.DATA_DIR / "rebuild" / stamp,
        help="new output root for the rebuilt views (default: data/rebuild/<UTC time>)",
    )
    parser.add_argument(
        "--checkpoint",
        type=storage.location,
        help="new checkpoint root (default: data/checkpoints/rebuild-<UTC time>)",
    )
    parser.add_argument(
        "--model",
        default=AS_LIVE,
        help="model to score with: as-live (the version that scored the live views; default) "
        "or a registry URI or model folder as in the score job",
    )
    parser.add_argument("--threshold", type=float, help="alert threshold (default: the live one)")
    options.add_kafka(parser, "payments", "labels", "rules-log")
    parser.add_argument(
        "--max-offsets-per-trigger",
        type=int,
        default=query.DEFAULT_MAX_OFFSETS_PER_TRIGGER,
        help="records per micro-batch (default: %(default)s; the views do not depend on it)",
    )
    parser.add_argument(
        "--max-lateness-hours",
        type=float,
        default=state.DEFAULT_MAX_LATENESS_HOURS,
        help="as the live run's --max-lateness-hours (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    propfile.use_properties_file(args.kafka_properties)
    views = (
        tuple(verify.VIEW_NAMES.values()) if args.view == "all" else (verify.VIEW_NAMES[args.view],)
    )
    checkpoint = args.checkpoint or config.CHECKPOINT_DIR / f"rebuild-{stamp}"
    score_cfg = query.ScoreConfig(
        bootstrap_servers=config.bootstrap_servers(args.brokers),
        out=storage.location(args.out),
        checkpoint=storage.location(checkpoint),
        model_uri=args.model,
        threshold=args.threshold,
        payments_topic=args.payments_topic,
        labels_topic=args.labels_topic,
        rules_log_topic=args.rules_log_topic,
        starting_offsets="earliest",
        max_offsets_per_trigger=args.max_offsets_per_trigger,
        available_now=True,
        max_lateness_hours=args.max_lateness_hours,
        kafka_outputs=False,
    )
    live = storage.location(args.live)
    return RebuildConfig(score=score_cfg, live=live, views=views), args.threshold


@reports_errors("rebuild")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg, threshold = parse_args(sys.argv[1:] if argv is None else argv)
    locations = (cfg.live, cfg.score.out, cfg.score.checkpoint)
    # A Hadoop file system is reached through Spark's JVM: start it first.
    spark = get_session("fraudstream-rebuild") if any(map(storage.is_uri, locations)) else None
    if storage.files(cfg.score.query_checkpoint).exists("offsets"):
        raise RebuildError(
            f"{cfg.score.checkpoint} already holds a checkpoint: a rebuild starts from "
            "the oldest offset, so give it a new --checkpoint."
        )
    model_uri, threshold = resolve_model(cfg.live, cfg.score.model_uri, threshold)
    shadow = resolve_challenger(cfg.live)
    cfg = replace(
        cfg,
        score=replace(cfg.score, model_uri=model_uri, threshold=threshold, challenger_uri=shadow),
    )
    clients.require_topics(
        cfg.score.bootstrap_servers, [cfg.score.payments_topic, cfg.score.labels_topic]
    )
    query.check_outputs(cfg.score)
    model = scoring_model.load_model(cfg.score.model_uri, cfg.score.threshold)
    _LOG.info(f"replaying {cfg.score.payments_topic} into {cfg.score.out}")
    spark = spark or get_session("fraudstream-rebuild")
    diffs = run(spark, cfg, model=model)
    for diff in diffs:
        print("\n".join(diff.report()))
    # A replay that read none of the live run's payments proves nothing.
    equal = all(diff.equal for diff in diffs) and any(diff.compared for diff in diffs)
    if not any(diff.compared for diff in diffs):
        print("rebuild: no row of the live views was compared: the replay read none of them")
    verdict = "identical" if equal else "the views differ"
    print(f"rebuild: {verdict}; the rebuilt views are in {cfg.score.out}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
