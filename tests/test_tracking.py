"""MLflow: a real local SQLite tracking store and registry, or MLFLOW_TRACKING_URI."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from fraudstream import config
from fraudstream.ml import tracking


def test_tracking_uri_defaults_to_local_sqlite(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri() == f"sqlite:///{config.MLFLOW_DB}"


def test_tracking_uri_follows_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert tracking.tracking_uri() == "http://tracking.example:5000"


def test_use_experiment_logs_runs_and_registers_models_in_the_store(mlflow_store, tmp_path):
    store = mlflow_store
    experiment_id = tracking.use_experiment("fraudstream-test")
    with mlflow.start_run() as run:
        mlflow.log_metric("average_precision", 0.5)
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    assert client.get_run(run.info.run_id).data.metrics == {"average_precision": 0.5}
    assert client.get_run(run.info.run_id).info.experiment_id == experiment_id
    client.create_registered_model("fraudstream-test")
    assert [m.name for m in client.search_registered_models()] == ["fraudstream-test"]
    assert (tmp_path / "mlflow.db").stat().st_size > 0
