"""Train, evaluate and register the fraud classifier on historical payments and labels.

Reads ``DATA/events`` and ``DATA/labels`` (as the generate and import jobs write them),
computes the features of every payment as of its time, evaluates each model type on
prequential folds (train, delay, test windows; hyper-parameters and the review and
decline bands chosen on validation folds before them), logs everything to MLflow,
registers the best model type's newest fold as a version of ``fraudstream``, and moves
the alias ``champion`` to it only if it beats the champion's average precision on the
same test window. The champion is exported to ``models/fraudstream`` for use without a
tracking server. See ``fraudstream/ml/training.py`` and ``fraudstream/ml/evaluate.py``.

Usage::

    ./spark-submit.sh train --data DIR [--labels DIR] [--until YYYY-MM-DD]
        [--models random_forest,hgb,lightgbm,xgboost,logistic,spark_gbt]
        [--train-start YYYY-MM-DD] [--folds 4] [--train-days 7] [--delay-days 7]
        [--test-days 7] [--k 100] [--features all|handbook] [--param hgb.learning_rate=0.1]
        [--engine pandas|spark] [--max-train-rows 250000] [--experiment fraudstream]
        [--seed 0] [--report FILE] [--no-register] [--models-dir models]
        [--feedback [--feedback-days 7,14]]

With ``--feedback`` it also registers what the analysts' verdicts teach: the chosen
model averaged with a feedback forest fitted on the label store's analyst verdicts of
the last days (Dal Pozzolo's "AW"; the weight and the days chosen on the validation
folds in the feedback protocol; see ``fraudstream/ml/feedback.py``), or the chosen model
alone, saying why, when no setting beats it there or there are no recent verdicts.
"""

from __future__ import annotations

import argparse
import ast
import sys
from datetime import date
from pathlib import Path

from fraudstream import config, features, logs, storage
from fraudstream.errors import DataError, reports_errors
from fraudstream.ml import model, training


def _models(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in model.ALL_KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"unknown model type {', '.join(unknown) or text!r}; "
            f"choose from {', '.join(model.ALL_KINDS)}"
        )
    return kinds


def _rows(text: str) -> int:
    try:
        rows = int(text)
    except ValueError:
        rows = -1
    if rows < 0 or 0 < rows < 1000:
        raise argparse.ArgumentTypeError(f"{text!r} is not 0 or a number of rows from 1000 up")
    return rows


def _precision(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a precision in (0, 1]")
    return value


def _days(text: str) -> tuple[int, ...]:
    try:
        days = tuple(int(part) for part in text.split(","))
    except ValueError:
        days = ()
    if not days or min(days) < 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of days from 1 up, such as 7,14"
        )
    return tuple(sorted(set(days)))


