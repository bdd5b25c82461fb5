"""`clipspace tour --out DIR`: run every notebook headless and keep readable copies.

For each notebook (in name order) this executes a copy top to bottom in the notebook's own folder
(so relative paths work as in JupyterLab), with $CLIPSPACE_FIGURE_DIR pointing at
DIR/figures/<notebook>/ so whatever the notebook saves with `save_figure` lands there. It writes
DIR/<notebook>.ipynb (with outputs and widget state), DIR/<notebook>.html (nbconvert), and
DIR/index.html linking them. The notebooks themselves are never modified.

A failing cell does not stop the tour: the partial HTML (with the traceback) is still written, and
the tour ends non-zero naming each failed notebook, cell number and error.

Before anything runs, DIR is checked (`check_out_dir`): it must be a folder clipspace can create
or write, and neither the notebooks folder nor inside it nor containing it, so a tour never
overwrites or mixes with the source notebooks. nbformat/nbclient/nbconvert come with the optional
extra `clipspace[notebooks]`; they are imported inside functions, and `require_notebook_tools()`
says in one line what to install when they are missing.
"""
from __future__ import annotations

import html
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from clipspace.errors import ClipspaceError

NOTEBOOK_TOOLS = ("nbformat", "nbclient", "nbconvert")  # from `pip install 'clipspace[notebooks]'`


def require_notebook_tools() -> None:
    """Raise ClipspaceError (one line: what is missing, what to install) unless the notebook tools import."""
    for module in NOTEBOOK_TOOLS:
        try:
            __import__(module)
        except ImportError as e:
            raise ClipspaceError(f"the notebook tools are not installed ({module}: {e}); "
                                 "pip install 'clipspace[notebooks]'") from None


