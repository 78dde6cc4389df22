"""Drive JupyterLab in Debian's Chromium with Playwright: start a server, open a notebook, run it, read its page.

Used by the fixtures in conftest.py; the tests read the page through `Notebook`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "build" / "browser"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# JupyterLab >= 4.2 renders only cells near the viewport; "none" renders them all, so the DOM holds every output.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                          "checkForUpdates": False},
}
SERVER_START_TIMEOUT_S = 120
VIEWPORT = {"width": 1280, "height": 1000}
# The marks of an error in an output area: a Python traceback (IPython's and the interpreter's both say it)
# and ipywidgets' message for a widget the page could not draw.
ERROR_MARKS = ("Traceback (most recent call last)", "Error displaying widget")


def browser_missing_reason() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser tests need Playwright: pip install -e '.[test]'"
    if not Path(CHROMIUM).is_file():
        return ("the browser tests need Debian's Chromium at /usr/bin/chromium: sudo apt-get install chromium "
                "(scripts/setup.sh installs it when run as root)")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class JupyterLab:
    """A running JupyterLab server (serving `root`) and a Chromium browser context (one HTTP cache for all
    pages, so JupyterLab's scripts load once)."""

    url: str
    root: Path
    context: object  # playwright BrowserContext
    log: Path

    def open(self, path: str) -> Notebook:
        """Open the notebook at `path` (relative to `root`) in a new page, in a workspace of its own."""
        page = self.context.new_page()
        workspace = re.sub(r"[^A-Za-z0-9]+", "-", path)
        page.goto(f"{self.url}/lab/workspaces/{workspace}/tree/{path}")
        notebook = Notebook(page, path)
        notebook.wait_for_idle_kernel()
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").click()  # fold the file browser away
        return notebook

    def shutdown_kernels(self) -> None:
        """End every kernel session (a notebook's background threads die with its kernel)."""
        for session in _get_json(f"{self.url}/api/sessions"):
            request = urllib.request.Request(f"{self.url}/api/sessions/{session['id']}", method="DELETE")
            urllib.request.urlopen(request, timeout=30).close()


class Notebook:
    """One notebook open in JupyterLab: run its cells, read its outputs, save screenshots."""

    def __init__(self, page, path: str):
        self.page = page
        self.path = path

    def wait_for_idle_kernel(self, timeout_s: float = 120) -> None:
        """Wait until the notebook's kernel is started and idle. The toolbar's execution indicator says idle
        already while the status bar still says "No Kernel | Initializing", so both are read."""
        self.page.wait_for_function(
            "() => document.querySelector('.jp-Notebook-ExecutionIndicator')?.dataset.status === 'idle'"
            " && [...document.querySelectorAll('#jp-main-statusbar .jp-StatusBar-TextItem')]"
            ".some(e => / \\| Idle$/.test(e.textContent) && !e.textContent.startsWith('No Kernel'))",
            timeout=timeout_s * 1000)

    def run_all(self, start_timeout_s: float = 60) -> None:
        """Run -> Run All Cells, from the menu bar; returns once the first code cell has started."""
        self.page.locator(".lm-MenuBar-item", has_text="Run").click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        deadline = time.monotonic() + start_timeout_s
        while self.prompts()[:1] == ["[ ]:"]:
            if time.monotonic() > deadline:
                self.screenshot("not-started")
                raise TimeoutError(f"{self.path}: Run All Cells did not start the first cell in {start_timeout_s:.0f} s")
            time.sleep(0.2)

    def prompts(self) -> list[str]:
        """The input prompts of the code cells: '[3]:' ran, '[*]:' running or queued, '[ ]:' not run."""
        return self.page.eval_on_selector_all(".jp-CodeCell .jp-InputArea-prompt", "els => els.map(e => e.textContent)")

    def wait_until_run(self, timeout_s: float = 600) -> None:
        """Wait until no cell is running or queued (after `run_all`: all ran, or the run stopped at an error)."""
        deadline = time.monotonic() + timeout_s
        while True:
            prompts = self.prompts()
            if "[*]:" not in prompts:
                return
            if time.monotonic() > deadline:
                self.screenshot("timeout")
                raise TimeoutError(f"{self.path}: cells still running after {timeout_s:.0f} s; prompts {prompts}")
            time.sleep(0.5)

    def errors(self) -> list[str]:
        """The text of every output that shows an error."""
        texts = self.page.eval_on_selector_all(".jp-OutputArea-output", "els => els.map(e => e.innerText)")
        return [text for text in texts if any(mark in text for mark in ERROR_MARKS)]

    def run_and_check(self, timeout_s: float = 600) -> None:
        """Run all cells and fail with the first error's text if any output shows one or a cell did not run."""
        self.run_all()
        self.wait_until_run(timeout_s)
        errors, prompts = self.errors(), self.prompts()
        if errors or any(not re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            self.screenshot("error")
            raise AssertionError(f"{self.path}: {len(errors)} error output(s); prompts {prompts}\n"
                                 + (errors[0] if errors else ""))

    def text(self, selector: str) -> str:
        """The text of the last element matching `selector` ('' if none)."""
        return self.page.evaluate("s => { const e = [...document.querySelectorAll(s)].pop(); "
                                  "return e ? e.innerText : ''; }", selector)

    def wait_for_text(self, selector: str, word: str, timeout_s: float) -> str:
        """Poll the last element matching `selector` until its text contains `word`; return the text."""
        deadline = time.monotonic() + timeout_s
        while word not in (text := self.text(selector)):
            if time.monotonic() > deadline:
                self.screenshot(f"no-{word}")
                raise TimeoutError(f"{self.path}: {selector} still says {text!r} after {timeout_s:.0f} s, not {word!r}")
            time.sleep(0.5)
        return text

    def screenshot(self, label: str) -> Path:
        """The whole notebook, top to bottom: the viewport grows to the notebook's height (at most 12000 px)."""
        height = self.page.evaluate("() => Math.max(...[...document.querySelectorAll('.jp-WindowedPanel-outer')]"
                                    ".map(e => e.scrollHeight), 1000)")
        self.page.set_viewport_size({"width": VIEWPORT["width"], "height": min(height + 200, 12000)})
        self.page.evaluate("() => new Promise(r => requestAnimationFrame(() => { "
                           "document.querySelectorAll('.jp-WindowedPanel-outer').forEach(e => e.scrollTop = 0); "
                           "requestAnimationFrame(r); }))")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{Path(self.path).stem}-{label}.png"
        self.page.screenshot(path=path)
        self.page.set_viewport_size(VIEWPORT)
        return path

    def close(self) -> None:
        self.page.close()


def write_settings(settings_dir: Path) -> None:
    for name, values in LAB_SETTINGS.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            _get_json(f"{url}/api/status")
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start at {url}; its log:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)


def stop_server(url: str, process: subprocess.Popen) -> None:
    """Ask the server to shut down (it ends its kernels); kill its process group if it does not exit."""
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/shutdown", method="POST"), timeout=30).close()
        process.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
