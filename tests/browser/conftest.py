"""JupyterLab in a real, headless Chromium, driven by Playwright for Python.

The fixtures start what a learner starts with ``make lab``:

- ``jupyter_lab``: ``jupyter lab`` on 127.0.0.1, a free port, a random token, ``--no-browser``
  (and ``--allow-root`` as root), with its own temporary config, runtime, data, settings and
  workspace folders, serving a temporary folder. It is shut down (kernels included) when the
  session ends, also when a test failed.
- ``chromium``: the system's Chromium (``executable_path``; Playwright's own browser download is
  not used), headless, networking features off, with an empty temporary profile.
- ``lab``: a fresh browser context on the Lab, wrapped in :class:`LabDriver`, which drives the
  Lab as a learner does (open a notebook, Run All Cells, move a slider, watch the figure redraw).

Every test here is skipped, with the reason, when no ``chromium`` is on PATH or Playwright is not
importable (``make setup`` installs it; ``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest

try:  # the suite skips itself without Playwright
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import Locator, Page, sync_playwright
except ImportError as _err:  # pragma: no cover - depends on the environment
    sync_playwright = None
    PlaywrightError = RuntimeError
    _PLAYWRIGHT_ERROR = f"playwright is not importable ({_err}); `make setup` installs it"
else:
    _PLAYWRIGHT_ERROR = ""

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Chromium switches: no background traffic, no updater, no first-run UI, software rendering.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-gpu",
    "--disable-default-apps",
    "--disable-sync",
    "--metrics-recording-only",
]

#: JupyterLab user settings for the test server: no news or update checks (they would reach
#: the network and pop up a toast over the notebook), the notebook's kernel started without the
#: "Select Kernel" dialog, and every cell kept in the DOM (``windowingMode: none``) so cells
#: below the fold can be inspected.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False,
    },
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none", "autoStartDefaultKernel": True,
    },
}

STDERR_OUTPUT = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'

#: slider-to-redraw times measured by the tests, written in the terminal summary:
#: (notebook, [(slider move, seconds)], target seconds)
REDRAW_TIMES: list[tuple[str, list[tuple[str, float]], float]] = []


def _chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_unavailable_reason() -> str:
    """Why the browser suite cannot run here ('' when it can)."""
    if _PLAYWRIGHT_ERROR:
        return _PLAYWRIGHT_ERROR
    if _chromium_path() is None:
        return "no chromium on PATH (Debian: apt-get install chromium; .ci/run does it)"
    return ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LabServer:
    """A running ``jupyter lab``: its base URL, token and the folder it serves."""

    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen = field(repr=False)

    def api(self, path: str, method: str = "GET", timeout: float = 5.0) -> bytes:
        request = urllib.request.Request(
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def shutdown_kernels(self) -> None:
        """End every session (and its kernel), so one test's kernel does not idle through the next."""
        for session in json.loads(self.api("/api/sessions")):
            self.api(f"/api/sessions/{session['id']}", method="DELETE", timeout=30)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _start_lab(base: Path) -> LabServer:
    root, home = base / "served", base / "home"
    dirs = {name: home / name for name in ("config", "runtime", "data", "settings", "workspaces", "ipython")}
    for path in (root, *dirs.values()):
        path.mkdir(parents=True, exist_ok=True)
    for rel, values in LAB_SETTINGS.items():
        target = dirs["settings"] / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))

    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(dirs["config"]), JUPYTER_RUNTIME_DIR=str(dirs["runtime"]),
        JUPYTER_DATA_DIR=str(dirs["data"]), JUPYTERLAB_SETTINGS_DIR=str(dirs["settings"]),
        JUPYTERLAB_WORKSPACES_DIR=str(dirs["workspaces"]), IPYTHONDIR=str(dirs["ipython"]),
        JUPYTER_PLATFORM_DIRS="1", DEEPLAB_TEST="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1",
    )
    # `make test` sets MPLBACKEND=agg for the unit tests; a kernel under it would show no figures
    env.pop("MPLBACKEND", None)

    port, token = _free_port(), secrets.token_hex(24)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    log = base / "jupyter-lab.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(cmd, env=env, cwd=root, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = LabServer(url=f"http://127.0.0.1:{port}", token=token, root=root, log=log, process=process)

    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {process.returncode}:\n{server.log_tail()}")
        try:
            server.api("/api/status", timeout=2)
            return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            if time.monotonic() > deadline:
                _stop_lab(server)
                raise RuntimeError(f"jupyter lab did not answer on {server.url} within 90 s:\n{server.log_tail()}")
            time.sleep(0.25)


