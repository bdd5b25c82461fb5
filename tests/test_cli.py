"""`clipspace doctor` rules on hand-written version dicts, and `clipspace tour` on tiny notebooks."""
import json
import sys

import nbformat
import pytest

from clipspace import doctor
from clipspace.cli import main

GOOD = {
    "python": "3.11.7", "sys_prefix": "/env", "jupyter_on_path": "/env/bin/jupyter",
    "torch": "2.15.0", "torchvision": "0.29.2", "open_clip_torch": "3.3.0", "diffusers": "0.42.1",
    "jupyterlab": "4.6.6", "ipywidgets": "8.1.9", "jupyterlab_widgets": "3.0.17", "widgetsnbextension": "4.0.16",
    "plotly": "7.1.0", "anywidget": "0.11.0", "kaleido": "1.5.0", "choreographer": "1.4.0", "ipykernel": "7.4.0",
    "chromium": "/usr/bin/chromium", "torchvision_import_error": None,
    "labextensions": ["@jupyter-widgets/jupyterlab-manager", "anywidget", "jupyterlab-plotly"],
}


def problems(**changes):
    return doctor.diagnose({**GOOD, **changes})


def test_a_working_environment_has_no_problems():
    assert problems() == []


def test_the_real_environment_is_reported(capsys):
    facts = doctor.collect()
    assert facts["python"] == ".".join(map(str, sys.version_info[:3]))
    assert facts["plotly"] and facts["ipywidgets"]
    text = doctor.report(facts, doctor.diagnose(facts))
    for name in ("torch", "torchvision", "open_clip_torch", "jupyterlab_widgets", "anywidget", "kaleido", "chromium"):
        assert name in text


@pytest.mark.parametrize("changes, expect", [
    (dict(jupyterlab_widgets="1.1.7"), ["jupyterlab_widgets 3.x", "3823"]),
    (dict(jupyterlab_widgets=None), ["found none", "restart the server"]),
    (dict(ipywidgets="7.8.1"), ["needs jupyterlab_widgets 1.x", "widgetsnbextension 3.x"]),
    (dict(widgetsnbextension="3.6.6"), ["widgetsnbextension 4.x"]),
    (dict(anywidget=None), ["anywidget", "pip install anywidget", "2508"]),
    (dict(labextensions=["@jupyter-widgets/jupyterlab-manager"]), ["anywidget is installed but its lab extension"]),
    (dict(torch="2.13.0+cpu", torchvision_import_error="RuntimeError: operator torchvision::nms does not exist"),
     ["does not work with torch 2.13.0+cpu", "torchvision::nms", "together"]),
    (dict(torch="2.5.0+cpu", torchvision="0.20.0+cu121"), ["different builds"]),
    (dict(chromium=None), ["HTML only", "apt-get install chromium", "BROWSER_PATH"]),
    (dict(kaleido="0.2.1", chromium=None), ["old, unsupported engine"]),
    (dict(kaleido=None), ["kaleido is not installed"]),
    (dict(jupyter_on_path="/usr/bin/jupyter"), ["not from this environment", "/env/bin/jupyter lab"]),
    (dict(python="3.9.18"), ["too old"]),
    (dict(open_clip_torch=None, diffusers=None), ["not installed: open_clip_torch, diffusers"]),
])
def test_each_known_incompatibility_is_named_with_its_fix(changes, expect):
    found = problems(**changes)
    assert found, f"{changes} should be a problem"
    text = "\n".join(map(str, found))
    for piece in expect:
        assert piece in text
    assert all(p.fix for p in found), "every problem says how to fix it"


def test_plotly_5_does_not_need_anywidget():
    assert doctor.figurewidget_needs_anywidget({**GOOD, "plotly": "5.24.1", "anywidget": None}) == []
    assert doctor.figurewidget_needs_anywidget({**GOOD, "plotly": "6.0.0", "anywidget": None})


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# test")] + [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_tour_writes_html_and_figures_and_names_the_failing_cell(tmp_path, capsys):
    src = tmp_path / "nbs"
    src.mkdir()
    # the figure cell writes where save_figure would: $CLIPSPACE_FIGURE_DIR (kept free of heavy imports)
    _notebook(src / "a_ok.ipynb",
              "import os, pathlib\nd = pathlib.Path(os.environ['CLIPSPACE_FIGURE_DIR']); d.mkdir(parents=True)\n"
              "(d / 'fig.svg').write_text('<svg/>')",
              "print('marker', 6 * 7)")
    _notebook(src / "b_bad.ipynb", "x = 1", "y = x / 0", "print('never')")
    out = tmp_path / "tour"
    rc = main(["tour", "--out", str(out), "--notebooks", str(src), "--timeout", "120"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "b_bad.ipynb, cell 3 of 4: ZeroDivisionError" in err and "y = x / 0" in err
    assert "a_ok" not in err
    assert "marker 42" in (out / "a_ok.html").read_text()
    assert (out / "figures" / "a_ok" / "fig.svg").read_text() == "<svg/>"
    bad_html = (out / "b_bad.html").read_text()
    assert "ZeroDivisionError" in bad_html, "the partial HTML shows the traceback"
    executed = nbformat.read(out / "b_bad.ipynb", as_version=4)
    assert executed.cells[3].outputs == [], "cells after the failure are not run"
    index = (out / "index.html").read_text()
    assert 'href="a_ok.html"' in index and "figures/a_ok/fig.svg" in index
    assert json.loads((src / "a_ok.ipynb").read_text())["cells"][1]["outputs"] == [], "sources stay untouched"


def test_tour_refuses_unknown_names_and_empty_folders(tmp_path, capsys):
    assert main(["tour", "--out", str(tmp_path / "o"), "--notebooks", str(tmp_path)]) == 2
    assert "no .ipynb files" in capsys.readouterr().err
    _notebook(tmp_path / "00_x.ipynb", "1")
    assert main(["tour", "nope", "--out", str(tmp_path / "o"), "--notebooks", str(tmp_path)]) == 2
    assert "no notebook named ['nope']" in capsys.readouterr().err


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
