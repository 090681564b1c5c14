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
