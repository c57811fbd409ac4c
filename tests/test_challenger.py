"""The shadow challenger's source: the registry alias ``challenger``, followed between
micro-batches; nothing about it stops the stream (a real MLflow registry, no Spark)."""

from __future__ import annotations

from mlflow import MlflowClient

from fraudstream.scoring.model import ChallengerSource, challenger_uri

from .helpers import register


def test_challenger_uri_is_the_alias_of_the_champion_name_and_none_for_a_folder():
    assert challenger_uri("models:/fraudstream@champion") == "models:/fraudstream@challenger"
    assert challenger_uri("models:/other/3") == "models:/other@challenger"
    assert challenger_uri("/work/models/fraudstream") is None


def test_the_challenger_alias_is_followed_and_a_bad_version_is_told_once(
    mlflow_store, tmp_path, history
):
    client = MlflowClient()
    register(history["dataset"], "fraudstream")
    good = register(history["dataset"], "fraudstream", seed=1, champion=False)
    broken = client.create_model_version("fraudstream", source=str(tmp_path / "none")).version
    said: list[str] = []
    source = ChallengerSource("models:/fraudstream@challenger", 7, log=said.append)

    # No alias: the champion alone, said once.
    assert source.refresh() is None and source.refresh() is None
    assert said == [
        "challenger: no alias models:/fraudstream@challenger; scoring with the champion alone"
    ]
    # A version that cannot load: said once in one sentence, not tried again each batch.
    client.set_registered_model_alias("fraudstream", "challenger", broken)
    assert source.refresh() is None and source.refresh() is None
    assert len(said) == 2
    assert said[1].startswith("challenger: Cannot load model models:/fraudstream@challenger")
    assert said[1].endswith("Scoring with the champion alone.") and "\n" not in said[1]
    # A good one is taken up; moving back to the bad one keeps it.
    client.set_registered_model_alias("fraudstream", "challenger", good)
    assert source.refresh().version == good
    client.set_registered_model_alias("fraudstream", "challenger", broken)
    assert source.refresh().version == good
    # Removed: the champion alone again.
    client.delete_registered_model_alias("fraudstream", "challenger")
    assert source.refresh() is None
    assert said[-1] == (
        "challenger: alias models:/fraudstream@challenger removed; scoring with the champion alone"
    )


def test_a_challenger_of_another_label_delay_is_refused_and_none_is_no_challenger(
    mlflow_store, history
):
    client = MlflowClient()
    register(history["dataset"], "fraudstream")
    client.set_registered_model_alias("fraudstream", "challenger", "1")
    said: list[str] = []
    # The toy models expect a 7-day delay; a stream whose state uses 5 cannot use them.
    assert ChallengerSource("models:/fraudstream@challenger", 5, log=said.append).refresh() is None
    assert said == [
        "challenger: version 1 expects a label delay of 7 days, the stream's state uses 5. "
        "Scoring with the champion alone."
    ]
    assert ChallengerSource(None, 7).refresh() is None
