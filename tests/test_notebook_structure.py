"""Every lesson ends the same way, and its exercises can tell a learner whether they got it right.

- "What you saw", then "Exercises" with 2 or 3 numbered exercises;
- each exercise has a checking cell after it, and none of them is committed already answered
  (a committed output that says "right" or "correct" means the answer was filled in);
- no lesson mentions notes a learner never sees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LESSONS = [p for p in sorted((ROOT / "notebooks").glob("0*.ipynb"))]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _text(cell: dict) -> str:
    return "".join(cell["source"])


def _output_text(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_lesson_ends_with_what_you_saw_and_checked_exercises(lesson):
    cells = _cells(lesson)
    starts = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Exercises" in _text(c)]
    assert starts, f"{lesson.name}: no '## Exercises' section"
    assert any("## What you saw" in _text(c) for c in cells[:starts[0] + 1]), f"{lesson.name}: no 'What you saw'"
    tail = cells[starts[0]:]
    exercise_text = "\n".join(_text(c) for c in tail if c["cell_type"] == "markdown")
    numbered = re.findall(r"^\s*([1-9])\.\s", exercise_text.split("## Exercises", 1)[1], re.M)
    assert 2 <= len(set(numbered)) <= 3, f"{lesson.name}: {len(set(numbered))} exercises"
    checks = [c for c in tail if c["cell_type"] == "code"]
    assert len(checks) >= len(set(numbered)), f"{lesson.name}: {len(set(numbered))} exercises, {len(checks)} checking cells"
    for cell in checks:
        shown = _output_text(cell)
        assert shown.strip(), f"{lesson.name}: a checking cell prints nothing:\n{_text(cell)}"
        answered = re.search(r"(?<!not )(?<!not quite: )\b(right|correct!)", shown)
        assert not answered, f"{lesson.name}: a checking cell is committed already answered:\n{shown}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda p: p.stem)
def test_no_lesson_mentions_the_notes_it_was_made_from(lesson):
    assert "seed note" not in lesson.read_text().lower()


def _tool(name: str):
    import importlib.util
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recorded_run_times_are_in_the_readme_and_within_the_stated_budgets():
    from deeplab_lessons.config import LESSON_MINUTES

    run_notebooks = _tool("run_notebooks")
    recorded = json.loads((ROOT / "results" / "notebook_times.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert run_notebooks.updated_readme(readme, recorded) == readme, "run tools/run_notebooks.py --record again"
    measured = {key.split(" on ")[0]: run["seconds"] for key, run in recorded["runs"].items()}
    assert set(measured["cpu"]) == {p.stem for p in LESSONS}, "every lesson timed on the CPU"
    for profile, seconds in measured.items():
        for lesson, value in seconds.items():
            budget = LESSON_MINUTES[lesson][profile]
            assert value <= 60 * budget, f"{lesson} took {value / 60:.1f} min under {profile}, budget {budget} min"


def test_every_lesson_shows_its_budget_in_its_first_code_cell():
    for lesson in LESSONS:
        first = next(c for c in _cells(lesson) if c["cell_type"] == "code")
        shown = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in first.get("outputs", []))
        assert "Expected run time of this lesson, per profile" in shown, lesson.name
