"""Execute lesson notebooks headless, in place (`make notebooks`) or into a folder (`make run`).

Prints each notebook's execution time, slowest first, and stops with a non-zero exit status
naming the notebook and cell when one fails, or when a cell that draws a figure did not produce it
as an image (tools/figure_check.py). With ``--record results/notebook_times.json`` (``make notebooks``)
the times are kept there under the active profile and machine, and the README's run-time table is
rewritten from that file (``--check-readme`` only checks it is current).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from figure_check import figure_problem


def execute(path: Path, timeout: int) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return nb


ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BEGIN, END = "<!-- run-times:begin (tools/run_notebooks.py) -->", "<!-- run-times:end -->"


def machine() -> dict:
    """What the times were measured on (no host names or paths)."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"device": gpu or f"CPU, {os.cpu_count()} cores ({platform.machine()})",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": round(os.getloadavg()[0], 2), "date": datetime.date.today().isoformat()}


def record(path: Path, times: dict[str, float]) -> None:
    """Merge ``times`` into ``path`` under ``"<profile> on <device>"``."""
    sys.path.insert(0, str(ROOT))
    from deeplab_lessons import config

    data = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    info = machine()
    key = f"{config.profile_name()} on {info['device']}"
    entry = data["runs"].setdefault(key, {"seconds": {}})
    entry.update({k: v for k, v in info.items()})
    entry["seconds"].update({Path(name).stem: round(seconds, 1) for name, seconds in times.items()})
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def readme_table(data: dict) -> str:
    """Markdown: one row per lesson, one column per recorded profile and machine (minutes)."""
    runs = sorted(data["runs"].items())
    lessons = sorted({lesson for _, run in runs for lesson in run["seconds"]})
    head = "| lesson | " + " | ".join(key for key, _ in runs) + " |"
    rows = [head, "|---|" + "---:|" * len(runs)]
    for lesson in lessons:
        cells = [f"{run['seconds'][lesson] / 60:.1f}" if lesson in run["seconds"] else "-" for _, run in runs]
        rows.append(f"| {lesson} | " + " | ".join(cells) + " |")
    totals = [f"**{sum(run['seconds'].values()) / 60:.1f}**" for _, run in runs]
    rows.append("| **all** | " + " | ".join(totals) + " |")
    notes = "; ".join(f"{key}: torch {run['torch']}, {run['threads']} threads, load average {run['load_average']}, "
                      f"{run['date']}" for key, run in runs)
    return "\n".join(rows) + f"\n\nMinutes per lesson, `make notebooks` (measured: {notes})."


def updated_readme(text: str, data: dict) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block for the run-time table")
    head, rest = text.split(BEGIN, 1)
    return head + BEGIN + "\n" + readme_table(data) + "\n" + END + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--record", type=Path, help="JSON file keeping the times per profile and machine "
                                                    "(and the README table made from it)")
    parser.add_argument("--check-readme", type=Path, metavar="JSON",
                        help="exit 1 if the README's run-time table is not the one JSON gives; run nothing")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--inplace", action="store_true", help="overwrite each notebook with its executed version")
    where.add_argument("--out", type=Path, help="folder for executed .ipynb and .html copies")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    if args.check_readme:
        current = README.read_text()
        fresh = updated_readme(current, json.loads(args.check_readme.read_text()))
        print("README run-time table is current" if fresh == current else "README run-time table is stale")
        return 0 if fresh == current else 1
    if not args.notebooks or not (args.inplace or args.out):
        parser.error("give notebooks and --inplace or --out")

    times: dict[str, float] = {}
    for path in sorted(args.notebooks):
        print(f"executing {path} ...", flush=True)
        start = time.perf_counter()
        try:
            nb = execute(path, args.timeout)
        except CellExecutionError as err:
            print(f"FAILED: {path}\n{err}", file=sys.stderr)
            return 1
        times[str(path)] = time.perf_counter() - start
        problems = [f"cell {i}: {p}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
                    for p in [figure_problem(c.source, c.get("outputs", []))] if p]
        if problems:
            print(f"FAILED: {path}: figures missing\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        if args.inplace:
            nbformat.write(nb, path)
        else:
            from nbconvert import HTMLExporter

            args.out.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, args.out / path.name)
            html, _ = HTMLExporter().from_notebook_node(nb)
            (args.out / path.with_suffix(".html").name).write_text(html, encoding="utf-8")
        print(f"  done in {times[str(path)]:.1f} s", flush=True)
    every = {p.resolve() for p in (ROOT / "notebooks").glob("*.ipynb")}
    if args.record and {p.resolve() for p in args.notebooks} != every:
        print(f"not recorded in {args.record}: a run of the whole series is (this ran {len(times)} of {len(every)})")
    elif args.record:
        record(args.record, times)
        README.write_text(updated_readme(README.read_text(), json.loads(args.record.read_text())))
        print(f"recorded in {args.record} and the README's run-time table")
    print("\nnotebook execution times (slowest first):")
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:7.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
