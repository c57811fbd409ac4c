"""Which per-card context features help? An ablation on the book's folds (issue #19).

Usage::

    flock /work/train.lock .venv/bin/python bench/context_ablation.py --data data/abc \\
        [--train-start 2018-07-25] [--folds 4] [--seeds 0,1,2] [--variant-seeds 0] \\
        [--params max_depth=10,n_estimators=100] [--report ablation.json]
    .venv/bin/python bench/context_ablation.py --table-from ablation.json

Builds the training dataset as ``./spark-submit.sh train`` does with its default
(pandas) engine (``training.build_dataset``: the 27 features, the truth and when it was
reported), adds the candidate context features of ``fraudstream.ml.context_features``
(each from the card's earlier payments only), and fits the random forest with fixed
settings on each test fold (``training.split``, ``training.sample_genuine``,
``training.fit_predict``, ``evaluate.evaluate_scores``): the baseline, the baseline plus
each group alone, the baseline plus every group. The forest's settings are fixed (the
ones the job chooses on these folds for scenarios a-c: depth 10, 100 trees) rather than
searched on the validation folds, so that every configuration is fitted the same way
and the run stays short. The baseline is fitted with each of ``--seeds`` to measure the
seed spread; the variants with ``--variant-seeds``. Prints a markdown table of the mean
AP and CP@k over the test folds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from fraudstream import features, lake
from fraudstream.ml import context_features, evaluate, training

KIND = "random_forest"


def _params(text: str) -> dict[str, float | int]:
    params: dict[str, float | int] = {}
    for item in filter(None, text.split(",")):
        name, value = item.split("=")
        params[name] = int(value) if value.isdigit() else float(value)
    return params


def load(data: Path, delay_days: int) -> pd.DataFrame:
    """The training job's dataset of ``data`` with the context features beside it."""
    columns = list(dict.fromkeys(features.EVENT_COLUMNS + context_features.EVENT_COLUMNS))
    events = lake.read_events(data, columns).to_pandas()
    labels = lake.read_labels(data).to_pandas()
    dataset = training.build_dataset(events, labels, delay_days)
    context = context_features.compute(events)
    for name in context_features.CONTEXT_COLUMNS:
        dataset[name] = context[name].to_numpy()
    return dataset


def configurations() -> list[tuple[str, list[str]]]:
    """Name and feature columns of each configuration, the baseline first."""
    base = list(features.FEATURE_COLUMNS)
    configs = [("baseline (27)", base)]
    configs += [
        (f"+ {group}", base + columns) for group, columns in context_features.GROUPS.items()
    ]
    configs.append(("+ all five groups", base + context_features.CONTEXT_COLUMNS))
    return configs


