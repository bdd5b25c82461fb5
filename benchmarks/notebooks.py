"""The notebook suite end to end: every notebooks/*.ipynb executed top to bottom with nbclient, in
a fresh kernel each, with a fresh, empty embedding cache (CLIPSPACE_CACHE_DIR): what `make test`
and a first-time user see. Kernel start-up is inside each notebook's time."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
PER_NOTEBOOK_BUDGET_S = 60.0  # the project's rule: each runs in well under a minute on 2 cores


def execute(path: Path, timeout: int = 600) -> dict:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
        status, error = "ok", ""
    except Exception as e:  # CellExecutionError, timeouts, dead kernels: report, go on with the next
        status, error = "error", f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"[:300]
    return {"notebook": path.name, "seconds": time.perf_counter() - t0, "status": status, "error": error,
            "cells": sum(c.cell_type == "code" for c in nb.cells)}


def run(quick: bool = False) -> dict:
    paths = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    if not paths:
        return {"title": "Notebook suite (nbclient, end to end)", "status": "not available yet",
                "reason": f"no notebooks in {NOTEBOOK_DIR} yet", "notes": [], "tables": []}
    chosen = paths[:1] if quick else paths
    old = os.environ.get("CLIPSPACE_CACHE_DIR")
    rows = []
    with tempfile.TemporaryDirectory(prefix="clipspace-nb-cache-") as d:
        os.environ["CLIPSPACE_CACHE_DIR"] = d  # the kernels inherit it
        try:
            for p in chosen:
                row = execute(p)
                row["met"] = row["status"] == "ok" and row["seconds"] < PER_NOTEBOOK_BUDGET_S
                rows.append(row)
        finally:
            if old is None:
                os.environ.pop("CLIPSPACE_CACHE_DIR", None)
            else:
                os.environ["CLIPSPACE_CACHE_DIR"] = old
    total = sum(r["seconds"] for r in rows)
    rows.append({"notebook": "**total**", "seconds": total, "cells": sum(r["cells"] for r in rows),
                 "status": "ok" if all(r["status"] == "ok" for r in rows) else "errors"})
    goals = [{"figure": f"notebook {r['notebook']}", "goal": f"< {PER_NOTEBOOK_BUDGET_S:.0f} s", "value": r["seconds"],
              "met": r["met"], "why": r["error"]} for r in rows[:-1]]
    notes = [f"{len(chosen)} of {len(paths)} notebooks executed" + (" (--quick: the first only)" if quick else "") +
             "; one run each (cold caches), so no spread."]
    return {"title": "Notebook suite (nbclient, end to end)", "status": "ok", "notes": notes, "goals": goals,
            "tables": [{"caption": "", "columns": [["notebook", "notebook"], ["cells", "code cells"],
                                                   ["seconds", "seconds"], ["status", "status"], ["met", "< 60 s"],
                                                   ["error", "error"]], "rows": rows}]}
