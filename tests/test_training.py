"""Training: time splits that never leak, the promotion gate, and the job end to end."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import date, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow import MlflowClient
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from fraudstream import features, lake
from fraudstream.cli import main as cli
from fraudstream.data import investigators, simulate
from fraudstream.errors import DataError
from fraudstream.ml import evaluate, feedback, model, monitor, registry, training
from fraudstream.scoring.model import load_model
from jobs import train as train_job

from .helpers import MODEL_REQUIREMENTS, train_args, use_mlflow_copy

SMALL = simulate.SimulationConfig(customers=300, terminals=600, days=70, seed=11)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    payments, labels = simulate.simulate(SMALL)
    lake.write_events(payments, root)
    lake.write_labels(labels, root)
    return root


@pytest.fixture(scope="module")
def small_dataset(small_data):
    events = lake.read_events(small_data, features.EVENT_COLUMNS).to_pandas()
    return training.build_dataset(events, lake.read_labels(small_data).to_pandas(), 7)


def test_split_never_puts_test_payments_in_training(small_dataset):
    fold = evaluate.prequential_folds(date(2018, 5, 10), n_folds=1)[0]
    train, test = training.split(small_dataset, fold)
    assert train["event_ms"].max() < test["event_ms"].min()
    assert set(train["transaction_id"]).isdisjoint(test["transaction_id"])
    assert min(test["day"]) >= fold.test_start and max(test["day"]) < fold.test_end
    assert min(train["day"]) >= fold.train_start and max(train["day"]) < fold.train_end


def test_split_uses_only_labels_reported_before_the_test_window(small_dataset):
    fold = evaluate.prequential_folds(date(2018, 5, 10), n_folds=1)[0]
    train, _ = training.split(small_dataset, fold)
    test_start_ms = training._ms(fold.test_start)
    late = train["is_fraud"].astype(bool) & (train["fraud_reported_ms"] >= test_start_ms)
    assert late.any(), "the fixture should have frauds reported after training"
    assert (train.loc[late, "y"] == 0).all()
    assert (train.loc[train["fraud_reported_ms"] < test_start_ms, "y"] == 1).all()


def test_split_leaves_out_cards_known_compromised(small_dataset):
    fold = evaluate.prequential_folds(date(2018, 5, 10), n_folds=1)[0]
    _, test = training.split(small_dataset, fold)
    before = small_dataset[
        (small_dataset["event_ms"] >= training._ms(fold.train_start))
        & (small_dataset["event_ms"] < training._ms(fold.test_start))
        & (small_dataset["fraud_reported_ms"] < training._ms(fold.test_start))
    ]
    assert len(before) > 0
    assert set(test["card_id"]).isdisjoint(before["card_id"])


def test_select_params_holds_the_review_budget_below_the_decline_band(
    small_data, small_dataset, monkeypatch
):
    cfg = training.TrainConfig(
        data=small_data,
        models=("logistic",),
        k=5,
        decline_precision=0.2,
        params={"logistic": {"C": 1.0}},
    )
    valid = evaluate.validation_folds(evaluate.prequential_folds(date(2018, 5, 20), n_folds=3))
    validation_scores = []
    fit_window = training._fit_window

    def recording(*args):
        fitted = fit_window(*args)
        validation_scores.append(fitted[0])
        return fitted

    monkeypatch.setattr(training, "_fit_window", recording)
    _, _, review, decline = training.select_params("logistic", small_dataset, valid, cfg)
    assert review < decline < float("inf")
    # About k reviews a day under the decline band on the validation windows (the median
    # window's own budget), not the k a day of all alerts with every one a decline.
    reviews = [((p >= review) & (p < decline)).sum() / cfg.test_days for p in validation_scores]
    assert np.median(reviews) == pytest.approx(cfg.k, abs=1)


def _register(estimator, columns, name="fraudstream") -> str:
    with mlflow.start_run():
        info = model.log_model(estimator, columns, registered_model_name=name)
    return str(info.registered_model_version)


def test_promotion_gate_keeps_champion_against_a_worse_model(mlflow_store, small_dataset):
    columns = ["amount", "card_tx_count_1d", "merchant_fraud_rate_30d"]
    data = small_dataset.assign(y=small_dataset["is_fraud"])
    fit_on, judge_on = data.iloc[: len(data) // 2], data.iloc[len(data) // 2 :]
    good = LogisticRegression(max_iter=1000).fit(fit_on[columns], fit_on["y"])
    bad = DummyClassifier(strategy="prior").fit(fit_on[columns], fit_on["y"])
    client = MlflowClient()

    first = _register(good, columns)
    decision = registry.promote_if_better(client, first, 0.5, None)
    assert decision.promoted and registry.champion_version(client) == first

    worse = _register(bad, columns)
    champion_ap = training.champion_score_on(judge_on, "fraudstream")
    bad_ap = evaluate.average_precision(
        judge_on["y"], model.fraud_probability(bad, judge_on[columns])
    )
    assert champion_ap > bad_ap
    decision = registry.promote_if_better(client, worse, bad_ap, champion_ap)
    assert not decision.promoted
    assert registry.champion_version(client) == first
    assert "does not beat champion version" in decision.reason

    better = _register(good, columns)
    decision = registry.promote_if_better(client, better, champion_ap + 0.01, champion_ap)
    assert decision.promoted and registry.champion_version(client) == better


def test_fraud_scorer_returns_the_fraud_class_probability():
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
    estimator = LogisticRegression().fit(frame, [0, 0, 1, 1])
    scores = model.FraudScorer(estimator, ["x"]).predict(None, frame)
    assert np.allclose(scores, estimator.predict_proba(frame)[:, 1])
    assert scores.iloc[3] > 0.5 > scores.iloc[0]


def test_a_model_pickled_before_the_package_moved_still_loads(tmp_path, monkeypatch):
    # Models registered before fraudstream was arranged by role pickled their scorer as
    # fraudstream.model.FraudScorer; the score job must still load a champion like that.
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    estimator = LogisticRegression().fit(frame, [0, 1, 0, 1])
    # An earlier load in this process may have named the former module already.
    monkeypatch.delitem(sys.modules, "fraudstream.model", raising=False)
    with monkeypatch.context() as former:
        former.setitem(sys.modules, "fraudstream.model", model)
        former.setattr(model.FraudScorer, "__module__", "fraudstream.model")
        mlflow.pyfunc.save_model(
            tmp_path / "old",
            python_model=model.FraudScorer(estimator, ["a", "b"]),
            pip_requirements=MODEL_REQUIREMENTS,
        )
    assert "fraudstream.model" not in sys.modules
    assert b"fraudstream.model" in (tmp_path / "old" / "python_model.pkl").read_bytes()
    with pytest.raises(ModuleNotFoundError, match=r"fraudstream\.model"):
        mlflow.pyfunc.load_model(str(tmp_path / "old"))
    loaded = model.load(str(tmp_path / "old"))
    assert np.allclose(loaded.predict(frame), estimator.predict_proba(frame)[:, 1])


def _boosted_params(kind: str) -> dict:
    """The first point of ``kind``'s grid, with few trees: quick on the small data."""
    params = model.param_grid(kind)[0]
    for ceiling in ("n_estimators", "max_iter"):
        if ceiling in params:
            params[ceiling] = 200
    return params