def run_config(splits, columns, params, seed, k, max_rows) -> list[dict[str, float]]:
    """Fit and score each test fold with ``columns``; the metrics of each fold."""
    results = []
    for train, test in splits:
        fitted, weights = training.sample_genuine(train, max_rows, seed)
        scores, _ = training.fit_predict(KIND, params, fitted, test, columns, seed, weights)
        results.append(
            evaluate.evaluate_scores(test["day"], test["card_id"], test["y"], scores, k=k)
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/abc"))
    parser.add_argument("--train-start", type=date.fromisoformat, default=date(2018, 7, 25))
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--delay-days", type=int, default=7)
    parser.add_argument("--k", type=int, default=evaluate.DEFAULT_K)
    parser.add_argument("--seeds", default="0,1,2", help="the baseline's seeds")
    parser.add_argument("--variant-seeds", default="0", help="every other configuration's")
    parser.add_argument("--params", default="max_depth=10,n_estimators=100")
    parser.add_argument("--max-train-rows", type=int, default=training.DEFAULT_MAX_TRAIN_ROWS)
    parser.add_argument("--only", default="", help="comma-separated configuration numbers")
    parser.add_argument("--report", type=Path, help="JSON of every run, rewritten after each")
    parser.add_argument(
        "--table-from", type=Path, help="print the table of such a report (one cut short too)"
    )
    args = parser.parse_args()
    if args.table_from:
        print(table(json.loads(args.table_from.read_text()), args.k))
        return
    params = _params(args.params)
    seeds = [int(s) for s in args.seeds.split(",")]
    variant_seeds = [int(s) for s in args.variant_seeds.split(",")]

    started = time.perf_counter()
    dataset = load(args.data, args.delay_days)
    print(
        f"dataset: {len(dataset):,} payments, {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    folds = evaluate.prequential_folds(args.train_start, args.folds, 7, args.delay_days, 7)
    splits = [training.split(dataset, fold) for fold in folds]
    for fold, (train, test) in zip(folds, splits, strict=True):
        print(
            f"{fold.name}: train {len(train):,} ({int(train['y'].sum())} known frauds), "
            f"test {len(test):,} ({int(test['y'].sum())} frauds)",
            file=sys.stderr,
        )

    chosen = {int(i) for i in args.only.split(",") if i}
    cp = f"card_precision_at_{args.k}"
    rows = []
    # Seed by seed, every configuration: a run cut short still compares like with like.
    for seed in dict.fromkeys(seeds + variant_seeds):
        for number, (name, columns) in enumerate(configurations()):
            if (chosen and number not in chosen) or seed not in (
                seeds if number == 0 else variant_seeds
            ):
                continue
            began = time.perf_counter()
            per_fold = run_config(splits, columns, params, seed, args.k, args.max_train_rows)
            row = {
                "config": name,
                "seed": seed,
                "ap": float(np.mean([f["average_precision"] for f in per_fold])),
                "cp": float(np.mean([f[cp] for f in per_fold])),
                "roc_auc": float(np.mean([f["roc_auc"] for f in per_fold])),
                "fold_ap": [f["average_precision"] for f in per_fold],
                "fold_cp": [f[cp] for f in per_fold],
                "seconds": time.perf_counter() - began,
            }
            rows.append(row)
            if args.report:
                args.report.write_text(json.dumps(rows, indent=2))
            print(
                f"{name} seed {seed}: AP {row['ap']:.4f} CP@{args.k} {row['cp']:.4f} "
                f"({row['seconds']:.0f} s)",
                file=sys.stderr,
            )
    print(table(rows, args.k))
    print(f"\ntotal {time.perf_counter() - started:.0f} s", file=sys.stderr)


def _folds_up(runs: pd.DataFrame, baseline: pd.DataFrame, column: str) -> str:
    """On how many test folds the seed-paired difference, averaged over seeds, is positive."""
    paired = [
        np.subtract(r[column], baseline.loc[r["seed"], column])
        for _, r in runs.iterrows()
        if r["seed"] in baseline.index
    ]
    if not paired:
        return "?"
    mean = np.mean(paired, axis=0)
    return f"{int((mean > 0).sum())}/{len(mean)}"


def table(rows: list[dict], k: int) -> str:
    """The markdown table: mean over seeds per configuration, against the baseline's spread.

    A configuration is beyond the seed spread on a metric when its mean differs from the
    baseline's by more than the baseline's own range over its seeds, and its difference
    from the baseline fitted with the same seed has the same sign on every seed.
    """
    frame = pd.DataFrame(rows)
    baseline_name = frame["config"].iloc[0]
    baseline = frame[frame["config"] == baseline_name].set_index("seed")
    spread = {m: baseline[m].max() - baseline[m].min() for m in ("ap", "cp")}
    lines = [
        f"| features | seeds | AP | CP@{k} | ΔAP (per seed) | ΔCP@{k} (per seed) "
        "| folds up (AP, CP) | beyond the seed spread |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in frame.groupby("config", sort=False):
        seeds = ",".join(str(seed) for seed in runs["seed"])
        cells = [f"{runs[m].mean():.3f}" for m in ("ap", "cp")]
        if len(runs) > 1:
            cells = [
                f"{runs[m].mean():.3f} ({runs[m].min():.3f}-{runs[m].max():.3f})"
                for m in ("ap", "cp")
            ]
        if name == baseline_name:
            lines.append(f"| {name} | {seeds} | {cells[0]} | {cells[1]} | - | - | - | - |")
            continue
        deltas, beyond = [], []
        for metric, label in (("ap", "AP"), ("cp", f"CP@{k}")):
            paired = [
                r[metric] - baseline.loc[r["seed"], metric]
                for _, r in runs.iterrows()
                if r["seed"] in baseline.index
            ]
            mean = runs[metric].mean() - baseline[metric].mean()
            deltas.append(
                f"{mean:+.4f} ({min(paired):+.4f}..{max(paired):+.4f})"
                if paired
                else f"{mean:+.4f}"
            )
            same_sign = all(d > 0 for d in paired) or all(d < 0 for d in paired)
            if abs(mean) > spread[metric] and same_sign:
                beyond.append(f"{label} {'up' if mean > 0 else 'down'}")
        lines.append(
            f"| {name} | {seeds} | {cells[0]} | {cells[1]} | {deltas[0]} | {deltas[1]} "
            f"| {_folds_up(runs, baseline, 'fold_ap')}, {_folds_up(runs, baseline, 'fold_cp')} "
            f"| {', '.join(beyond) or 'no'} |"
        )
    lines.append(
        f"\nBaseline seed spread (max - min of its fold means over seeds "
        f"{','.join(map(str, baseline.index))}): AP {spread['ap']:.4f}, CP@{k} {spread['cp']:.4f}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
