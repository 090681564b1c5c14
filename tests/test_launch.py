"""Colab / Kaggle / Studio Lab links, the hosted setup cell and the book's files: one source, each pointing home."""

import importlib.util
import json
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from deeplab_lessons import config

ROOT = config.REPO_ROOT
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
spec = importlib.util.spec_from_file_location("launch", ROOT / "tools" / "launch.py")
launch = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launch)


def tagged(nb: dict, tag: str) -> dict:
    cells = [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"expected one {tag} cell"
    return cells[0]


def test_every_written_file_is_fresh():
    assert launch.main(["--check"]) == 0, "run python tools/launch.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_badge_opens_its_own_notebook(path):
    nb = json.loads(path.read_text())
    assert nb["cells"][0] is tagged(nb, launch.BADGE_TAG), "the badge row is the first cell"
    links = re.findall(r"\]\((https://[^)]+)\)\]\((https://[^)]+)\)", "".join(nb["cells"][0]["source"]))
    targets = [target for _, target in links]
    owner_repo = launch.REPOSITORY
    assert targets == [
        f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{path.name}",
        f"https://kaggle.com/kernels/welcome?src=https://github.com/{owner_repo}/blob/main/notebooks/{path.name}",
        f"https://studiolab.sagemaker.aws/import/github/{owner_repo}/blob/main/notebooks/{path.name}",
    ]
    assert nb["metadata"]["accelerator"] == "GPU" and nb["metadata"]["kaggle"]["isGpuEnabled"]
    setup = tagged(nb, launch.SETUP_TAG)
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    assert first_code is setup, "the setup cell runs before any other code"
    assert f'config.budget_note("{path.stem}")' in "".join(setup["source"])
    # collapsed: JupyterLab shows a one-line stub, the book folds it; the lesson starts with the lesson
    assert setup["metadata"]["jupyter"]["source_hidden"] is True and "hide-input" in setup["metadata"]["tags"]


def test_readme_badges_match_their_rows():
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if launch.LESSON_ROW.match(line)]
    assert len(rows) == len(NOTEBOOKS)
    for row in rows:
        notebook = launch.LESSON_ROW.match(row).group(3)
        urls = re.findall(r"\)\]\((https://[^)]+)\)", row)          # the link targets, not the badge images
        assert len(urls) == 3 and all(url.endswith(f"/notebooks/{notebook}") for url in urls), row


def test_book_lists_every_notebook_and_launches_on_colab():
    toc = (ROOT / "book" / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc
    book_config = (ROOT / "book" / "_config.yml").read_text()
    assert f"url: https://github.com/{launch.REPOSITORY}" in book_config and "colab_url:" in book_config
    assert 'execute_notebooks: "off"' in book_config


def run_setup_cell(monkeypatch, tmp_path, env=None, modules=None, missing=()):
    """Execute the setup cell as a kernel would, recording the commands it would run instead of running them."""
    commands = []

    def fake_run(cmd, check):
        commands.append(cmd)
        if cmd[:2] == ["git", "clone"]:
            (Path(cmd[-1]) / "notebooks").mkdir(parents=True)
            (Path(cmd[-1]) / "pyproject.toml").write_text("")

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else real_find_spec(name, *a))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    for name, module in (modules or {}).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    exec(compile(launch.setup_source("05_training_on_voc.ipynb"), "setup-cell", "exec"), {"__name__": "__main__"})
    return commands, shown


def test_setup_cell_installs_nothing_locally(monkeypatch, tmp_path, capsys):
    commands, shown = run_setup_cell(monkeypatch, tmp_path)
    assert commands == [] and Path.cwd() == tmp_path
    assert "Expected run time of this lesson" in shown[0].data
    assert "| profile:" in capsys.readouterr().out


def test_setup_cell_on_kaggle_clones_and_installs_only_what_is_missing(monkeypatch, tmp_path):
    commands, _ = run_setup_cell(monkeypatch, tmp_path, env={"KAGGLE_KERNEL_RUN_TYPE": "Interactive"},
                                 missing=("tqdm",))
    clone = tmp_path / "deeplab-lessons"
    assert commands[0] == ["git", "clone", "--depth", "1", "--branch", "main",
                           f"https://github.com/{launch.REPOSITORY}", str(clone)]
    assert commands[1] == [sys.executable, "-m", "pip", "install", "--quiet", "tqdm"]
    assert len(commands) == 2, "torch, ipywidgets and matplotlib are the service's: never reinstalled"
    assert Path.cwd() == clone / "notebooks" and sys.path[0] == str(clone)


def test_setup_cell_on_colab_enables_the_widget_manager(monkeypatch, tmp_path):
    enabled = []
    output = types.SimpleNamespace(enable_custom_widget_manager=lambda: enabled.append(True))
    colab = types.ModuleType("google.colab")
    colab.output = output
    (tmp_path / "deeplab-lessons" / "notebooks").mkdir(parents=True)
    (tmp_path / "deeplab-lessons" / "pyproject.toml").write_text("")          # already cloned: no second clone
    commands, _ = run_setup_cell(monkeypatch, tmp_path, modules={"google.colab": colab,
                                                                 "google.colab.output": output})
    assert commands == [] and enabled == [True]


def test_setup_cell_run_again_stays_in_the_clone(monkeypatch, tmp_path):
    clone = tmp_path / "deeplab-lessons"
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text("")
    monkeypatch.chdir(clone / "notebooks")                     # where the first run left the kernel
    commands, _ = run_setup_cell(monkeypatch, clone / "notebooks", env={"KAGGLE_KERNEL_RUN_TYPE": "Interactive"})
    assert commands == [] and Path.cwd() == clone / "notebooks" and not (clone / "notebooks" / "deeplab-lessons").exists()
