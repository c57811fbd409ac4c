"""Every notebook runs top to bottom on the sample, twice (nothing left behind breaks it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudstream import config

NOTEBOOKS = sorted((config.PROJECT_ROOT / "notebooks").glob("*.ipynb"))


def _marked(path: Path):
    """A notebook that starts Spark runs under the spark marker, out of the fast lane."""
    uses_spark = "get_session" in path.read_text()
    return pytest.param(path, marks=[pytest.mark.spark] if uses_spark else [], id=path.name)


def test_notebooks_are_committed_without_outputs():
    # The committed file as JSON: importing nbformat costs about 4 s (jsonschema's
    # format checkers), and this is the only test of the module in the fast lane.
    assert NOTEBOOKS, "no notebooks found"
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        assert notebook["nbformat"] == 4, path.name
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert not cell["outputs"] and cell["execution_count"] is None, path.name


@pytest.mark.parametrize("path", [_marked(path) for path in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_twice_smoke(path: Path, mlflow_store):
    """A fresh kernel runs every cell, then runs them all again, as "Run All" twice does:
    what the first run left on disk (the registry, outputs) must not break the second.
    One kernel for both runs spares starting it and its imports again."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(config.PROJECT_ROOT)}},
    )
    with client.setup_kernel():
        for _ in range(2):
            # Raises CellExecutionError, with the cell and its traceback, at the first
            # cell that fails (allow_errors is off): no error output is left to look for.
            for index, cell in enumerate(notebook.cells):
                client.execute_cell(cell, index)