def test_early_stopping_slice_holds_out_the_newest_payments(small_dataset):
    fold = evaluate.prequential_folds(date(2018, 5, 20), n_folds=1)[0]
    train, _ = training.split(small_dataset, fold)
    # Shuffled: the slice is the newest by time, not the last rows.
    train = train.sample(frac=1.0, random_state=0)
    held = training.early_stopping_slice(train)
    assert train.loc[held, "event_ms"].min() >= train.loc[~held, "event_ms"].max()
    assert held.mean() == pytest.approx(training.EARLY_STOPPING_FRACTION, abs=0.01)
    assert train.loc[held, "y"].sum() > 0 and train.loc[~held, "y"].sum() > 0
    # No known fraud among the newest payments: nothing to stop on, none held out.
    none_newest = train.assign(y=np.where(held, 0, train["y"]))
    assert not training.early_stopping_slice(none_newest).any()


@pytest.mark.parametrize("kind", model.EARLY_STOPPING_KINDS)
def test_fit_predict_stops_a_boosted_model_on_the_newest_training_slice(
    kind, small_dataset, monkeypatch
):
    fold = evaluate.prequential_folds(date(2018, 5, 20), n_folds=1)[0]
    train, test = training.split(small_dataset, fold)
    train = train.sample(frac=1.0, random_state=0)
    seen = {}
    real_fit = model.fit

    def recording(kind, params, x, y, seed=0, weights=None, stop=None):
        seen.update(x=x, stop=stop)
        return real_fit(kind, params, x, y, seed, weights, stop)

    monkeypatch.setattr(model, "fit", recording)
    params = _boosted_params(kind)
    columns = list(features.FEATURE_COLUMNS)
    scores, estimator = training.fit_predict(kind, params, train, test, columns, seed=0)
    fitted, stopped_on = seen["x"].index, seen["stop"][0].index
    assert set(stopped_on) == set(train.index[training.early_stopping_slice(train)])
    assert set(fitted) == set(train.index) - set(stopped_on)
    assert train.loc[stopped_on, "event_ms"].min() >= train.loc[fitted, "event_ms"].max()
    # It stopped before its ceiling of trees, and scores the test window.
    rounds = {
        "hgb": lambda: estimator.n_iter_,
        "lightgbm": lambda: estimator.best_iteration_,
        "xgboost": lambda: estimator.best_iteration + 1,
    }[kind]()
    assert 0 < rounds < 200
    if kind == "hgb":
        # On the slice given, not on a random tenth of the rows it was fitted on.
        assert estimator.validation_fraction is None
    assert scores.shape == (len(test),) and 0 <= scores.min() <= scores.max() <= 1


