"""Every notebook in notebooks/ runs top to bottom without error, at the small sizes its parameter cell picks
when ``MEMJAX_NOTEBOOK_SMALL=1``.

The notebooks are saved with the outputs of a full-size run; this test executes a copy and leaves the files
untouched.
"""

from __future__ import annotations

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    monkeypatch.setenv("MEMJAX_NOTEBOOK_SMALL", "1")  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors, errors


def test_notebooks_are_saved_with_outputs():
    assert {p.stem for p in NOTEBOOKS} >= {"policies", "lstm_text", "fast_weights"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(cell.get("execution_count") for cell in code), f"{path.name} has cells that never ran"
        assert any(cell.get("outputs") for cell in code), f"{path.name} was saved without outputs"
        assert "MEMJAX_NOTEBOOK_SMALL" in code[0].source, f"{path.name}: the first code cell picks the sizes"
