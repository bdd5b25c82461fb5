"""The stored-outputs policy: strip all but checked cells; record checked outputs only if deterministic;
and nbval then passes on the recorded notebook and fails when the number changes."""
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from clipspace.notebook.outputs import CHECK_MARK, checked_text, load_sanitizers, main, record, strip

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = ROOT / "notebooks" / "sanitize.cfg"


def _nb(*sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# t")] + [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def _with_outputs(nb):
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.execution_count = i
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"out {i}\n"),
                            nbformat.v4.new_output("execute_result", data={"text/plain": "1"}, execution_count=i)]
            cell.metadata["execution"] = {"iopub.status.idle": "2026-11-21T00:00:00Z"}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return nb


def test_strip_keeps_only_checked_outputs_and_drops_run_noise():
    nb = _with_outputs(_nb("a = 1", f"{CHECK_MARK}\nprint(a)", "  # NBVAL_CHECK_OUTPUT  \nb = 2"))
    s = strip(nb)
    assert s.cells[1].outputs == [] and s.cells[2].outputs and s.cells[3].outputs
    assert [o.text for o in s.cells[2].outputs if o.output_type == "stream"] == ["out 2\n"]
    assert [c.execution_count for c in s.cells[1:]] == [None, 2, 3], "checked cells keep a stable count (nbval needs one)"
    assert [o.get("execution_count") for o in s.cells[2].outputs] == [None, 2]
    assert "widgets" not in s.metadata and all("execution" not in c.metadata for c in s.cells)
    assert nb.cells[1].outputs, "strip returns a copy"
    assert strip(s) == s, "stripping is idempotent"
    nbformat.validate(s)


def test_strip_check_mode_fails_on_unstripped_and_fixes_in_place(tmp_path, capsys):
    p = tmp_path / "n.ipynb"
    nbformat.write(_with_outputs(_nb("1", f"{CHECK_MARK}\n2")), p)
    assert main(["strip", "--check", str(p)]) == 1
    assert main(["strip", str(p)]) == 0
    assert main(["strip", "--check", str(p)]) == 0
    assert nbformat.read(p, as_version=4).cells[2].outputs


def test_strip_warns_about_a_checked_cell_without_output(tmp_path, capsys):
    p = tmp_path / "n.ipynb"
    nbformat.write(_nb(f"{CHECK_MARK}\nprint(1)"), p)
    main(["strip", str(p)])
    assert "record" in capsys.readouterr().err


def test_sanitizers_are_applied_to_checked_text():
    nb = _nb(f"{CHECK_MARK}\nx")
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="took 3.2 s at 0x7f00ab in /a/b/c.py\n")]
    (_, text), = checked_text(nb, load_sanitizers(SANITIZE))
    assert "3.2" not in text and "0x7f00ab" not in text and "/a/b/" not in text


def test_record_stores_checked_outputs_and_nbval_then_checks_them(tmp_path):
    p = tmp_path / "same.ipynb"
    nbformat.write(_nb("import math\nvalue = round(math.pi, 4)", f"{CHECK_MARK}\nprint(value)", "print('not stored')"), p)
    assert record(p, runs=2, sanitize=SANITIZE) == [2]
    nb = nbformat.read(p, as_version=4)
    assert [o.text for o in nb.cells[2].outputs] == ["3.1416\n"] and nb.cells[3].outputs == []

    nb.cells[1].source = "import math\nvalue = round(math.e, 4)"  # the key number changes: nbval must notice
    nbformat.write(nb, tmp_path / "changed.ipynb")
    # one nbval run over both (each pytest start costs seconds): the recorded one passes, the changed one fails
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--nbval-lax",
                          f"--rootdir={tmp_path}", f"--sanitize-with={SANITIZE}", "same.ipynb", "changed.ipynb"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILED changed.ipynb::Cell 1" in run.stdout and "2.7183" in run.stdout, run.stdout
    assert "PASSED same.ipynb::Cell 1" in run.stdout and "FAILED same.ipynb" not in run.stdout


def test_record_refuses_a_nondeterministic_checked_cell(tmp_path, capsys):
    p = tmp_path / "rand.ipynb"
    nbformat.write(_nb(f"{CHECK_MARK}\nimport os\nprint(os.urandom(8).hex())"), p)
    before = p.read_text()
    assert main(["record", "--runs", "2", str(p)]) == 1
    assert "printed differently in run 1 and run 2" in capsys.readouterr().err
    assert p.read_text() == before, "nothing is stored when runs disagree"
