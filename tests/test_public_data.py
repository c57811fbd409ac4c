"""The handbook's published format through the import job and the training job."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fraudstream.data import simulate
from fraudstream.ml import training
from jobs import import_public as import_job
from jobs import train as train_job

from .helpers import train_args

SCENARIO_NUMBER = {"amount_threshold": 1, "compromised_terminal": 2, "leaked_card": 3}


def _write_handbook_days(folder, config: simulate.SimulationConfig) -> int:
    """Simulated payments written the way the handbook ships its data: a pickle per day."""
    payments, labels = simulate.simulate(config)
    frame = payments.to_pandas()
    fraud = labels.to_pandas().set_index("transaction_id")["scenario"]
    start = pd.Timestamp(config.start_date)
    times = frame["event_time"].dt.tz_localize(None)
    seconds = ((times - start).dt.total_seconds()).astype(np.int64)
    handbook = pd.DataFrame(
        {
            "TRANSACTION_ID": np.arange(len(frame)),
            "TX_DATETIME": times,
            "CUSTOMER_ID": frame["customer_id"].str[-6:],
            "TERMINAL_ID": frame["merchant_id"].str[-6:],
            "TX_AMOUNT": frame["amount"],
            "TX_TIME_SECONDS": seconds,
            "TX_TIME_DAYS": seconds // 86400,
            "TX_FRAUD": frame["transaction_id"].isin(fraud.index).astype(int),
            "TX_FRAUD_SCENARIO": frame["transaction_id"]
            .map(fraud)
            .map(SCENARIO_NUMBER)
            .fillna(0)
            .astype(int),
        }
    )
    folder.mkdir()
    for day, rows in handbook.groupby(handbook["TX_DATETIME"].dt.date):
        rows.reset_index(drop=True).to_pickle(folder / f"{day}.pkl")
    return len(handbook)


def test_handbook_format_imports_and_trains_smoke(tmp_path, mlflow_store):
    rows = _write_handbook_days(
        tmp_path / "handbook",
        simulate.SimulationConfig(
            customers=300, terminals=600, days=60, seed=5, scenarios=frozenset("abc")
        ),
    )
    out = tmp_path / "imported"
    assert (
        import_job.main(
            ["--format", "handbook", "--input", str(tmp_path / "handbook"), "--out", str(out)]
        )
        == 0
    )
    cfg = train_job.parse_args(train_args(out, "--param", "logistic.C=1.0", "--no-register"))
    report = training.run(cfg, log=lambda line: None)
    (fold,) = report["models"]["logistic"]["folds"]
    assert fold["test_rows"] > 0 and fold["test_frauds"] > 0
    assert 0 < report["models"]["logistic"]["mean"]["average_precision"] <= 1
    assert rows > 10_000