def test_train_job_chooses_among_the_boosted_kinds_on_validation(small_data, mlflow_store):
    cfg = train_job.parse_args(
        [
            *("--data", str(small_data), "--models", "lightgbm,xgboost"),
            *("--folds", "1", "--train-start", "2018-05-20", "--k", "5", "--no-register"),
            *("--param", "lightgbm.n_estimators=200", "--param", "xgboost.n_estimators=200"),
            # Two settings of each to choose from, not four: the choice is what is tested.
            *("--param", "lightgbm.min_child_samples=20", "--param", "xgboost.min_child_weight=1"),
        ]
    )
    chosen_on = []
    select = training.select_params

    def recording(kind, dataset, folds, cfg, *walked):
        chosen_on.extend(folds)
        return select(kind, dataset, folds, cfg, *walked)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "select_params", recording)
        report = training.run(cfg, log=lambda line: None)
    (test_fold,) = report["test_folds"]
    # Chosen on validation windows that end before the test window starts.
    assert chosen_on and max(f.test_end for f in chosen_on) <= test_fold["train_end"]
    models = report["models"]
    assert set(models) == {"lightgbm", "xgboost"}
    for kind, result in models.items():
        assert result["params"] in model.param_grid(kind, cfg.params[kind])
        assert 0 < result["validation_average_precision"] <= 1
        assert 0 < result["mean"]["average_precision"] <= 1
    best = max(models, key=lambda kind: models[kind]["validation_average_precision"])
    assert report["chosen_model"] == best


@pytest.mark.parametrize("kind", model.REGISTRABLE_KINDS)
def test_registered_model_holds_no_pickle_and_scores_as_fitted(kind, small_dataset, mlflow_store):
    fold = evaluate.prequential_folds(date(2018, 5, 20), n_folds=1)[0]
    train, test = training.split(small_dataset, fold)
    columns = list(features.FEATURE_COLUMNS)
    params = _boosted_params(kind) if kind in model.EARLY_STOPPING_KINDS else None
    params = params or model.param_grid(kind)[0]
    scores, estimator = training.fit_predict(kind, params, train, test, columns, seed=0)
    version = _register(estimator, columns, name=f"no-pickle-{kind}")
    uri = f"models:/no-pickle-{kind}/{version}"
    files = [p for p in Path(mlflow.artifacts.download_artifacts(uri)).rglob("*") if p.is_file()]
    assert files and not [p for p in files if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    mlmodel = next(p for p in files if p.name == "MLmodel").read_text()
    assert "loader_module: fraudstream.ml.model" in mlmodel and "python_model" not in mlmodel
    assert "code" not in {p.parent.name for p in files}
    loaded = load_model(uri, threshold=0.5)
    assert loaded.score(test[columns]) == pytest.approx(scores, abs=1e-9, rel=0)
    assert mlflow.pyfunc.load_model(uri).predict(test[columns]).to_numpy() == pytest.approx(
        scores, abs=1e-9, rel=0
    )


def test_a_model_pickled_before_the_format_change_still_loads(small_dataset, mlflow_store):
    """Versions registered before the models held no pickle: a pickled FraudScorer."""
    columns = ["amount", "card_tx_count_1d", "merchant_fraud_rate_30d"]
    data = small_dataset.assign(y=small_dataset["is_fraud"])
    estimator = LogisticRegression(max_iter=1000).fit(data[columns], data["y"])
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model.FraudScorer(estimator, columns),
            registered_model_name="pickled",
            pip_requirements=MODEL_REQUIREMENTS,
            metadata={"threshold": 0.5, "feature_columns": columns},
        )
    uri = f"models:/pickled/{info.registered_model_version}"
    assert (Path(mlflow.artifacts.download_artifacts(uri)) / "python_model.pkl").is_file()
    loaded = load_model(uri)
    expected = estimator.predict_proba(data[columns])[:, 1]
    assert loaded.score(data[columns]) == pytest.approx(expected, abs=1e-12, rel=0)


def test_load_scorer_refuses_a_skops_file_with_an_untrusted_type(tmp_path):
    import os

    from sklearn.preprocessing import FunctionTransformer
    from skops.io.exceptions import UntrustedTypesFoundException

    # What a hostile registry entry could hold: a transformer that would run a shell
    # command. skops names the function in the file; it is in no trusted list.
    model.save_estimator(FunctionTransformer(os.system), ["a"], tmp_path)
    with pytest.raises(UntrustedTypesFoundException, match="system"):
        model.load_scorer(tmp_path)
    assert "system" not in " ".join(model.SKOPS_TRUSTED)


