"""A real browser: JupyterLab + headless Chromium run 00_tour, move its slider, and see the figure change.

What a user does, end to end: the server starts (from this environment, on a free localhost port,
with a token), the notebook opens in Chromium, Run All Cells runs it in a real kernel, the
ipywidgets and the plotly FigureWidget render (the front-end extensions are present and match),
a keypress on the slider reaches the kernel, the guarded callback runs, and the bar chart in the
page changes in place. A screenshot is left in the test's tmp dir, and at $CLIPSPACE_SCREENSHOT
when set (docs/screenshot.png is taken this way).

Chromium is Debian's (`apt-get install chromium`), driven by Playwright through `executable_path`:
Playwright's own browser download is never used. Without playwright or a chromium this test skips
and says why. Everything runs in a temporary copy of the notebook with private Jupyter config,
data, runtime and settings folders, so nothing of the user's is read or written; the server and
its kernel are stopped on teardown even when the test fails.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOK = "00_tour.ipynb"
SCREENSHOT_ENV = "CLIPSPACE_SCREENSHOT"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]
# Generous: on 2 busy cores the kernel's first import of torch alone can take tens of seconds.
SERVER_TIMEOUT_S = 90
RUN_TIMEOUT_S = 300
CHANGE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def chrome() -> str:
    """Debian's chromium (or $CLIPSPACE_CHROMIUM); skips, saying why, when it or playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright; never `playwright install`, "
                    "the test uses the system chromium)")
    from clipspace.figures import find_chrome

    chrome = os.environ.get("CLIPSPACE_CHROMIUM") or find_chrome()
    if not chrome or not os.access(chrome, os.X_OK):
        pytest.skip("no chromium found for the browser test: install it (Debian/Ubuntu: "
                    "`apt-get install chromium`) or set CLIPSPACE_CHROMIUM to a chrome binary")
    return chrome


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (localhost only)
        return r.read()


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except Exception:  # noqa: BLE001 (already gone, or no psutil: the server's own shutdown must do)
        return []


