"""Benchmark the monitor job on 183 days of the default simulation.

The scored view is made without Kafka: the default simulation (5,000 customers, 10,000
terminals, 183 days, seed 0, about 1.7 million payments), its features from training's
code (``training.build_dataset``, the features the score job writes), a random forest
fitted on days 30..44 and its scores over every day, decided ``review`` above the
threshold that gives about 100 alerts a day; written as the score job lays out
``scored/`` (one file per day) with the simulation's labels as the label store. The
forest is registered as the champion, with its training profile, in an MLflow store of
the benchmark's own. All of that is made once under ``--root`` and kept.

Then ``./spark-submit.sh monitor --out ROOT/lake --no-publish`` runs ``--repeats``
times; the script prints each run's wall-clock time (the JVM's start included) and the
job's own time (from its summary line), then their medians.

Usage::

    .venv/bin/python bench/bench_monitor.py [--root data/bench-monitor] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_score import machine  # noqa: E402
from fraudstream import config, features  # noqa: E402

#: The job's own time, from its summary line.
JOB_TIME = re.compile(r"monitoring in ([\d.]+) s")


def make_history(root: Path) -> None:
    """The default simulation's scored view and label store, and the champion."""
    import numpy as np
    import pandas as pd

    from fraudstream.data import simulate
    from fraudstream.ml import drift, tracking, training
    from tests.helpers import fit, register, write_scored_history

    cfg = simulate.SimulationConfig()
    payments, labels = simulate.simulate(cfg)
    labels = labels.to_pandas()
    dataset = training.build_dataset(payments.to_pandas()[features.EVENT_COLUMNS], labels, 7)
    dataset["day_index"] = (pd.to_datetime(dataset["day"]) - pd.Timestamp(cfg.start_date)).dt.days
    train = dataset[dataset["day_index"].between(30, 44)].reset_index(drop=True)
    scorer = fit(train)
    threshold = float(np.quantile(scorer.predict(None, train), 1 - 100 * 15 / len(train)))
    written = write_scored_history(root / "lake", dataset, labels, scorer, threshold)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    tracking.use_experiment("bench-monitor")
    importance = pd.Series(scorer.estimator.feature_importances_, index=features.FEATURE_COLUMNS)
    profile = drift.training_profile(train, features.FEATURE_COLUMNS, importance)
    register(train, "fraudstream", profile=profile)
    print(f"made {written:,} scored payments under {root / 'lake'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=config.DATA_DIR / "bench-monitor")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not (root / "mlflow.db").is_file():
        make_history(root)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    command = [
        str(ROOT / "spark-submit.sh"),
        "monitor",
        "--out",
        str(root / "lake"),
        "--no-publish",
    ]
    print(machine())
    print(" ".join(command))
    walls, jobs = [], []
    for run in range(args.repeats):
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - started)
        found = JOB_TIME.search(done.stdout)
        jobs.append(float(found.group(1)) if found else float("nan"))
        print(f"run {run + 1}: {walls[-1]:.1f} s wall clock, job {jobs[-1]:.1f} s")
        print(done.stdout.strip())
    print(
        f"median: {statistics.median(walls):.1f} s wall clock, job {statistics.median(jobs):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
