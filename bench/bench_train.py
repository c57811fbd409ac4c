"""How long training takes: features, model selection and evaluation, MLflow, per stage.

Usage::

    .venv/bin/python bench/bench_train.py [--data /tmp/bench-train] [--models random_forest]
        [--scenarios abc] [--repeat 1] [--engine pandas|spark]

Generates the simulator's default data set into ``--data`` if it is not there (1.7 M
payments), then runs the training job's steps (``fraudstream.ml.training.run``) with a
throw-away MLflow store and prints the seconds of each stage (median over repeats).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import date
from pathlib import Path

from fraudstream import lake
from fraudstream.data import simulate
from fraudstream.ml import training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "bench-train")
    parser.add_argument("--models", default="random_forest")
    parser.add_argument("--scenarios", default="abc")
    parser.add_argument("--train-start", type=date.fromisoformat, default=date(2018, 7, 25))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--engine", choices=["pandas", "spark"], default="pandas")
    args = parser.parse_args()
    if not (args.data / "events").is_dir():
        payments, labels = simulate.simulate(
            simulate.SimulationConfig(scenarios=frozenset(args.scenarios))
        )
        lake.write_events(payments, args.data)
        lake.write_labels(labels, args.data)
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as store:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
        for _ in range(args.repeat):
            cfg = training.TrainConfig(
                data=args.data,
                models=tuple(args.models.split(",")),
                train_start=args.train_start,
                register=False,
                engine=args.engine,
            )
            started = time.perf_counter()
            report = training.run(cfg, log=lambda line: None)
            runs.append(report["seconds"] | {"total": time.perf_counter() - started})
    print(
        f"data {args.data} (scenarios {args.scenarios}), models {args.models}, "
        f"features by {args.engine}, "
        f"{args.repeat} run(s), median seconds:"
    )
    for stage in runs[0]:
        values = [run[stage] for run in runs]
        print(f"  {stage:<34} {statistics.median(values):7.1f}")


if __name__ == "__main__":
    main()
