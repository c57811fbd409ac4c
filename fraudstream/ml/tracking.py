"""MLflow tracking: a local SQLite store and registry, unless ``MLFLOW_TRACKING_URI`` is set."""

from __future__ import annotations

import os

from fraudstream import config


def tracking_uri() -> str:
    """Return the MLflow tracking (and registry) URI to use.

    ``$MLFLOW_TRACKING_URI`` when it is set (a tracking server, Databricks, another
    database); else a SQLite file under ``var/mlflow/``, created on first use.
    """
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    config.MLFLOW_DB.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{config.MLFLOW_DB}"


def use_experiment(name: str) -> str:
    """Point the mlflow client at :func:`tracking_uri`, select experiment ``name``.

    With the local store a new experiment keeps its artifacts beside the database
    (``var/mlflow/artifacts/NAME``), not in an ``mlruns/`` folder of whatever
    directory the job happened to run from.

    Returns
    -------
    str
        The experiment's id.
    """
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        artifact_location = None
        if uri == f"sqlite:///{config.MLFLOW_DB}":
            artifact_location = (config.MLFLOW_ARTIFACTS_DIR / name).as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def use_store() -> str:
    """Point the mlflow client (tracking and registry) at :func:`tracking_uri`; return it.

    For readers of the registry (the scoring job): without it, MLflow would look for a
    store in the working directory rather than where the training job registered.
    """
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri
