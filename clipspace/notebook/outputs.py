"""Keep notebooks' stored outputs to the few that tests check.

Policy (docs/notebooks.md): notebooks are stored without outputs (small diffs, nothing stale),
EXCEPT cells marked `# NBVAL_CHECK_OUTPUT`: nbval compares a fresh run against their stored
output, so those keep it. Two commands:

    python -m clipspace.notebook.outputs strip notebooks/*.ipynb            # before committing
    python -m clipspace.notebook.outputs strip --check notebooks/*.ipynb    # CI: fail if not stripped
    python -m clipspace.notebook.outputs record notebooks/02_maps.ipynb     # run, store checked outputs

`record` executes the notebook (in its own folder) `--runs` times (default 2) and refuses to store
anything if a checked cell printed differently between runs, after the same sanitizing nbval does
(notebooks/sanitize.cfg): a checked output must be deterministic.

nbformat and nbclient come with the optional extra `clipspace[notebooks]`: they are imported inside
the functions that need them, and the command says in one line what to install when they are missing.
"""
from __future__ import annotations

import argparse
import configparser
import copy
import re
import sys
from pathlib import Path

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
DEFAULT_SANITIZE = Path(__file__).resolve().parent.parent / "notebooks" / "sanitize.cfg"


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and any(line.strip().startswith(CHECK_MARK) for line in cell.source.splitlines())


def _nbformat():
    try:
        import nbformat
    except ImportError as e:
        raise MissingNotebookTools(f"nbformat is not installed ({e}); pip install 'clipspace[notebooks]'") from None
    return nbformat


class MissingNotebookTools(ImportError):
    """nbformat/nbclient are missing: they come with `pip install 'clipspace[notebooks]'`."""


def strip(nb: "nbformat.NotebookNode") -> "nbformat.NotebookNode":
    """A copy with outputs and execution counts removed, except the outputs of checked cells."""
    nb = copy.deepcopy(nb)
    nb.metadata.pop("widgets", None)  # widget state of the last run: large and stale
    ordinal = 0
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps
        if cell.cell_type != "code":
            continue
        ordinal += 1
        if not is_checked(cell) or not cell.outputs:
            cell.outputs, cell.execution_count = [], None
            continue
        # nbval refuses stored outputs of a cell that looks unrun (execution_count None), so a checked
        # cell keeps a count: its place among code cells, the same on every run, so diffs stay empty
        cell.execution_count = ordinal
        for out in cell.outputs:
            if "execution_count" in out:
                out.execution_count = ordinal
    return nb


def load_sanitizers(path: str | Path | None = DEFAULT_SANITIZE) -> list[tuple[str, str]]:
    """(regex, replacement) pairs from an nbval sanitize file (sections with `regex:` and `replace:`)."""
    if path is None or not Path(path).exists():
        return []
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(path)
    return [(cfg[s]["regex"], cfg[s]["replace"]) for s in cfg.sections()]


def checked_text(nb, sanitizers=()) -> list[tuple[int, str]]:
    """(cell index, sanitized text of its outputs) for every checked cell: what nbval compares."""
    result = []
    for i, cell in enumerate(nb.cells):
        if not is_checked(cell):
            continue
        parts = []
        for out in cell.outputs:
            if out.output_type == "stream":
                parts.append(f"{out.name}: {out.text}")
            elif out.output_type in ("execute_result", "display_data"):
                parts.extend(f"{k}: {v}" for k, v in sorted(out.data.items())
                             if k not in ("image/png", "image/jpeg", "application/vnd.jupyter.widget-view+json"))
            elif out.output_type == "error":
                parts.append(f"error: {out.ename}: {out.evalue}")
        text = "\n".join(parts)
        for regex, replace in sanitizers:
            text = re.sub(regex, replace, text)
        result.append((i, text))
    return result