def _param(text: str) -> tuple[str, str, object]:
    try:
        name, value = text.split("=", 1)
        kind, key = name.split(".", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL.PARAM=VALUE") from None
    if kind not in model.GRIDS or key not in model.GRIDS[kind]:
        known = ", ".join(f"{k}.{p}" for k, grid in model.GRIDS.items() for p in grid)
        raise argparse.ArgumentTypeError(f"unknown parameter {name!r}; known: {known}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return kind, key, parsed


def parse_args(argv: list[str]) -> training.TrainConfig:
    parser = argparse.ArgumentParser(
        prog="./spark-submit.sh train",
        description="Train, evaluate and register the fraud classifier.",
    )
    parser.add_argument(
        "--data",
        type=storage.location,
        default=config.DATA_DIR / "generated",
        help="folder with events/ and labels/, or a Hadoop URI such as s3a://bucket/data "
        "(with --engine spark) (default: %(default)s)",
    )
    parser.add_argument(
        "--labels",
        type=storage.location,
        help="folder of label events (default: DATA/labels; the label store the labels job "
        "keeps is data/lake/labels)",
    )
    parser.add_argument(
        "--until",
        type=date.fromisoformat,
        help="train as of this day: payments before it, labels reported before it "
        "(default: all of DATA)",
    )
    parser.add_argument(
        "--models",
        type=_models,
        default=training.TrainConfig.models,
        help="model types to compare, comma-separated: "
        f"{', '.join(model.ALL_KINDS)} (default: random_forest, the best by validation "
        "average precision in the comparison in docs/training.md)",
    )
    parser.add_argument(
        "--train-start",
        type=date.fromisoformat,
        help="first day of the newest fold's training window (default: the latest that "
        "fits, so the newest test window ends on the data's last day)",
    )
    parser.add_argument("--folds", type=int, default=4, help="test folds (default: 4)")
    parser.add_argument("--train-days", type=int, default=7, help="training window, days")
    parser.add_argument(
        "--delay-days",
        type=int,
        default=7,
        help="label delay: days between training and test windows, and how "
        "far back merchant features end (default: 7)",
    )
    parser.add_argument("--test-days", type=int, default=7, help="test window, days")
    parser.add_argument(
        "--k",
        type=int,
        default=100,
        help="review budget: cards checked per day, for Card Precision@k, and payments "
        "a day in the review band, below the decline band if any (default: 100)",
    )
    parser.add_argument(
        "--decline-precision",
        type=_precision,
        default=0.9,
        help="precision the decline band must reach on the validation folds; the review "
        "band is the --k payments a day below it (default: %(default)s)",
    )
    parser.add_argument(
        "--features",
        choices=["all", "handbook"],
        default="all",
        help="all features, or the handbook's 15 (for comparison)",
    )
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        help="fix a hyper-parameter instead of searching it, e.g. "
        "hgb.learning_rate=0.1 (repeatable)",
    )
    parser.add_argument(
        "--engine",
        choices=["pandas", "spark"],
        default="pandas",
        help="where the features are computed: pandas in this process (default; faster on "
        "one machine), or Spark's executors with the scoring path's per-card operator "
        "(for histories larger than one machine's memory)",
    )
    parser.add_argument(
        "--max-train-rows",
        type=_rows,
        default=training.DEFAULT_MAX_TRAIN_ROWS,
        help="most rows a model is fitted on per training window: above it, every known "
        "fraud and a weighted sample of the genuine payments; tests always use every "
        "payment; 0 for no limit (default: %(default)s)",
    )
    parser.add_argument("--experiment", default="fraudstream", help="MLflow experiment")
    parser.add_argument("--model-name", default="fraudstream", help="registered model name")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the models")
    parser.add_argument("--report", type=Path, help="also write the metrics as JSON here")
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=config.PROJECT_ROOT / "models",
        help="where the champion is exported (default: %(default)s)",
    )
    parser.add_argument(
        "--no-register", action="store_true", help="log to MLflow but do not register a version"
    )
    parser.add_argument(
        "--feedback",
        action="store_true",
        help="also fit a feedback forest on the analysts' verdicts of the label store "
        "(--labels) and register the average of both, when it beats the model alone on "
        "the validation folds (see docs/training.md, Feedback learning in production)",
    )
    parser.add_argument(
        "--feedback-days",
        type=_days,
        default=training.FEEDBACK_DAYS,
        help="with --feedback: the days of verdicts the feedback forest may learn from, "
        "chosen among on the validation folds (default: "
        f"{','.join(map(str, training.FEEDBACK_DAYS))})",
    )
    args = parser.parse_args(argv)
    if args.feedback and not set(args.models) & set(model.REGISTRABLE_KINDS):
        parser.error(
            "--feedback registers a model, which spark_gbt cannot be: add one of "
            f"{', '.join(model.REGISTRABLE_KINDS)} to --models"
        )
    params: dict[str, dict] = {}
    for kind, key, value in args.param:
        params.setdefault(kind, {})[key] = value
    columns = features.FEATURE_COLUMNS if args.features == "all" else features.HANDBOOK_FEATURES
    return training.TrainConfig(
        data=args.data,
        labels=args.labels,
        until=args.until,
        models=args.models,
        train_start=args.train_start,
        n_folds=args.folds,
        train_days=args.train_days,
        delay_days=args.delay_days,
        test_days=args.test_days,
        k=args.k,
        decline_precision=args.decline_precision,
        feature_columns=tuple(columns),
        params=params,
        experiment=args.experiment,
        model_name=args.model_name,
        seed=args.seed,
        engine=args.engine,
        max_train_rows=args.max_train_rows or None,
        register=not args.no_register,
        export_dir=args.models_dir,
        report=args.report,
        feedback=args.feedback,
        feedback_days=args.feedback_days,
    )


@reports_errors("train")
def main(argv: list[str] | None = None) -> int:
    logs.configure()
    cfg = parse_args(sys.argv[1:] if argv is None else argv)
    remote = [place for place in (cfg.data, cfg.labels) if storage.is_uri(place)]
    if remote and cfg.engine != "spark":
        raise DataError(
            f"{remote[0]} is read through Hadoop's file systems, which only "
            "--engine spark does: add --engine spark."
        )
    if remote:
        from fraudstream.spark import get_session

        get_session("fraudstream-train")  # Hadoop's file systems are in Spark's JVM
    data = storage.files(cfg.data)
    data.check()
    if not data.exists("events"):
        raise DataError(
            f"No events folder at {storage.join(cfg.data, 'events')}: give --data "
            "a folder written by ./spark-submit.sh generate or import."
        )
    if cfg.labels is not None and not storage.files(cfg.labels).exists():
        raise DataError(f"No label folder at {cfg.labels}.")
    report = training.run(cfg)
    print(training.summary(report, cfg.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