class Lab:
    """A JupyterLab server in `root`, from this Python environment, private to the test."""

    def __init__(self, root: Path, home: Path):
        self.root, self.port, self.token = root, _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = home / "settings" / "@jupyterlab"
        for plugin, values in [
            # no "news?" toast and no update check: nothing may cover the notebook
            ("apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
            # every cell in the DOM and laid out (the default windowing skips off-screen cells)
            ("notebook-extension/tracker", {"windowingMode": "none"}),
        ]:
            path = settings / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
                    "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
                    "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"), "OMP_NUM_THREADS": "1",
                    "PYTHONUNBUFFERED": "1"}
        self.env.pop("CLIPSPACE_FIGURE_DIR", None)  # the tour's export cell must stay a no-op here
        self.log = (home / "jupyter.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.allow_root=True", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
            cwd=root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.log_path = Path(self.log.name)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                _get(f"{self.url}/api/status?token={self.token}")
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer on {self.url} within {SERVER_TIMEOUT_S} s:\n{self.tail()}")

    def wait_kernel_connected(self) -> None:
        """Until the server has a kernel that is idle and has a client (the page) connected."""
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        kernels = []
        while time.monotonic() < deadline:
            try:
                kernels = json.loads(_get(f"{self.url}/api/kernels?token={self.token}"))
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                time.sleep(1)  # a busy server can answer 500 while the kernel starts: ask again
                continue
            if any(k["execution_state"] == "idle" and k.get("connections", 0) > 0 for k in kernels):
                return
            time.sleep(0.5)
        raise TimeoutError(f"no kernel became idle with the page connected within {SERVER_TIMEOUT_S} s: "
                           f"{kernels}\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """Shut down kernels through the API, stop the server, then kill whatever of ours is left."""
        children = _descendants(self.proc.pid)  # kernels run in their own session: not in our group
        if self.proc.poll() is None:
            try:
                for k in json.loads(_get(f"{self.url}/api/kernels?token={self.token}")):
                    req = urllib.request.Request(f"{self.url}/api/kernels/{k['id']}?token={self.token}", method="DELETE")
                    urllib.request.urlopen(req, timeout=10).close()  # noqa: S310
            except Exception:  # noqa: BLE001 (server already unhealthy: the signals below still apply)
                pass
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


@pytest.fixture
def lab(tmp_path, chrome):
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy2(NOTEBOOKS / NOTEBOOK, root / NOTEBOOK)  # the repository's notebook is never opened
    server = Lab(root, tmp_path / "jupyter-home")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def open_and_run_all(page, lab, notebook: str) -> None:
    """Open `notebook` in JupyterLab, wait for its kernel to be up and this page connected to it,
    then Run > Run All Cells, as a user would."""
    page.goto(f"{lab.url}/lab/tree/{notebook}?token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    lab.wait_kernel_connected()
    page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for()
    _run_all(page)


def _run_all(page) -> None:
    """Run > Run All Cells; once more if no cell started (a click can land before the kernel is wired)."""
    for attempt in range(2):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:  # the first code cell's prompt turns from [ ] into [*] or [1]
            page.wait_for_function("() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                                   ".some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))", timeout=30_000)
            return
        except Exception:  # noqa: BLE001 (playwright's TimeoutError)
            if attempt:
                raise


STATE_JS = """() => ({slider: !!document.querySelector('.widget-slider .noUi-handle'),
    plot: !!document.querySelector('.js-plotly-plot'),
    title: document.querySelector('.js-plotly-plot .gtitle')?.textContent ?? null,
    prompts: [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim()).join(' ')})"""


def _show_widgets(page) -> None:
    """Scroll the notebook so the widget panel (slider, picture, figure) is in view, if there is one."""
    page.evaluate("() => document.querySelector('.widget-slider')?.closest('.jp-Cell')"
                  "?.querySelector('.jp-OutputArea')?.scrollIntoView({block: 'center'})")


def _bars(page) -> list[str]:
    """The SVG path of each bar of the plotly figure on the page: their shapes are the bar heights."""
    return page.eval_on_selector_all(".js-plotly-plot .barlayer .point path", "els => els.map(e => e.getAttribute('d'))")


def _title(page) -> str:
    return page.eval_on_selector(".js-plotly-plot .gtitle", "e => e.textContent")


def test_tour_runs_in_jupyterlab_and_the_slider_updates_the_figure(lab, chrome, tmp_path):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "00_tour.png"
    start = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chrome, headless=True, args=CHROME_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(RUN_TIMEOUT_S * 1000)
            open_and_run_all(page, lab, NOTEBOOK)

            try:
                page.wait_for_selector(".widget-slider .noUi-handle")
                page.wait_for_function("() => { const t = document.querySelector('.js-plotly-plot .gtitle');"
                                       " return t && t.textContent.startsWith('scene 0:'); }")
                page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']")
            except PlaywrightTimeout:
                _show_widgets(page)
                page.screenshot(path=str(shot))
                state = page.evaluate(STATE_JS)
                hint = ""
                if state["slider"] and state["plot"] and not state["title"]:
                    hint = ("\nThe slider and the plot rendered but the figure never got its title and bars: the "
                            "kernel's updates did not reach the FigureWidget. With anywidget 0.11 this happens "
                            "when the browser needs more than 2 s to load plotly's 5 MB widget script (a busy "
                            "machine): anywidget then drops every message to that widget.")
                raise AssertionError(f"the notebook did not finish in the browser within {RUN_TIMEOUT_S} s: {state}"
                                     f"{hint}\nscreenshot {shot}\njupyter log:\n{lab.tail()}") from None
            text = page.text_content(".jp-NotebookPanel .jp-Notebook")
            assert "Traceback" not in text and "Error displaying widget" not in text, text[-3000:]
            assert "zero-shot shape accuracy:" in text  # the checked cell ran in this kernel
            before_bars, before_title = _bars(page), _title(page)
            assert len(before_bars) == 6, f"expected one bar per shape, got {before_bars}"

            # move the slider with the keyboard, three steps right: scene 0 -> scene 3
            handle = page.locator(".widget-slider .noUi-handle").first
            handle.scroll_into_view_if_needed()
            handle.focus()
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.wait_for_function("() => document.querySelector('.js-plotly-plot .gtitle')"
                                   ".textContent.startsWith('scene 3:')", timeout=CHANGE_TIMEOUT_S * 1000)
            page.wait_for_function("before => { const d = [...document.querySelectorAll("
                                   "'.js-plotly-plot .barlayer .point path')].map(e => e.getAttribute('d'));"
                                   " return JSON.stringify(d) !== JSON.stringify(before); }", arg=before_bars,
                                   timeout=CHANGE_TIMEOUT_S * 1000)
            after_bars, after_title = _bars(page), _title(page)
            assert page.inner_text(".widget-slider .widget-readout").strip() == "3"
            assert after_title != before_title and after_title.startswith("scene 3:")
            assert len(after_bars) == 6 and after_bars != before_bars
            assert "Traceback" not in page.text_content(".jp-NotebookPanel .jp-Notebook")

            current = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
            if current.count():  # fold the file browser away: the screenshot is about the notebook
                current.first.click()
                page.wait_for_timeout(500)
            _show_widgets(page)
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        dest = Path(os.environ[SCREENSHOT_ENV])
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)
    print(f"browser test: {time.monotonic() - start:.1f} s in the browser; screenshot {shot}")