def execute(nb, cwd: Path, timeout: int = 600, kernel_name: str = "python3"):
    """Run a copy of `nb` top to bottom in `cwd`; raises nbclient's CellExecutionError naming the cell."""
    try:
        from nbclient import NotebookClient
    except ImportError as e:
        raise MissingNotebookTools(f"nbclient is not installed ({e}); pip install 'clipspace[notebooks]'") from None

    nb = copy.deepcopy(nb)
    NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


class NondeterministicOutput(RuntimeError):
    pass


def record(path: str | Path, runs: int = 2, timeout: int = 600, sanitize: str | Path | None = DEFAULT_SANITIZE) -> list[int]:
    """Execute the notebook `runs` times; store the checked cells' outputs (only those). Returns their indices."""
    path = Path(path)
    source = _nbformat().read(path, as_version=4)
    sanitizers = load_sanitizers(sanitize)
    executed = [execute(source, path.parent, timeout) for _ in range(max(1, runs))]
    first = checked_text(executed[0], sanitizers)
    if not first:
        print(f"{path}: no cell is marked {CHECK_MARK!r}; nothing to record", file=sys.stderr)
    for k, other in enumerate(executed[1:], start=2):
        for (i, a), (_, b) in zip(first, checked_text(other, sanitizers)):
            if a != b:
                raise NondeterministicOutput(
                    f"{path}: checked cell {i} printed differently in run 1 and run {k}:\n--- run 1\n{a}\n--- run {k}\n{b}\n"
                    "Seed it, round the numbers, or add a pattern to notebooks/sanitize.cfg.")
    for cell, ran in zip(source.cells, executed[0].cells):
        if is_checked(cell):
            cell.outputs = ran.outputs
    _write(path, strip(source))
    return [i for i, _ in first]


def _write(path: Path, nb) -> None:
    from clipspace.cache import write_atomic

    write_atomic(path, _nbformat().writes(nb) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m clipspace.notebook.outputs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("strip", help="remove outputs except those of # NBVAL_CHECK_OUTPUT cells")
    s.add_argument("notebooks", nargs="+", type=Path)
    s.add_argument("--check", action="store_true", help="change nothing; exit 1 if a notebook is not stripped")
    r = sub.add_parser("record", help="execute, then store the outputs of checked cells only")
    r.add_argument("notebooks", nargs="+", type=Path)
    r.add_argument("--runs", type=int, default=2, help="runs that must agree on checked outputs (default 2)")
    r.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    r.add_argument("--sanitize", type=Path, default=DEFAULT_SANITIZE)
    args = ap.parse_args(argv)

    for p in args.notebooks:
        if not p.is_file():
            ap.error(f"{p}: no such notebook")
    try:
        nbformat = _nbformat()
        if args.command == "record":
            from nbclient.exceptions import CellExecutionError
    except ImportError as e:
        msg = str(e) if isinstance(e, MissingNotebookTools) else f"nbclient is not installed ({e}); pip install 'clipspace[notebooks]'"
        print(f"{ap.prog}: {msg}", file=sys.stderr)
        return 2
    status = 0
    for p in args.notebooks:
        if args.command == "strip":
            nb = nbformat.read(p, as_version=4)
            stripped = strip(nb)
            missing = [i for i, c in enumerate(stripped.cells) if is_checked(c) and not c.outputs]
            if missing:
                print(f"{p}: checked cells {missing} have no stored output; nbval will fail on them. "
                      f"Run: python -m clipspace.notebook.outputs record {p}", file=sys.stderr)
            if stripped != nb:
                if args.check:
                    print(f"{p}: has outputs outside checked cells; run: python -m clipspace.notebook.outputs strip {p}")
                    status = 1
                else:
                    _write(p, stripped)
                    print(f"{p}: stripped")
        else:
            try:
                cells = record(p, runs=args.runs, timeout=args.timeout, sanitize=args.sanitize)
            except (NondeterministicOutput, CellExecutionError) as e:
                print(f"{p}: {e}", file=sys.stderr)
                status = 1
                continue
            print(f"{p}: recorded outputs of checked cells {cells}")
    return status


if __name__ == "__main__":
    sys.exit(main())