@pytest.fixture(scope="module")
def trained(small_data, empty_mlflow_db, tmp_path_factory) -> dict:
    """The train job run once, end to end, into a store of its own: two kinds, two folds,
    registered and exported. Tests read it through ``trained_store``, a copy each."""
    root = tmp_path_factory.mktemp("trained")
    cfg = train_job.parse_args(
        [
            "--data",
            str(small_data),
            "--models",
            "logistic,hgb",
            "--folds",
            "2",
            "--train-start",
            "2018-05-20",
            "--k",
            "5",
            "--param",
            "hgb.max_iter=50",
            "--param",
            "hgb.learning_rate=0.1",
            "--param",
            "hgb.max_leaf_nodes=15",
            "--param",
            "logistic.C=1.0",
            "--decline-precision",
            "0.2",
            "--report",
            str(root / "report.json"),
            "--models-dir",
            str(root / "models"),
        ]
    )
    with pytest.MonkeyPatch.context() as patch:
        use_mlflow_copy(empty_mlflow_db, root, patch)
        report = training.run(cfg, log=lambda line: None)
    return {"root": root, "report": report}


@pytest.fixture()
def trained_store(trained, tmp_path, monkeypatch) -> dict:
    """A copy of the trained store, active for this test only; what the job wrote."""
    use_mlflow_copy(trained["root"] / "mlflow.db", tmp_path, monkeypatch)
    return trained


def test_train_job_end_to_end(small_data, trained_store):
    report, report_path = trained_store["report"], trained_store["root"] / "report.json"
    saved = json.loads(report_path.read_text())
    assert set(saved["models"]) == {"logistic", "hgb"}
    assert [f["name"] for f in saved["test_folds"]] == [
        "test 2018-06-03..2018-06-09",
        "test 2018-05-27..2018-06-02",
    ]
    for result in saved["models"].values():
        assert len(result["folds"]) == 2
        assert 0 <= result["mean"]["average_precision"] <= 1
        assert set(result["mean"]) >= {
            "roc_auc",
            "average_precision",
            "card_precision_at_5",
            "alerts_per_day",
            "recall_at_threshold",
        }
    assert report["registered_version"] == "1"
    assert report["promotion"]["promoted"]
    # The decision bands: decline from the precision target's threshold, review from the
    # one that holds k a day below it, never above it; logged with the model for the
    # scoring job, and printed with what they did on the test windows.
    chosen = saved["models"][saved["chosen_model"]]
    loaded = load_model("models:/fraudstream/1")
    assert loaded.threshold == chosen["threshold"]
    assert loaded.decline_threshold == chosen["decline_threshold"] >= chosen["threshold"]
    assert {"declines_per_day", "decline_precision", "reviews_per_day"} <= set(chosen["folds"][0])
    means = chosen["mean"]
    assert means["reviews_per_day"] + means["declines_per_day"] == pytest.approx(
        means["alerts_per_day"]
    )
    assert (
        f"review from score {chosen['threshold']:.3f} (test: {means['reviews_per_day']:.1f} "
        f"reviews a day), decline from {chosen['decline_threshold']:.3f}"
    ) in training.summary(saved, 5)
    client = MlflowClient()
    assert registry.champion_version(client) == "1"
    version = client.get_model_version("fraudstream", "1")
    assert version.tags["model_type"] == saved["chosen_model"]
    artifacts = {a.path for a in client.list_artifacts(report["mlflow_run_id"], "plots")}
    assert artifacts >= {"plots/precision_recall.png", "plots/card_precision_by_day.png"}
    # The training profile the monitor measures drift against, beside the champion.
    profile_version, profile = monitor.champion_profile("fraudstream")
    assert profile_version == "1" and profile is not None
    assert list(profile["features"]) == list(features.FEATURE_COLUMNS)
    assert set(profile["importance"]) == set(features.FEATURE_COLUMNS)
    assert profile["rows"] > 0
    # The exported champion scores without the registry.
    exported = mlflow.pyfunc.load_model(str(trained_store["root"] / "models" / "fraudstream"))
    frame = training.build_dataset(
        lake.read_events(small_data, features.EVENT_COLUMNS).to_pandas().head(50),
        lake.read_labels(small_data).to_pandas(),
        7,
    )
    scores = exported.predict(frame[list(features.FEATURE_COLUMNS)])
    assert len(scores) == 50 and ((scores >= 0) & (scores <= 1)).all()
    assert "Registered fraudstream version 1" in training.summary(report, 5)


def test_train_job_until_trains_as_of_a_day(small_data, mlflow_store, tmp_path, capsys):
    """``--until``: payments before the day, labels reported before it; the folds end there."""
    report_path = tmp_path / "report.json"
    args = train_args(small_data)
    args += ["--until", "2018-06-01", "--no-register", "--report", str(report_path)]
    assert train_job.main(args) == 0
    saved = json.loads(report_path.read_text())
    assert [f["name"] for f in saved["test_folds"]] == ["test 2018-05-25..2018-05-31"]
    labels = lake.read_labels(small_data).to_pandas()
    known = int((labels["reported_time"] < pd.Timestamp("2018-06-01", tz="UTC")).sum())
    # A progress line: logged, on standard error.
    assert f"{known:,} labels from {small_data / 'labels'} before 2018-06-01" in (
        capsys.readouterr().err
    )


