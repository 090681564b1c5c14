"""Every lesson executed under the gpu and paper profiles' code paths, on the CPU at the smoke sizes.

``make test``'s nbval run covers the cpu profile. Here each notebook runs with ``DEEPLAB_PROFILE=gpu``
and ``DEEPLAB_PROFILE=paper`` (``DEEPLAB_TEST=1`` keeps the sizes at smoke), the latter twice: with
no ImageNet weights on the machine, and with stand-in weights (a randomly initialised torchvision
VGG16 saved where torchvision caches the real file): lesson 03 then transplants them, and the cells
that ask ``TrainConfig.from_settings`` for the paper recipe see them (at the smoke width the recipe
still falls back to random initialisation: the published recipe itself, at width 1.0, is tested in
tests/test_train.py). The GPU-only branches (autocast, the batch of 8 for the CRF) need a GPU.
A lesson passes when every cell runs and every figure-drawing cell shows its figure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from deeplab_lessons import config

NOTEBOOKS = sorted((config.REPO_ROOT / "notebooks").glob("*.ipynb"))
CASES = [("gpu", "no weights"), ("paper", "no weights"), ("paper", "stand-in weights")]
sys.path.insert(0, str(config.REPO_ROOT / "tools"))
from figure_check import figure_problem  # noqa: E402


@pytest.fixture(scope="module")
def torch_homes(tmp_path_factory) -> dict[str, Path]:
    import torchvision

    empty = tmp_path_factory.mktemp("torch-home-empty")
    cached = tmp_path_factory.mktemp("torch-home-weights")
    target = cached / "hub" / "checkpoints" / "vgg16-397923af.pth"
    target.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), target)
    return {"no weights": empty, "stand-in weights": cached}


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.slow
@pytest.mark.parametrize("profile,weights", CASES, ids=[f"{p}-{w.replace(' ', '-')}" for p, w in CASES])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_runs_under_profile(path, profile, weights, torch_homes, monkeypatch):
    for key, value in {"DEEPLAB_TEST": "1", "DEEPLAB_PROFILE": profile, "DEEPLAB_DEVICE": "cpu", "TQDM_DISABLE": "1",
                       "TORCH_HOME": str(torch_homes[weights]), "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    setup = next(c for c in nb.cells if c.cell_type == "code")
    assert f"| profile: {profile} |" in outputs_text(setup)
    problems = [f"cell {i}: {p}" for i, c in enumerate(nb.cells) if c.cell_type == "code"
                for p in [figure_problem(c.source, c.get("outputs", []))] if p]
    assert not problems, problems
    text = "\n".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    if path.stem == "05_training_on_voc" and profile == "paper":
        assert "the paper profile is active" in text
    if path.stem == "03_stride8_vgg":
        expected = "using torchvision's ImageNet VGG16 weights" if weights == "stand-in weights" else \
            "using a randomly initialised torchvision VGG16 instead"
        assert expected in text