def check_out_dir(out: str | os.PathLike, notebooks: str | os.PathLike) -> Path:
    """`out` as a Path, if the tour can write there without touching the notebooks; else ClipspaceError.

    Refused: an existing non-folder; a path below a regular file; a folder (or its nearest existing
    parent) this user cannot write; the notebooks folder itself, a folder inside it, or one
    containing it (the tour writes <name>.ipynb copies, which would overwrite or sit among the sources).
    """
    out, src = Path(out), Path(notebooks)
    out_r, src_r = out.resolve(), src.resolve()  # through symlinks: a link to the notebooks is the notebooks
    if out_r == src_r or out_r.is_relative_to(src_r):
        raise ClipspaceError(f"--out {out} is {'the notebooks folder' if out_r == src_r else 'inside the notebooks folder'}"
                             f" {src}: the tour would write its .ipynb copies among (and over) the source "
                             "notebooks; choose a folder outside it, e.g. --out build/tour")
    if src_r.is_relative_to(out_r):
        raise ClipspaceError(f"--out {out} contains the notebooks folder {src}: the tour would write its copies "
                             "around the source notebooks; choose a folder outside it, e.g. --out build/tour")
    if out_r.exists() and not out_r.is_dir():
        raise ClipspaceError(f"--out {out} exists and is not a folder; choose another path")
    existing = next(p for p in (out_r, *out_r.parents) if p.exists())
    if not existing.is_dir():
        raise ClipspaceError(f"--out {out} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ClipspaceError(f"--out {out}: cannot write in {existing} (permission denied); choose another folder")
    return out


@dataclass
class NotebookRun:
    notebook: Path
    html: Path | None = None
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    failed_cell: int | None = None  # index into nb.cells (0-based)
    n_cells: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.failed_cell is None and not self.error

    def describe(self) -> str:
        if self.ok:
            return f"ok      {self.notebook.name} ({self.seconds:.1f} s, {len(self.figures)} figure files)"
        where = f"cell {self.failed_cell + 1} of {self.n_cells}" if self.failed_cell is not None else "setup"
        return f"FAILED  {self.notebook.name}, {where}: {self.error}"


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value  # the kernel is a child process: it inherits this
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _first_line(cell) -> str:
    lines = [ln for ln in cell.source.splitlines() if ln.strip()]
    return lines[0][:80] if lines else ""


def execute_notebook(path: Path, timeout: int = 600, kernel_name: str = "python3",
                     figure_dir: Path | None = None) -> tuple["nbformat.NotebookNode", NotebookRun]:
    """Run `path` cell by cell; return the executed notebook and what happened (never raises for a cell)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    from clipspace.figures import FIGURE_DIR_ENV

    nb = nbformat.read(path, as_version=4)
    run = NotebookRun(notebook=path, n_cells=len(nb.cells))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    start = time.perf_counter()
    with _env(FIGURE_DIR_ENV, str(figure_dir)) if figure_dir else _env("CLIPSPACE_TOUR", "1"):
        try:
            with client.setup_kernel():
                for i, cell in enumerate(nb.cells):
                    run.failed_cell = i
                    client.execute_cell(cell, i)
                run.failed_cell = None
                client.set_widgets_metadata()
        except CellExecutionError as e:
            run.error = f"{e.ename}: {e.evalue}" + (f"  (cell starts: {_first_line(nb.cells[run.failed_cell])!r})"
                                                    if run.failed_cell is not None else "")
        except (CellTimeoutError, DeadKernelError) as e:
            run.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        except Exception as e:  # noqa: BLE001 (no kernel, unreadable notebook: still named, not a crash)
            run.failed_cell = None
            run.error = f"{type(e).__name__}: {e}"
    run.seconds = time.perf_counter() - start
    return nb, run


def to_html(nb: "nbformat.NotebookNode") -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def run_tour(out: str | Path, notebooks: str | Path = "notebooks", names: list[str] | None = None,
             timeout: int = 600, kernel_name: str = "python3", log=print) -> list[NotebookRun]:
    """Execute the notebooks in `notebooks` (or just `names`) and write HTML copies and figures into `out`.

    Raises (before running anything) FileNotFoundError for a missing folder or notebook name, and
    ClipspaceError for an `out` that cannot be used (`check_out_dir`) or missing notebook tools."""
    require_notebook_tools()
    import nbformat

    src, out = Path(notebooks), Path(out)
    if not src.is_dir():
        raise FileNotFoundError(f"notebooks folder {src} does not exist; pass --notebooks DIR")
    paths = sorted(p for p in src.glob("*.ipynb") if not p.name.startswith("."))
    if names:
        wanted = {Path(n).stem for n in names}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            raise FileNotFoundError(f"no notebook named {sorted(unknown)} in {src}; have {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        raise FileNotFoundError(f"no .ipynb files in {src}")
    check_out_dir(out, src)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # what check_out_dir cannot foresee (a full disk, a race)
        raise ClipspaceError(f"--out {out} cannot be created: {e.strerror or e}") from None
    runs = []
    for path in paths:
        figs = (out / "figures" / path.stem).resolve()
        nb, run = execute_notebook(path, timeout, kernel_name, figure_dir=figs)
        nbformat.write(nb, out / f"{path.stem}.ipynb")
        run.html = out / f"{path.stem}.html"
        run.html.write_text(to_html(nb), encoding="utf-8")
        run.figures = sorted(p for p in figs.glob("**/*") if p.is_file() and p.name != "plotly.min.js") if figs.is_dir() else []
        runs.append(run)
        log(run.describe())
    (out / "index.html").write_text(_index(runs, out), encoding="utf-8")
    return runs


def _index(runs: list[NotebookRun], out: Path) -> str:
    items = []
    for r in runs:
        status = "ok" if r.ok else f"<b>failed</b>: {html.escape(r.describe())}"
        figs = "".join(f'<li><a href="{html.escape(str(p.relative_to(out.resolve())))}">{html.escape(p.name)}</a></li>'
                       for p in r.figures)
        items.append(f'<li><a href="{r.html.name}">{html.escape(r.notebook.stem)}</a> ({r.seconds:.1f} s, {status})'
                     + (f"<ul>{figs}</ul>" if figs else "") + "</li>")
    return ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>clipspace tour</title></head><body>"
            "<h1>clipspace tour</h1><ul>" + "".join(items) + "</ul></body></html>\n")
