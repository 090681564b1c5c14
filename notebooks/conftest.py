"""nbval support: print each notebook's execution time, slowest first, at the end of the run."""

from collections import defaultdict

_times: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if report.nodeid.split("::")[0].endswith(".ipynb"):
        _times[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _times:
        return
    terminalreporter.write_sep("=", "notebook execution times (slowest first)")
    for name, seconds in sorted(_times.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}")


# --------------------------------------------------------------------------------------------
# Every figure must come out as an image (nbval compares text only)

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from figure_check import figure_problem  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    outputs = getattr(item, "test_outputs", None)
    cell = getattr(item, "cell", None)
    if call.when != "call" or report.failed or outputs is None or cell is None:
        return
    problem = figure_problem(cell.source, outputs)
    if problem:
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: {problem}\n--- cell source ---\n{cell.source}"
