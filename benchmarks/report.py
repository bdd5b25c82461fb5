"""What a benchmark run writes: results.json (everything measured) and REPORT.md (tables of it).

A section's result is a plain dict, so the JSON and the report come from one object:

    {"title": "...", "status": "ok" | "not available" | "skipped" | "error",
     "notes": ["..."],                                   # said under the title
     "tables": [{"caption": "...", "columns": [["key", "header"], ...], "rows": [{...}, ...]}],
     "goals": [{"figure": "...", "goal": "≥ 5×", "value": 7.1, "met": True, "why": "..."}]}

Cells: a summary dict (`harness.summarize`) renders as "median [q1–q3]"; floats with three
significant figures; None as "—"; booleans as yes/no.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from pathlib import Path

from clipspace.cache import write_atomic

SPREAD_NOTE = "Cells read median [interquartile range] over the repeats unless a column says otherwise."


# ---------------------------------------------------------------------------------------------
# The machine and the versions
# ---------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def machine_info() -> dict:
    import psutil
    import torch

    from clipspace.embedding import usable_cores

    info = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "logical_cores": os.cpu_count(),
            "usable_cores": usable_cores(),
            "memory_gib": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2 ** 30, 1)}
    return info


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg, dist in (("torch", "torch"), ("open_clip", "open_clip_torch"), ("diffusers", "diffusers"),
                      ("numpy", "numpy"), ("torchvision", "torchvision"), ("scikit-learn", "scikit-learn"),
                      ("umap-learn", "umap-learn"), ("pillow", "pillow"), ("nbclient", "nbclient")):
        try:
            out[pkg] = md.version(dist)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------
# Cells and tables
# ---------------------------------------------------------------------------------------------
def fmt_number(v: float) -> str:
    if v != v:  # NaN
        return "nan"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 0.001:
        return f"{v:.3f}".rstrip("0")
    return f"{v:.2e}"


def fmt_cell(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, dict) and "median" in v:
        if v["median"] is None:
            return "—"
        if v.get("n", 0) > 1 and v.get("q1") is not None:
            return f"{fmt_number(v['median'])} [{fmt_number(v['q1'])}–{fmt_number(v['q3'])}]"
        return fmt_number(v["median"])
    if isinstance(v, float):
        return fmt_number(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_cell(x) for x in v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns, rows) -> str:
    """A GitHub markdown table: `columns` is [[key, header], ...], `rows` a list of dicts."""
    columns = [c if isinstance(c, (list, tuple)) else (c, c) for c in columns]
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt_cell(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def goal_rows(results: dict) -> list[dict]:
    rows = []
    for key, sec in results.get("sections", {}).items():
        for g in sec.get("goals", []):
            row = {"section": sec.get("title", key), **g}
            if row.get("met") is False and not row.get("why"):
                row["why"] = "missed: see the findings at the end"
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def render_section(sec: dict) -> str:
    out = [f"## {sec.get('title', '?')}", ""]
    if sec.get("measured"):
        out += [f"_measured {sec['measured']}_", ""]
    status = sec.get("status", "ok")
    if status != "ok":
        out += [f"**{status}**" + (f": {sec['reason']}" if sec.get("reason") else ""), ""]
    for note in sec.get("notes", []):
        out += [f"- {note}"]
    if sec.get("notes"):
        out.append("")
    for table in sec.get("tables", []):
        if table.get("caption"):
            out += [f"**{table['caption']}**", ""]
        out += [markdown_table(table["columns"], table["rows"]), ""]
        for note in table.get("notes", []):
            out += [f"_{note}_", ""]
    return "\n".join(out)


def render_report(results: dict, findings: str = "") -> str:
    meta = results.get("meta", {})
    m, v = meta.get("machine", {}), meta.get("versions", {})
    out = ["# clipspace benchmarks", "",
           f"Written by `{meta.get('command', 'python -m benchmarks.run')}` on {meta.get('date', '?')} "
           f"in {fmt_number(meta.get('duration_s') or 0.0)} s" + (" (**--quick**: smoke sizes, not figures to quote)"
                                                                  if meta.get("quick") else "") + ".",
           "Every comparison is a ratio of contenders run side by side in one run (interleaved, order rotated "
           "each round, ratio taken within each round); " + SPREAD_NOTE, "",
           "**Machine.** " + ", ".join(f"{k}: {fmt_cell(val)}" for k, val in m.items() if k != "gpu") +
           f"; GPU: {m['gpu']['name'] if m.get('gpu') else 'none'}.", "",
           "**Versions.** " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    if meta.get("notes"):
        out += [f"- {n}" for n in meta["notes"]] + [""]
    goals = goal_rows(results)
    if goals:
        out += ["## Goals", "", markdown_table([["section", "section"], ["figure", "figure"], ["goal", "goal"],
                                                ["value", "measured (the figure named: a median ratio, or a p95)"], ["met", "met"], ["why", "note"]],
                                               goals), ""]
    for sec in results.get("sections", {}).values():
        out.append(render_section(sec))
    if findings.strip():
        out += ["## Findings, fixes and what is left", "", findings.strip(), ""]
    return "\n".join(out).rstrip() + "\n"


def _json_default(o):
    import numpy as np

    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def write_json(obj, path: Path) -> None:
    """Atomic JSON write (a temp file, then os.replace)."""
    write_atomic(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def write_report(results: dict, out_dir: Path, findings: str = "") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(results, out_dir / "results.json")
    md = write_atomic(out_dir / "REPORT.md", render_report(results, findings))
    return out_dir / "results.json", md
