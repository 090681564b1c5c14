"""Execute lesson notebooks headless, in place (`make notebooks`) or into a folder (`make run`).

Prints each notebook's execution time, slowest first, and stops with a non-zero exit status
naming the notebook and cell when one fails, or when a cell that draws a figure did not produce it
as an image (tools/figure_check.py).
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebooks", nargs="+", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--inplace", action="store_true", help="overwrite each notebook with its executed version")
    where.add_argument("--out", type=Path, help="folder for executed .ipynb and .html copies")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell")
    args = parser.parse_args(argv)

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
    print("\nnotebook execution times (slowest first):")
    for name, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds:7.1f} s  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
