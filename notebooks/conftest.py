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