def test_train_job_on_missing_data_is_one_sentence(tmp_path, capsys):
    assert train_job.main(["--data", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"train: No events folder at {tmp_path / 'nowhere' / 'events'}: give --data a folder "
        "written by ./spark-submit.sh generate or import."
    )


def test_train_job_folds_before_the_data_is_one_sentence(small_data, mlflow_store, capsys):
    code = train_job.main(
        ["--data", str(small_data), "--train-start", "2018-04-20", "--no-register"]
    )
    assert code == 2
    assert "use fewer folds or a later --train-start" in capsys.readouterr().err


def test_train_job_folds_after_the_data_is_one_sentence(small_data, mlflow_store, capsys):
    code = train_job.main(
        ["--data", str(small_data), "--train-start", "2019-01-01", "--no-register"]
    )
    assert code == 2
    last_day = SMALL.start_date + timedelta(days=SMALL.days - 1)
    error = capsys.readouterr().err.strip()
    assert error.endswith(
        "The newest test window starts on 2019-01-15, after the data's last day, "
        f"{last_day}: use an earlier --train-start."
    )


def test_spark_gbt_fits_and_scores_in_input_order(spark, small_dataset):
    fold = evaluate.prequential_folds(date(2018, 5, 20), n_folds=1)[0]
    train, test = training.split(small_dataset, fold)
    columns = list(features.FEATURE_COLUMNS)
    params = {"maxDepth": 3, "maxIter": 5, "stepSize": 0.3}
    scores, estimator = training.fit_predict("spark_gbt", params, train, test, columns, seed=0)
    assert estimator is None and len(scores) == len(test)
    assert ((scores >= 0) & (scores <= 1)).all()
    # Scores line up with the test rows: frauds score higher on average.
    assert scores[test["y"].to_numpy() == 1].mean() > scores[test["y"].to_numpy() == 0].mean()


def test_model_promote_command_keeps_champion_against_a_worse_version(
    small_data, trained_store, capsys
):
    chosen = trained_store["report"]["chosen_model"]
    columns = list(features.FEATURE_COLUMNS)
    frame = pd.DataFrame({c: [0.0, 1.0] for c in columns})
    worse = _register(DummyClassifier(strategy="prior").fit(frame, [0, 1]), columns)
    assert worse == "2"

    # The command in this process (python -m fraudstream.cli runs the same main): a
    # subprocess would spend most of its time importing MLflow and scikit-learn.
    capsys.readouterr()
    promote = ["model", "promote", "--version", "2", "--data", str(small_data)]
    assert cli.main(promote) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(
        "Not promoted: version 2 does not beat champion version 1"
    )
    assert cli.main(["model", "status"]) == 0
    status = capsys.readouterr().out
    assert f"fraudstream v1: {chosen}" in status and "<- champion" in status
    assert "fraudstream v2" in status
    assert registry.champion_version(MlflowClient()) == "1"


def test_train_job_default_model_is_the_documented_one():
    assert train_job.parse_args([]).models == ("random_forest",)


def test_train_job_with_spark_features_reports_what_pandas_does(
    spark, small_data, mlflow_store, tmp_path
):
    """``--engine spark``: features on executors (the card operator, daily tables) give
    the same folds and the same metrics as the pandas definition."""
    reports = {}
    for engine in ("pandas", "spark"):
        path = tmp_path / f"{engine}.json"
        args = train_args(small_data)
        args += ["--until", "2018-06-01", "--no-register", "--engine", engine]
        assert train_job.main([*args, "--report", str(path)]) == 0
        reports[engine] = json.loads(path.read_text())["models"]["logistic"]
    assert reports["spark"]["params"] == reports["pandas"]["params"]
    for name, value in reports["pandas"]["mean"].items():
        assert reports["spark"]["mean"][name] == pytest.approx(
            value, rel=1e-6, abs=1e-9, nan_ok=True
        ), name


def test_train_job_reads_its_history_from_s3(
    spark, small_data, mlflow_store, tmp_path, s3_client, s3a_bucket, capsys
):
    """``--data s3a://...`` with ``--engine spark``: the same report as from a local folder."""
    for path in small_data.rglob("*.parquet"):
        key = f"history/{path.relative_to(small_data).as_posix()}"
        s3_client.upload_file(str(path), s3a_bucket, key)
    common = ["--models", "logistic", "--folds", "1", "--k", "5", "--until", "2018-06-01"]
    common += ["--no-register"]
    reports = {}
    for name, data, engine in [
        ("local", str(small_data), "pandas"),
        ("s3", f"s3a://{s3a_bucket}/history", "spark"),
    ]:
        path = tmp_path / f"{name}.json"
        args = [*common, "--data", data, "--engine", engine, "--report", str(path)]
        assert train_job.main(args) == 0
        reports[name] = json.loads(path.read_text())["models"]["logistic"]
    assert reports["s3"]["params"] == reports["local"]["params"]
    for name, value in reports["local"]["mean"].items():
        assert reports["s3"]["mean"][name] == pytest.approx(
            value, rel=1e-6, abs=1e-9, nan_ok=True
        ), name

    # Without --engine spark, and with a folder that is not there: one sentence each.
    capsys.readouterr()
    uri = f"s3a://{s3a_bucket}/history"
    assert train_job.main([*common, "--data", uri]) == 2
    assert capsys.readouterr().err.strip() == (
        f"train: {uri} is read through Hadoop's file systems, which only --engine spark "
        "does: add --engine spark."
    )
    missing = f"s3a://{s3a_bucket}/nothing"
    assert train_job.main([*common, "--data", missing, "--engine", "spark"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"train: No events folder at {missing}/")


def test_sample_genuine_keeps_every_known_fraud_and_weights_the_genuine(small_dataset):
    fold = evaluate.prequential_folds(date(2018, 5, 10), n_folds=1)[0]
    train, _ = training.split(small_dataset, fold)
    whole, none = training.sample_genuine(train, len(train), seed=0)
    assert whole is train and none is None
    frauds = int(train["y"].sum())
    assert frauds > 0, "the fixture should have known frauds"
    fitted, weights = training.sample_genuine(train, 1000, seed=0)
    assert len(fitted) == 1000 and len(train) > 1000
    assert int(fitted["y"].sum()) == frauds
    assert set(fitted["transaction_id"]) <= set(train["transaction_id"])
    assert fitted.index.is_monotonic_increasing  # the window's order is kept
    # The weighted sample has the window's class balance.
    assert weights[fitted["y"].to_numpy() == 1].tolist() == [1.0] * frauds
    assert weights.sum() == pytest.approx(len(train))
    again, _ = training.sample_genuine(train, 1000, seed=0)
    assert again.index.equals(fitted.index)


def test_train_job_fits_on_a_sample_above_max_train_rows(
    small_data, mlflow_store, tmp_path, capsys
):
    report_path = tmp_path / "report.json"
    args = train_args(small_data)
    args += ["--train-start", "2018-05-20", "--no-register", "--report", str(report_path)]
    assert train_job.main([*args, "--max-train-rows", "1000"]) == 0
    said = capsys.readouterr()
    fold = json.loads(report_path.read_text())["models"]["logistic"]["folds"][0]
    assert fold["fitted_rows"] == 1000 < fold["train_rows"]
    note = (
        "1 of 1 test folds had more than 1,000 training rows (--max-train-rows): their "
        "models were fitted on every known fraud and a weighted sample of the genuine "
        f"payments (1,000 to 1,000 of {fold['train_rows']:,} to {fold['train_rows']:,} rows), "
        "and tested on every payment."
    )
    assert said.err.count(note) == 1 and said.out.count(note) == 1  # the log, the summary
    # Tested on every payment either way; without the limit, fitted on every one.
    assert train_job.main([*args, "--max-train-rows", "0"]) == 0
    assert "--max-train-rows" not in capsys.readouterr().out
    whole = json.loads(report_path.read_text())["models"]["logistic"]["folds"][0]
    assert whole["fitted_rows"] == whole["train_rows"] == fold["train_rows"]
    assert whole["test_rows"] == fold["test_rows"]


@pytest.mark.parametrize("value", ["10", "-5", "many"])
def test_train_job_refuses_a_silly_max_train_rows(value, capsys):
    with pytest.raises(SystemExit):
        train_job.parse_args(["--max-train-rows", value])
    assert "is not 0 or a number of rows from 1000 up" in capsys.readouterr().err


# --- train --feedback -----------------------------------------------------------------


def test_weighted_average_saved_and_loaded_scores_the_weighted_parts(small_dataset, mlflow_store):
    fold = evaluate.prequential_folds(date(2018, 5, 20), n_folds=1)[0]
    train, test = training.split(small_dataset, fold)
    columns = list(features.FEATURE_COLUMNS)
    # Two formats in one model: LightGBM's text file and a forest through skops.
    params = _boosted_params("lightgbm") | {"n_estimators": 50}
    _, delayed = training.fit_predict("lightgbm", params, train, test, columns, seed=0)
    verdicts = train[columns].assign(y=train["y"].to_numpy())
    fed = feedback.fit_feedback(verdicts, columns, feedback.FeedbackConfig(n_estimators=20))
    average = model.WeightedAverage([delayed, fed], [0.25, 0.75], ["delayed", "feedback"])
    version = _register(average, columns, name="average")
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/average/{version}"))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".cloudpickle")]
    spec = json.loads(next(p for p in files if p.parent.name == "scorer").read_text())
    assert spec["format"] == "average" and spec["weights"] == [0.25, 0.75]
    assert {p.name for p in files if p.parent.name in spec["parts"]} >= {
        "model.txt",
        "model.skops",
    }
    x = test[columns].astype(float)
    expected = 0.25 * model.fraud_probability(delayed, x) + 0.75 * model.fraud_probability(fed, x)
    loaded = load_model(f"models:/average/{version}", threshold=0.5)
    assert loaded.score(test[columns]) == pytest.approx(expected, abs=1e-12, rel=0)
    # One thread for every part, as FraudScorer.predict sets it for a lone forest.
    fed.set_params(n_jobs=2)
    model.FraudScorer(average, columns).predict(None, test.head(3))
    assert fed.n_jobs == 1


def test_weighted_average_refuses_a_part_outside_its_folder(tmp_path):
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    part = LogisticRegression().fit(frame, [0, 0, 1, 1])
    model.save_estimator(model.WeightedAverage([part], [1.0], ["only"]), ["a"], tmp_path / "avg")
    spec_file = tmp_path / "avg" / model.SCORER_FILE
    spec = json.loads(spec_file.read_text())
    spec_file.write_text(json.dumps(spec | {"parts": ["../elsewhere"]}))
    with pytest.raises(DataError, match=r"names a part outside it: '\.\./elsewhere'"):
        model.load_scorer(tmp_path / "avg")


def test_with_verdicts_maps_analyst_labels_onto_payments():
    labels = pd.DataFrame(
        {
            "transaction_id": ["t1", "t1", "t2", "t3", "t4"],
            "label": ["genuine", "fraud", "genuine", "fraud", "fraud"],
            "source": ["analyst", "analyst", "analyst", "chargeback", "analyst"],
            "reported_time": pd.to_datetime([5, 3, 7, 1, 9], unit="ms", utc=True),
        }
    )
    dataset = pd.DataFrame({"transaction_id": ["t1", "t2", "t3", "t5"], "x": [0, 1, 2, 3]})
    dataset.attrs["first_day"] = date(2018, 4, 1)
    got = training.with_verdicts(dataset, training.analyst_verdicts(labels))
    # Fraud if an analyst found it so; reported when the first verdict was; a
    # chargeback is no verdict, and a verdict on a payment not in the data is dropped.
    expected = dataset.assign(
        verdict=[1.0, 0.0, np.nan, np.nan], verdict_reported_ms=[3.0, 7.0, np.nan, np.nan]
    )
    pd.testing.assert_frame_equal(got, expected)
    assert got.attrs == {"first_day": date(2018, 4, 1)}


def test_score_on_judges_a_feedback_model_by_its_delayed_part(small_dataset, mlflow_store):
    fold = evaluate.prequential_folds(date(2018, 5, 20), n_folds=1)[0]
    train, test = training.split(small_dataset, fold)
    columns = ["amount", "card_tx_count_1d", "merchant_fraud_rate_30d"]
    delayed = LogisticRegression(max_iter=1000).fit(train[columns], train["y"])
    # A feedback part that has seen the test window's truth, as F has the newest verdicts.
    seen = LogisticRegression(max_iter=1000).fit(test[columns], test["y"])
    average = model.WeightedAverage([delayed, seen], [0.5, 0.5], ["delayed", "feedback"])
    version = _register(average, columns, name="fed")
    expected = evaluate.average_precision(
        test["y"], model.fraud_probability(delayed, test[columns])
    )
    assert training.score_on(test, f"models:/fed/{version}") == pytest.approx(expected)


@pytest.fixture(scope="module")
def small_data_with_verdicts(small_data, small_dataset, tmp_path_factory):
    """``small_data`` and the analysts' verdicts on the 5 cards a day a weak risk score
    ranks highest (frauds score higher on average), appended to its labels."""
    root = tmp_path_factory.mktemp("verdicts")
    shutil.copytree(small_data / "events", root / "events")
    payments, labels = lake.read_events(small_data), lake.read_labels(small_data)
    noise = np.random.default_rng(0).uniform(0.0, 2.0, len(small_dataset))
    score = small_dataset["is_fraud"].to_numpy() + noise
    analyst = investigators.analyst_labels(payments, labels, score, k=5)
    lake.write_labels(pa.concat_tables([labels, analyst]), root)
    return root


def _feedback_args(data, models_dir: Path) -> list[str]:
    extra = ["--train-start", "2018-05-20", "--param", "logistic.C=1.0"]
    extra += ["--models-dir", str(models_dir)]
    # k=10: at 5 cards a day, D and the feedback settings tie on the validation fold.
    return [*train_args(data, *extra, "--feedback", "--feedback-days", "7"), "--k", "10"]


def test_train_job_feedback_registers_the_average_of_its_parts(
    small_data_with_verdicts, mlflow_store, tmp_path
):
    cfg = train_job.parse_args(_feedback_args(small_data_with_verdicts, tmp_path / "models"))
    said: list[str] = []
    report = training.run(cfg, log=said.append)
    fed = report["feedback"]
    assert fed["registered"] == "delayed+feedback", fed.get("note")
    # F is fitted on the verdicts reported in the chosen days before the data's end.
    labels = lake.read_labels(small_data_with_verdicts).to_pandas()
    end = pd.Timestamp(date(2018, 6, 10), tz="UTC")
    recent = labels[
        (labels["source"] == "analyst")
        & (labels["reported_time"] >= end - timedelta(days=fed["feedback_days"]))
        & (labels["reported_time"] < end)
    ]
    assert fed["verdicts"] == len(recent) > 0
    assert fed["verdict_frauds"] == (recent["label"] == "fraud").sum() > 0
    assert f"on {len(recent):,} analyst verdicts" in " ".join(said)
    # Chosen on validation, measured on the test fold, logged to the run.
    assert set(fed["validation"]) == {"delayed", "average w=0.50 N=7", "average w=0.75 N=7"}
    assert fed["validation"][fed["chosen"]] > fed["validation"]["delayed"]
    run = MlflowClient().get_run(report["mlflow_run_id"])
    assert run.data.params["feedback.weight"] == str(fed["weight"])
    assert run.data.metrics["feedback.test.feedback.card_precision_at_10"] == pytest.approx(
        fed["test"]["cp_feedback"]
    )
    # D's test scores in the walk are the training job's own fits.
    newest = report["models"]["logistic"]["folds"][0]
    assert fed["test"]["folds"][0]["cp_delayed"] == newest["card_precision_at_10"]
    per_day = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/feedback/per_day.csv")
    assert len(per_day.splitlines()) == 1 + cfg.test_days
    # The registered model: its loaded scores are the weighted average of its parts.
    loaded = load_model("models:/fraudstream/1")
    average = loaded.scorer.estimator
    assert isinstance(average, model.WeightedAverage)
    assert average.names == ["delayed", "feedback"]
    assert average.weights == [1.0 - fed["weight"], fed["weight"]]
    assert loaded.threshold == fed["threshold"]
    frame = training.build_dataset(
        lake.read_events(small_data_with_verdicts, features.EVENT_COLUMNS).to_pandas(),
        labels,
        7,
    ).tail(500)
    x = frame[loaded.feature_columns].astype(float)
    parts = [model.fraud_probability(part, x) for part in average.parts]
    expected = (1.0 - fed["weight"]) * parts[0] + fed["weight"] * parts[1]
    assert loaded.score(frame) == pytest.approx(expected, abs=1e-12, rel=0)
    assert not np.allclose(parts[0], parts[1])
    metadata = mlflow.models.get_model_info("models:/fraudstream/1").metadata
    assert metadata["feedback"] == {
        "weight": fed["weight"],
        "feedback_days": 7,
        "verdicts": fed["verdicts"],
        "verdict_frauds": fed["verdict_frauds"],
    }
    assert "Feedback: registered the delayed model averaged" in training.summary(report, 10)
    # The exported champion, loaded without the registry, scores the same.
    exported = mlflow.pyfunc.load_model(report["exported_to"])
    assert exported.predict(frame).to_numpy() == pytest.approx(expected, abs=1e-12, rel=0)


def test_train_job_feedback_without_verdicts_registers_the_delayed_model(
    small_data, mlflow_store, tmp_path
):
    said: list[str] = []
    cfg = train_job.parse_args(_feedback_args(small_data, tmp_path / "models"))
    report = training.run(cfg, log=said.append)
    fed = report["feedback"]
    assert fed["registered"] == "delayed alone"
    note = (
        "There are no analyst verdicts in the last 7 days before 2018-06-10: registered "
        "the delayed model alone."
    )
    assert fed["note"] == note and said.count(note) == 1
    loaded = load_model("models:/fraudstream/1")
    assert not isinstance(loaded.scorer.estimator, model.WeightedAverage)
    assert loaded.threshold == report["models"]["logistic"]["threshold"]


def test_spark_dataset_carries_the_verdicts_pandas_does(spark, small_data_with_verdicts, tmp_path):
    cfg = train_job.parse_args(_feedback_args(small_data_with_verdicts, tmp_path))
    labels_folder = small_data_with_verdicts / "labels"
    on_spark = training._spark_dataset(cfg, labels_folder, {}, lambda line: None)
    labels = lake.read_label_folder(labels_folder).to_pandas()
    assert (labels["source"] == "analyst").any()
    expected = training.analyst_verdicts(labels)
    got = on_spark.dropna(subset=["verdict"]).set_index("transaction_id")
    assert len(got) > 0
    pd.testing.assert_frame_equal(
        got[["verdict", "verdict_reported_ms"]],
        expected.loc[got.index].astype(float),
        check_names=False,
    )
    assert on_spark["transaction_id"].isin(expected.index).sum() == len(got)


@pytest.mark.parametrize("value", ["0", "7,x", ""])
def test_train_job_refuses_silly_feedback_days(value, capsys):
    with pytest.raises(SystemExit):
        train_job.parse_args(["--feedback", "--feedback-days", value])
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            f"argument --feedback-days: {value!r} is not a comma-separated list of days from 1 "
            "up, such as 7,14"
        )
    )


def test_train_job_feedback_with_spark_gbt_alone_is_one_sentence(capsys):
    with pytest.raises(SystemExit):
        train_job.parse_args(["--feedback", "--models", "spark_gbt"])
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "--feedback registers a model, which spark_gbt cannot be: add one of "
            "logistic, random_forest, hgb, lightgbm, xgboost to --models"
        )
    )