def _stop_lab(server: LabServer) -> None:
    """Ask the server to shut down (it stops its kernels), then make sure its process group is gone."""
    process = server.process
    if process.poll() is None:
        try:
            server.api("/api/shutdown", method="POST")
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:  # kernels run in the server's process group: stop stragglers too
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=5)


@pytest.fixture(scope="session")
def browser_ready() -> str:
    """Path of the Chromium to drive; skips the test (with the reason) when the suite cannot run."""
    reason = browser_unavailable_reason()
    if reason:
        pytest.skip(reason)
    return _chromium_path()


@pytest.fixture(scope="session")
def jupyter_lab(browser_ready, tmp_path_factory) -> LabServer:
    server = _start_lab(tmp_path_factory.mktemp("jupyter-lab"))
    try:
        yield server
    finally:
        _stop_lab(server)


@pytest.fixture(scope="session")
def chromium(browser_ready):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_ready, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def lab(chromium, jupyter_lab, tmp_path) -> LabDriver:
    """A fresh browser context on the Lab; screenshots and the page's console go to tmp_path."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None)
    driver = LabDriver(page=page, server=jupyter_lab, shots=tmp_path, console=console)
    try:
        yield driver
    finally:
        (tmp_path / "console.txt").write_text("\n".join(console))
        try:
            page.screenshot(path=str(tmp_path / "last.png"), full_page=False)
        except PlaywrightError:  # the page may already be gone; the screenshot is only a debugging aid
            pass
        context.close()
        try:
            jupyter_lab.shutdown_kernels()
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass  # a dead server is reported by the test that needs it; _stop_lab cleans up


@pytest.fixture(scope="session")
def redraw_log() -> list[tuple[str, list[tuple[str, float]], float]]:
    """(notebook, [(slider move, seconds)], target seconds) rows, printed in the terminal summary."""
    return REDRAW_TIMES


def pytest_terminal_summary(terminalreporter):
    if not REDRAW_TIMES:
        return
    terminalreporter.write_sep("=", "slider-to-redraw times in Chromium")
    for name, moves, target in REDRAW_TIMES:
        median = statistics.median(seconds for _, seconds in moves)
        verdict = "within" if median < target else "OVER"
        terminalreporter.write_line(f"{name}: median {median:.2f} s ({verdict} the {target} s target)")
        for move, seconds in moves:
            terminalreporter.write_line(f"    {seconds:5.2f} s  {move}")


# --------------------------------------------------------------------------------------------
# driving the Lab


_WATCH_JS = """
(root) => {
  const srcs = () => Array.from(root.querySelectorAll('img')).map(img => img.src);
  const state = {before: new Set(srcs()), t0: null, t1: null, src: null};
  window.__redraw = state;
  const onKey = (event) => { if (state.t1 === null) state.t0 = performance.now(); };
  document.addEventListener('keydown', onKey, true);
  const check = () => {
    if (state.t1 !== null) return;
    for (const img of root.querySelectorAll('img')) {
      if (img.src && !state.before.has(img.src)) {
        const src = img.src;
        img.decode().catch(() => null).then(() => {
          if (state.t1 === null) {
            state.t1 = performance.now(); state.src = src;
            observer.disconnect();
            document.removeEventListener('keydown', onKey, true);
          }
        });
        return;
      }
    }
  };
  const observer = new MutationObserver(check);
  observer.observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
}
"""

_OPENED_JS = """
(nCells) => {
  const cells = document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length;
  const kernel = Array.from(document.querySelectorAll('.jp-StatusBar-TextItem'))
    .some(item => /^(?!No Kernel).+ \\| Idle$/.test(item.textContent.trim()));
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  return cells === nCells && kernel && indicator && indicator.getAttribute('data-status') === 'idle';
}
"""

_ALL_EXECUTED_JS = """
() => {
  const errors = document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]');
  for (const e of errors) { if (/Traceback|Error/.test(e.textContent)) return 'error'; }
  const prompts = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputArea-prompt'));
  if (prompts.length === 0) return false;
  const done = prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
  const indicator = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const idle = !indicator || indicator.getAttribute('data-status') === 'idle';
  return done && idle ? 'done' : false;
}
"""


@dataclass
class LabDriver:
    """What a learner does in JupyterLab, as Playwright calls."""

    page: Page
    server: LabServer
    shots: Path
    console: list[str]

    def copy_notebook(self, source: Path, stop_after: str | None = None) -> str:
        """Copy ``source`` into the served folder, outputs and execution counts cleared.

        With ``stop_after`` the copy ends at the first code cell whose source contains that text
        (the cells after it are not part of what the test looks at). Returns the served name.
        """
        nb = nbformat.read(source, as_version=4)
        cells = []
        for cell in nb.cells:
            if cell.cell_type == "code":
                if not cell.source.strip():
                    continue
                cell.outputs, cell.execution_count = [], None
            cells.append(cell)
            if stop_after is not None and cell.cell_type == "code" and stop_after in cell.source:
                break
        else:
            if stop_after is not None:
                raise ValueError(f"no code cell of {source} contains {stop_after!r}")
        nb.cells = cells
        nb.metadata.pop("widgets", None)
        name = f"{self.shots.name}-{source.name}"
        nbformat.write(nb, self.server.root / name)
        return name

    def open_notebook(self, name: str) -> None:
        """Open a served notebook; wait until all its cells are shown and its kernel is idle."""
        n_cells = len(nbformat.read(self.server.root / name, as_version=4).cells)
        # a workspace of its own, so no tab of an earlier test is restored beside it
        workspace = re.sub(r"[^A-Za-z0-9_-]", "-", self.shots.name)
        self.page.goto(f"{self.server.url}/lab/workspaces/{workspace}/tree/{name}?token={self.server.token}")
        self.page.wait_for_function(_OPENED_JS, arg=n_cells, timeout=90_000, polling=250)

    def run_all_cells(self, timeout_s: float) -> float:
        """Run > Run All Cells, wait until every code cell has run (or one failed); returns seconds."""
        start = time.perf_counter()
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        self.page.wait_for_function(_ALL_EXECUTED_JS, timeout=timeout_s * 1000, polling=250)
        return time.perf_counter() - start

    def error_outputs(self) -> list[str]:
        """Texts of every error-looking output in the notebook (tracebacks, widget render errors)."""
        texts = [t for t in self.page.locator(STDERR_OUTPUT).all_inner_texts() if re.search(r"Traceback|Error", t)]
        texts += [t for t in self.page.locator(".jp-OutputArea-output").all_inner_texts()
                  if "Traceback (most recent call last)" in t or "Error displaying widget" in t]
        return texts

    def assert_no_errors(self) -> None:
        errors = self.error_outputs()
        assert not errors, "error output in the notebook:\n" + "\n----\n".join(errors)

    def code_cell(self, contains: str) -> Locator:
        """The code cell whose source contains ``contains``."""
        cell = self.page.locator(".jp-Notebook .jp-CodeCell").filter(
            has=self.page.locator(".jp-InputArea-editor", has_text=contains))
        cell.first.wait_for()
        return cell.first

    def slider(self, cell: Locator, label: str) -> Locator:
        """The ipywidgets slider in ``cell`` whose description is ``label``."""
        slider = cell.locator(".widget-slider").filter(
            has=self.page.locator(".widget-label", has_text=re.compile(rf"^\s*{re.escape(label)}\s*$")))
        slider.first.wait_for()
        return slider.first

    @staticmethod
    def readout(slider: Locator) -> str:
        return slider.locator(".widget-readout").inner_text().strip()

    def move_slider(self, slider: Locator, key: str = "ArrowRight", presses: int = 1) -> None:
        """Focus the slider's handle and press ``key``, as a keyboard user moves it."""
        handle = slider.locator(".noUi-handle").first
        handle.focus()
        for _ in range(presses):
            handle.press(key)

    def type_readout(self, slider: Locator, text: str) -> None:
        """Type a value into the slider's readout box and press Enter."""
        box = slider.locator(".widget-readout")
        box.click()
        self.page.keyboard.press("Control+A")
        self.page.keyboard.type(text)
        self.page.keyboard.press("Enter")

    def timed_redraw(self, cell: Locator, action, timeout_s: float = 60) -> float:
        """Seconds from the key press of ``action()`` until a new image shows in ``cell``'s output.

        Measured in the page: from the last keydown event to the moment the new ``<img>``
        (a new ``src``) is in the DOM and decoded.
        """
        cell.locator(".jp-Cell-outputArea").element_handle().evaluate(_WATCH_JS)
        action()
        self.page.wait_for_function("() => window.__redraw && window.__redraw.t1 !== null",
                                    timeout=timeout_s * 1000, polling="raf")
        state = self.page.evaluate("() => window.__redraw")
        assert state["t0"] is not None, "the slider move produced no key event"
        return (state["t1"] - state["t0"]) / 1000.0

    def wait_idle(self, timeout_s: float = 60) -> None:
        self.page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for(timeout=timeout_s * 1000)

    def shot(self, locator: Locator, name: str) -> bytes:
        """Screenshot of ``locator`` saved as ``<tmp>/<name>.png``; returns the PNG bytes."""
        locator.scroll_into_view_if_needed()
        return locator.screenshot(path=str(self.shots / f"{name}.png"), animations="disabled")
