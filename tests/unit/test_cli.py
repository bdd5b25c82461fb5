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


# --- doctor: exit codes, and running where torch/torchvision are broken -----------------------
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def test_advisory_findings_alone_exit_3_and_a_broken_install_exits_1(capsys):
    advisory = {**GOOD, "chromium": None}  # works; figures save as HTML only
    broken = {**advisory, "torchvision_import_error": "RuntimeError: operator torchvision::nms does not exist"}
    assert doctor.exit_code(doctor.diagnose(GOOD)) == doctor.EXIT_OK == 0
    assert doctor.exit_code(doctor.diagnose(advisory)) == doctor.EXIT_ADVISORY == 3
    assert doctor.exit_code(doctor.diagnose(broken)) == doctor.EXIT_BROKEN == 1
    assert doctor.main(GOOD) == 0 and "No known problems." in capsys.readouterr().out
    assert doctor.main(advisory) == 3
    out = capsys.readouterr().out
    assert "NOTE: kaleido found no Chrome/Chromium" in out and "PROBLEM:" not in out
    assert doctor.main(broken) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: torchvision 0.29.2 does not work with torch" in out and "NOTE: kaleido found no Chrome" in out
    assert {p.advisory for p in doctor.diagnose({**GOOD, "kaleido": None})} == {True}
    assert {p.advisory for p in doctor.diagnose({**GOOD, "jupyter_on_path": "/usr/bin/jupyter"})} == {True}
    assert {p.advisory for p in doctor.diagnose({**GOOD, "anywidget": None})} == {False}


def test_cli_doctor_exit_code_follows_the_findings_here(capsys):
    rc = main(["doctor"])
    out = capsys.readouterr().out
    expected = doctor.exit_code(doctor.diagnose(doctor.collect()))
    assert rc == expected
    assert ("PROBLEM:" in out) == (rc == 1) and ("No known problems." in out) == (rc == 0)


def test_help_documents_the_doctor_exit_codes(capsys):
    for argv in (["--help"], ["doctor", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert "0 no known problems" in text and "1 broken install" in text and "3 advisory findings only" in text
    assert "3" in doctor.__doc__ and "advisory" in doctor.__doc__


def _python(args, tmp_path, pythonpath=(), **kw):
    import os
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), str(REPO)])}
    return subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300, **kw)


def test_doctor_runs_and_names_a_broken_torchvision(tmp_path):
    fake = tmp_path / "fake"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n')
    r = _python(["-m", "clipspace", "doctor"], tmp_path, pythonpath=[fake])
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode == doctor.EXIT_BROKEN, r.stdout + r.stderr
    assert "PROBLEM: torchvision" in r.stdout and "torchvision::nms does not exist" in r.stdout
    assert "fix: pip install --force-reinstall torch torchvision" in r.stdout


def test_cli_and_doctor_import_nothing_heavy(tmp_path):
    code = ("import sys, clipspace, clipspace.cli, clipspace.doctor, clipspace.notebook.tour\n"
            "clipspace.cli.build_parser()\n"
            "heavy = {'torch', 'torchvision', 'open_clip', 'numpy', 'PIL', 'nbformat', 'nbclient', 'sklearn'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    r = _python(["-c", code], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# --- tour: refuses an unusable --out before running anything -------------------------------------
def _sources(tmp_path):
    src = tmp_path / "nbs"
    src.mkdir()
    marker = tmp_path / "ran.txt"
    _notebook(src / "a.ipynb", f"open({str(marker)!r}, 'w').write('ran')")
    return src, marker


@pytest.mark.parametrize("case", ["existing file", "below a file", "the notebooks folder", "inside the notebooks",
                                  "containing the notebooks"])
def test_tour_refuses_an_unusable_out_dir_and_runs_nothing(tmp_path, capsys, case):
    src, marker = _sources(tmp_path)
    before = (src / "a.ipynb").read_bytes()
    (tmp_path / "file").write_text("x")
    out = {"existing file": tmp_path / "file", "below a file": tmp_path / "file" / "tour",
           "the notebooks folder": src, "inside the notebooks": src / "build",
           "containing the notebooks": tmp_path}[case]
    rc = main(["tour", "--out", str(out), "--notebooks", str(src), "--timeout", "60"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("clipspace tour: --out") and err.count("\n") == 1, err
    assert not marker.exists(), "no notebook was run"
    assert (src / "a.ipynb").read_bytes() == before and sorted(p.name for p in src.iterdir()) == ["a.ipynb"]
    assert (tmp_path / "file").read_text() == "x"


def test_tour_refuses_a_read_only_out_dir(tmp_path, capsys):
    import os

    src, marker = _sources(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("this user (root?) can write in a read-only folder; the case is covered by os.access")
        for out in (ro, ro / "tour"):
            assert main(["tour", "--out", str(out), "--notebooks", str(src)]) == 2
            err = capsys.readouterr().err
            assert "permission denied" in err and err.count("\n") == 1
        assert not marker.exists()
    finally:
        ro.chmod(0o755)


def test_tour_without_the_notebook_tools_says_what_to_install(tmp_path):
    src, marker = _sources(tmp_path)
    code = ("import sys\n"
            "sys.modules['nbformat'] = sys.modules['nbclient'] = None  # as if not installed\n"
            "from clipspace.cli import main\n"
            f"sys.exit(main(['tour', '--out', {str(tmp_path / 'o')!r}, '--notebooks', {str(src)!r}]))")
    r = _python(["-c", code], tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "pip install 'clipspace[notebooks]'" in r.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_notebook_outputs_without_nbformat_says_what_to_install(tmp_path):
    nb = tmp_path / "x.ipynb"
    _notebook(nb, "1")
    code = ("import sys\nsys.modules['nbformat'] = None\n"
            "from clipspace.notebook.outputs import main\n"
            f"sys.exit(main(['strip', '--check', {str(nb)!r}]))")
    r = _python(["-c", code], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pip install 'clipspace[notebooks]'" in r.stderr
