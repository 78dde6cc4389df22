"""Real-browser machinery: a JupyterLab server and Debian's Chromium driven by Playwright.

Each pytest process (each xdist worker) that runs a browser test starts one server on a free port, serving a
temporary copy of tutorials/ and notebooks/ (so running cells never touches the committed files), with
PI0LAB_SMOKE=1 and the rest of the current environment, and one headless Chromium. Teardown shuts down the
kernels, the server and the browser. Without Chromium (or Playwright) the tests skip and say how to install
it; `.ci/run` installs it and sets PI0LAB_BROWSER_REQUIRED=1, which turns that skip into a failure.

Notebooks run here are not run a second time by nbmake in the same session (see
`pytest_collection_modifyitems`): the browser run executes every cell in a real kernel as nbmake does, and
also checks what the page shows.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab_browser import (CHROMIUM, CHROMIUM_ARGS, REPO, VIEWPORT, JupyterLab, Notebook, browser_missing_reason,
                         free_port, stop_server, wait_for_server, write_settings)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Drop the nbmake run of every notebook that a browser test of this session runs (when the browser works).

    nbmake items are collected from tutorials/ and notebooks/; a browser test names its notebook with the
    `notebook` mark. Runs last, after -k / -m deselection, so only browser tests that will run count.
    """
    if browser_missing_reason() is not None:
        return
    in_browser = {str(m.args[0]) for item in items for m in item.iter_markers("notebook")}
    dropped = [item for item in items if type(item).__name__ == "NotebookItem"
               and Path(item.path).resolve().is_relative_to(REPO)
               and str(Path(item.path).resolve().relative_to(REPO)) in in_browser]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


def pytest_configure(config):
    config.addinivalue_line("markers", "notebook(path): the browser test runs this notebook (path from the repo root)")


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab serving a copy of tutorials/ and notebooks/ (plus whatever a test writes into `lab.root`)."""
    if reason := browser_missing_reason():
        if os.environ.get("PI0LAB_BROWSER_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    for folder in ("tutorials", "notebooks"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("runs", ".ipynb_checkpoints"))
    write_settings(base / "settings")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PI0LAB_SMOKE": "1", "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces")}
    log = base / "server.log"
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "lab", "--allow-root", "--no-browser", "--ip=127.0.0.1",
             "--ServerApp.token=", "--ServerApp.disable_check_xsrf=True", f"--port={port}",
             "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    playwright = None
    try:
        wait_for_server(url, server, log)
        playwright = sync_playwright().start()
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield JupyterLab(url, root, browser.new_context(viewport=VIEWPORT), log)
        browser.close()
    finally:
        if playwright is not None:
            playwright.stop()
        stop_server(url, server)


@pytest.fixture
def open_notebook(lab):
    """open_notebook(path) -> Notebook; every page is closed and every kernel shut down after the test."""
    opened = []

    def open_(path: str) -> Notebook:
        opened.append(lab.open(path))
        return opened[-1]

    yield open_
    for notebook in opened:
        notebook.close()
    lab.shutdown_kernels()
