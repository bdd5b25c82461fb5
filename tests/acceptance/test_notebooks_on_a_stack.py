"""The pretrained-stack promise: notebooks 06 and 07 run on a stack through their first cell.

No real weights can be downloaded here, so the stack is the family's tiny random components
(`stacks.tiny_stack`, saved in diffusers' layout and loaded back offline through the loader a real
stack takes), sized to the offline CLIP. The first cell's `clip = load_clip()` line becomes
`stack = tiny_stack(...); clip = stack.clip`, and `decoder_for` / `prior_for` then find the stack's own
decoder and prior. Random weights draw noise: only running, and that the stack's parts were used, is
checked. Kandinsky (MoVQ latents, with a prior) for 06; Karlo (64 px pixels, text projection, prior) for 07.
"""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from test_one_line_changed import output_text  # pytest puts this folder on sys.path (rootdir-less test files)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CASES = {"06_unclip_inversion": ("kandinsky-2-2", "KandinskyDecoder"), "07_unclip_prior": ("karlo", "KarloPrior")}


def on_a_stack(nb, name: str):
    changed = nbformat.from_dict(nb)
    first = next(c for c in changed.cells if c.cell_type == "code")
    lines = first.source.splitlines()
    hits = [i for i, ln in enumerate(lines) if ln.startswith("clip = load_clip()")]
    assert len(hits) == 1
    lines[hits[0]] = (f"from clipspace.unclip.stacks import tiny_stack; stack = tiny_stack({name!r}, clip=load_clip()); "
                      "clip = stack.clip")
    first.source = "\n".join(lines)
    return changed


@pytest.mark.parametrize("stem", sorted(CASES))
def test_notebook_runs_on_a_stack_through_its_first_cell(stem, monkeypatch):
    name, part = CASES[stem]
    nb = on_a_stack(nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4), name)
    monkeypatch.setenv("CLIPSPACE_FIGURE_DIR", "")
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{stem} stops on a {name} stack:\n{str(e)[-3000:]}")
    text = output_text(nb)
    assert part in text, f"the first cell's repr should show the stack's {part}:\n{text[:2000]}"
    assert "No decoder" not in text and "No prior" not in text and "Traceback" not in text
