"""Every notebook in notebooks/ follows the sequence's rules (docs/notebooks.md).

Stored per policy (outputs stripped except `# NBVAL_CHECK_OUTPUT` cells, which keep the output nbval
compares against), a first code cell that chooses the model, at least one checked cell, and a place
in 00_tour's map. Running them is nbval's job (`pytest notebooks --nbval-lax ...`); this file only
reads them, so it is instant.
"""
import re
from pathlib import Path

import nbformat
import pytest

from clipspace.notebook.outputs import is_checked, strip

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
TOUR = NOTEBOOKS / "00_tour.ipynb"


def test_the_sequence_starts_with_the_tour():
    assert TOUR in PATHS, "notebooks/00_tour.ipynb opens the sequence"
    names = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb"))]
    assert names == [p.name for p in PATHS], f"notebooks are named NN_topic.ipynb: {names}"


@pytest.fixture(params=PATHS, ids=[p.stem for p in PATHS])
def notebook(request):
    return request.param, nbformat.read(request.param, as_version=4)


def test_stored_per_policy(notebook):
    path, nb = notebook
    nbformat.validate(nb)
    assert strip(nb) == nb, (f"{path.name} has outputs outside checked cells (or run metadata); run "
                             f"`python -m clipspace.notebook.outputs strip {path.relative_to(NOTEBOOKS.parent)}`")


def test_has_checked_cells_with_stored_output(notebook):
    path, nb = notebook
    checked = [i for i, c in enumerate(nb.cells) if is_checked(c)]
    assert checked, f"{path.name}: mark at least one cell printing a key number with '# NBVAL_CHECK_OUTPUT'"
    empty = [i for i in checked if not nb.cells[i].outputs]
    assert not empty, (f"{path.name}: checked cells {empty} have no stored output, so nbval compares nothing; run "
                       f"`python -m clipspace.notebook.outputs record {path.relative_to(NOTEBOOKS.parent)}`")
    for i in checked:
        assert not any(o.output_type == "error" for o in nb.cells[i].outputs), f"{path.name}: cell {i} stored an error"


def test_first_code_cell_chooses_the_model(notebook):
    path, nb = notebook
    first = next(c for c in nb.cells if c.cell_type == "code")
    code = [ln for ln in first.source.splitlines() if not ln.lstrip().startswith("#")]
    assert any("load_clip(" in ln for ln in code), f"{path.name}: the first code cell must call load_clip()"
    assert re.search(r"#.*load_clip\(\s*['\"][^'\"]+['\"]\s*,\s*pretrained=", first.source), \
        f"{path.name}: the first code cell shows the real-model alternative as a comment, " \
        "e.g. # clip = load_clip(\"ViT-B-32\", pretrained=\"openai\")"


def test_runs_on_the_default_kernel(notebook):
    path, nb = notebook
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


def _links(nb) -> list[str]:
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    return re.findall(r"\]\(([^)#\s]+\.ipynb)\)", text)


def test_the_tour_maps_the_whole_sequence():
    links = _links(nbformat.read(TOUR, as_version=4))
    numbers = {link[:2]: link for link in links}
    assert sorted(numbers) == sorted(p.name[:2] for p in PATHS if p != TOUR), f"00_tour links {links}"
    # a notebook that exists must be linked by its real name; one not yet written may be linked ahead
    for path in PATHS:
        if path != TOUR:
            assert numbers.get(path.name[:2]) == path.name, \
                f"00_tour links {numbers.get(path.name[:2])!r} for notebook {path.name}: fix the link"
