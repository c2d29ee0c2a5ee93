"""The tutorial notebooks: committed without outputs, equal to what notebooks/build.py writes, and
each executed end to end (nbclient) on the default model with the small settings."""

import ast
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))


def test_there_are_four_tutorials():
    assert NAMES == ["01_patching_a_fact.ipynb", "02_das_and_ravel.ipynb", "03_loreft_persona.ipynb",
                     "04_memorization_capacity.ipynb"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_has_no_outputs_and_matches_the_generator(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs committed; run notebooks/build.py"
            ast.parse(cell.source)  # a syntax error shows here, without the slow run
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        import build
    finally:
        sys.path.remove(str(NOTEBOOKS))
    build.build(tmp_path)
    assert (tmp_path / name).read_text() == (NOTEBOOKS / name).read_text(), \
        f"{name} differs from notebooks/build.py's cells: run `python notebooks/build.py`"


@pytest.fixture(scope="module")
def default_model():
    """The default model's folder, converted once if `make model` has not run yet."""
    from workbench.models import prepare_default_model
    return prepare_default_model()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_end_to_end_on_the_default_model(name, default_model, monkeypatch):
    from nbclient import NotebookClient
    monkeypatch.setenv("WORKBENCH_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    assert code[-1].outputs, f"{name}: the last cell showed nothing"  # it ran to the end and drew its result
