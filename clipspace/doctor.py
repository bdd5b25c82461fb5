"""`clipspace doctor`: the versions that matter, and the known ways they fail to work together.

Facts are gathered once into a plain dict (`collect()`); each rule is a function of that dict
returning the problems it sees, so the rules are tested with hand-written dicts of versions.
Add a rule by appending a function to RULES.

Exit codes of `clipspace doctor` (also in `clipspace doctor --help`):
    0  no known problems
    1  a broken install: something clipspace needs does not work (missing or mismatched packages,
       torchvision that does not load with this torch, widgets that will not show, ...)
    3  advisory findings only: clipspace works, with a limitation (e.g. no Chrome/Chromium, so
       figures save as HTML but not PNG/SVG). (2 is left to argparse's usage errors.)

This module imports nothing heavy at module level (no torch, torchvision, open_clip, numpy, PIL):
the doctor must run in exactly the environments where those fail to import. They are imported
only inside `collect()`, each guarded, and a failure becomes a fact the rules report.
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from packaging.version import InvalidVersion, Version

EXIT_OK, EXIT_BROKEN, EXIT_ADVISORY = 0, 1, 3
EXIT_CODES_HELP = (f"exit status: {EXIT_OK} no known problems; {EXIT_BROKEN} broken install (a PROBLEM line); "
                   f"{EXIT_ADVISORY} advisory findings only (NOTE lines: clipspace works, with a limitation)")

# distribution name -> what it is for (printed next to its version)
PACKAGES = {
    "torch": "tensors", "torchvision": "image transforms (open_clip needs it)", "open_clip_torch": "CLIP models",
    "diffusers": "unCLIP decoder", "jupyterlab": "the notebook app", "ipywidgets": "sliders and buttons",
    "jupyterlab_widgets": "ipywidgets' JupyterLab half", "widgetsnbextension": "ipywidgets' classic-notebook half",
    "plotly": "figures", "anywidget": "plotly FigureWidget (plotly >= 6)", "kaleido": "PNG/SVG export of plotly figures",
    "choreographer": "kaleido's browser driver", "ipykernel": "the Python kernel", "nbval": "notebook tests",
    "playwright": "browser test",
}
REQUIRED = ("torch", "torchvision", "open_clip_torch", "diffusers", "jupyterlab", "ipywidgets",
            "jupyterlab_widgets", "plotly", "anywidget", "ipykernel")


@dataclass(frozen=True)
class Problem:
    what: str  # one line: what is wrong
    fix: str  # the command or step that fixes it
    ref: str = ""  # an upstream issue that explains it
    advisory: bool = False  # True: clipspace works, with a limitation (exit 3 when only these are found)

    def __str__(self) -> str:
        return f"{self.what}\n    fix: {self.fix}" + (f"\n    see: {self.ref}" if self.ref else "")


# --- facts ---------------------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_error(module: str) -> str | None:
    try:
        __import__(module)
    except Exception as e:  # noqa: BLE001 (any failure is the fact we report)
        return f"{type(e).__name__}: {e}"
    return None


def _find_chrome() -> str | None:
    """figures.find_chrome, guarded: figures imports PIL, which may be the broken part."""
    try:
        from clipspace.figures import find_chrome
    except Exception:  # noqa: BLE001 (figures (PIL) does not import: search PATH only)
        names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
        env = os.environ.get("BROWSER_PATH")
        if env:
            return env if os.path.isfile(env) and os.access(env, os.X_OK) else None
        return next((found for name in names if (found := shutil.which(name))), None)
    try:
        return find_chrome()
    except Exception:  # noqa: BLE001
        return None


def collect() -> dict:
    """Everything the rules look at: versions (None = not installed), import errors, paths.

    Heavy packages are imported here only, each inside a guard: a failing import is a fact."""
    labext = Path(sys.prefix) / "share" / "jupyter" / "labextensions"
    facts = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sys_prefix": sys.prefix,
        **{dist: _version(dist) for dist in PACKAGES},
        "chromium": _find_chrome(),
        "jupyter_on_path": shutil.which("jupyter"),
        "labextensions": sorted(str(p.parent.relative_to(labext)) for p in labext.glob("**/package.json")
                                if "node_modules" not in p.parts) if labext.is_dir() else [],
    }
    for module in ("torch", "torchvision", "open_clip"):
        if facts.get({"open_clip": "open_clip_torch"}.get(module, module)):
            facts[f"{module}_import_error"] = _import_error(module)
    if facts["torch"] and not facts.get("torch_import_error"):
        try:
            import torch

            facts["torch_cuda"] = torch.version.cuda
            facts["cuda_available"] = torch.cuda.is_available()
        except Exception as e:  # noqa: BLE001 (a torch that imports but cannot query CUDA: report it)
            facts["torch_cuda"], facts["cuda_available"] = None, f"unknown ({type(e).__name__}: {e})"
    return facts


# --- rules ---------------------------------------------------------------------------------------
def _v(facts: dict, dist: str) -> Version | None:
    try:
        return Version(facts[dist]) if facts.get(dist) else None
    except InvalidVersion:
        return None


def missing_packages(f: dict) -> list[Problem]:
    missing = [d for d in REQUIRED if not f.get(d)]
    return [Problem(f"not installed: {', '.join(missing)}", "make lab (installs the lock from a clipspace checkout), or pip install 'clipspace[notebooks]'")] if missing else []


def python_too_old(f: dict) -> list[Problem]:
    v = Version(f["python"]) if f.get("python") else None
    return [Problem(f"Python {v} is too old; clipspace needs 3.10 or later", "use Python >= 3.10")] if v and v < Version("3.10") else []


def widgets_frontend_mismatch(f: dict) -> list[Problem]:
    """ipywidgets N needs the front-end package of the same generation, where the server runs."""
    ipw, jlw, wnb = _v(f, "ipywidgets"), _v(f, "jupyterlab_widgets"), _v(f, "widgetsnbextension")
    if ipw is None:
        return []
    want_jlw, want_wnb = {8: (3, 4), 7: (1, 3)}.get(ipw.major, (None, None))
    out = []
    if want_jlw and (jlw is None or jlw.major != want_jlw):
        out.append(Problem(
            f"ipywidgets {ipw} needs jupyterlab_widgets {want_jlw}.x, found {jlw or 'none'}: sliders show as "
            "'Error displaying widget' or as plain text",
            f"pip install 'ipywidgets=={ipw.major}.*' 'jupyterlab_widgets=={want_jlw}.*' in the environment "
            "that runs `jupyter lab`, then restart the server and reload the page",
            "https://github.com/jupyter-widgets/ipywidgets/issues/3823"))
    if want_wnb and wnb is not None and wnb.major != want_wnb:
        out.append(Problem(f"ipywidgets {ipw} needs widgetsnbextension {want_wnb}.x, found {wnb} (classic Notebook)",
                           f"pip install 'widgetsnbextension=={want_wnb}.*'",
                           "https://github.com/jupyter-widgets/ipywidgets/issues/3823"))
    if jlw is not None and f.get("labextensions") and "@jupyter-widgets/jupyterlab-manager" not in f["labextensions"]:
        out.append(Problem("jupyterlab_widgets is installed but its lab extension is not in this environment",
                           "pip install --force-reinstall jupyterlab_widgets"))
    return out


def figurewidget_needs_anywidget(f: dict) -> list[Problem]:
    plotly = _v(f, "plotly")
    if plotly is None or plotly.major < 6:
        return []
    if not f.get("anywidget"):
        return [Problem(f"plotly {plotly} draws FigureWidget through anywidget, which is not installed: "
                        "interactive figures will not appear", "pip install anywidget",
                        "https://github.com/plotly/plotly.py/issues/2508")]
    if f.get("labextensions") and "anywidget" not in f["labextensions"]:
        return [Problem("anywidget is installed but its lab extension is not in this environment",
                        "pip install --force-reinstall anywidget, then restart jupyter lab")]
    return []


def jupyter_from_another_env(f: dict) -> list[Problem]:
    jup, prefix = f.get("jupyter_on_path"), f.get("sys_prefix")
    if not jup or not prefix or Path(jup).resolve().is_relative_to(Path(prefix).resolve()):
        return []
    return [Problem(f"`jupyter` on PATH ({jup}) is not from this environment ({prefix}); a server started from "
                    "elsewhere will not see this environment's widget extensions",
                    f"start the server with {Path(prefix) / 'bin' / 'jupyter'} lab (or `make lab`)",
                    "https://github.com/jupyter-widgets/ipywidgets/issues/3823", advisory=True)]


def torch_torchvision_mismatch(f: dict) -> list[Problem]:
    err = f.get("torchvision_import_error") or ""
    local = lambda d: (f.get(d) or "").partition("+")[2]  # noqa: E731 ("cpu", "cu121", or "")
    if "nms" in err or "libtorch_cuda" in err or "undefined symbol" in err:
        return [Problem(f"torchvision {f.get('torchvision')} does not work with torch {f.get('torch')} ({err.splitlines()[0]}): "
                        "a torch wheel was installed alone (often a CPU-only build)",
                        "pip install --force-reinstall torch torchvision  (together, from the same index)")]
    if f.get("torch") and f.get("torchvision") and local("torch") != local("torchvision"):
        return [Problem(f"torch {f['torch']} and torchvision {f['torchvision']} come from different builds",
                        "pip install --force-reinstall torch torchvision  (together, from the same index)")]
    if err:
        return [Problem(f"import torchvision fails: {err.splitlines()[0]}", "pip install --force-reinstall torch torchvision")]
    return []


def kaleido_without_chrome(f: dict) -> list[Problem]:
    kal = _v(f, "kaleido")
    if kal is None:
        return [Problem("kaleido is not installed: figures save as HTML only", "pip install 'kaleido>=1'",
                        advisory=True)]
    if kal.major >= 1 and not f.get("chromium"):
        return [Problem("kaleido found no Chrome/Chromium: save_figure writes HTML only (PNG/SVG skipped)",
                        "sudo apt-get install chromium (Debian/Ubuntu), or `plotly_get_chrome` where downloads are "
                        "allowed, or set BROWSER_PATH to a chrome binary", advisory=True)]
    if kal.major < 1 and (_v(f, "plotly") or Version("0")) >= Version("6.1"):
        return [Problem(f"kaleido {kal} is the old, unsupported engine for plotly {f['plotly']}", "pip install 'kaleido>=1'",
                        advisory=True)]
    return []


RULES: list[Callable[[dict], list[Problem]]] = [
    missing_packages, python_too_old, widgets_frontend_mismatch, figurewidget_needs_anywidget,
    jupyter_from_another_env, torch_torchvision_mismatch, kaleido_without_chrome,
]


def diagnose(facts: dict, rules=RULES) -> list[Problem]:
    return [p for rule in rules for p in rule(facts)]


def exit_code(problems: list[Problem]) -> int:
    """EXIT_OK without problems, EXIT_ADVISORY when every one is advisory, else EXIT_BROKEN."""
    if not problems:
        return EXIT_OK
    return EXIT_ADVISORY if all(p.advisory for p in problems) else EXIT_BROKEN


def report(facts: dict, problems: list[Problem]) -> str:
    row = lambda name, value, why: f"{name:<19}{value:<14} {why}"  # noqa: E731
    lines = [row("python", facts.get("python"), facts.get("sys_prefix"))]
    lines += [row(dist, facts.get(dist) or "not installed", why) for dist, why in PACKAGES.items()]
    lines.append(row("chromium", facts.get("chromium") or "not found", "kaleido export, browser test"))
    if "cuda_available" in facts:
        lines.append(row("torch CUDA", str(facts.get("torch_cuda")), f"GPU available: {facts['cuda_available']}"))
    lines.append("")
    lines += [f"PROBLEM: {p}" for p in problems if not p.advisory]
    lines += [f"NOTE: {p}" for p in problems if p.advisory]
    if not problems:
        lines.append("No known problems.")
    elif all(p.advisory for p in problems):
        lines.append("No broken parts; the notes above are limitations (exit status 3).")
    return "\n".join(lines)


def main(facts: dict | None = None) -> int:
    """Print the report; return the exit status (EXIT_OK, EXIT_BROKEN or EXIT_ADVISORY, see the module
    docstring). `facts` defaults to `collect()` (this environment)."""
    facts = collect() if facts is None else facts
    problems = diagnose(facts)
    print(report(facts, problems))
    return exit_code(problems)
