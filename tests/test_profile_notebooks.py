"""Every lesson executed under the gpu and paper profiles' code paths, on the CPU at the smoke sizes.

``make test``'s nbval run covers the cpu profile. Here each notebook runs with ``DEEPLAB_PROFILE=gpu``
and ``DEEPLAB_PROFILE=paper`` (``DEEPLAB_TEST=1`` keeps the sizes at smoke), the latter first with
no ImageNet weights on the machine and then, for the lessons that looked for them, with stand-in weights
(a randomly initialised torchvision VGG16 saved where torchvision caches the real file): lesson 03 then
transplants them, and the cells that ask ``TrainConfig.from_settings`` for the paper recipe see them (at
the smoke width the recipe still falls back to random initialisation: the published recipe itself, at
width 1.0, is tested in tests/test_train.py). A lesson "looked for them" when its kernel called
``torch.hub.get_dir()``, the one way torchvision and this package find a cached weights file: a lesson
that never does runs the same code whatever that folder holds, so its second run is skipped. The
GPU-only branches (autocast, the batch of 8 for the CRF) need a GPU.
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


#: Run in the kernel before the lesson: count the calls of ``torch.hub.get_dir`` (where weights files are looked up).
COUNT_LOOKUPS = """import torch.hub as _hub
_weight_lookups = [0]
def _counted_get_dir(*args, _get_dir=_hub.get_dir, **kwargs):
    _weight_lookups[0] += 1
    return _get_dir(*args, **kwargs)
_hub.get_dir = _counted_get_dir"""
REPORT_LOOKUPS = 'print("weight lookups:", _weight_lookups[0])'


def run_lesson(path: Path, profile: str, weights: str, torch_homes: dict[str, Path], monkeypatch) -> int:
    """Execute the lesson under ``profile`` with ``torch_homes[weights]`` as TORCH_HOME, check it; return how many
    times its kernel looked up the weights folder."""
    for key, value in {"DEEPLAB_TEST": "1", "DEEPLAB_PROFILE": profile, "DEEPLAB_DEVICE": "cpu", "TQDM_DISABLE": "1",
                       "TORCH_HOME": str(torch_homes[weights]), "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(path, as_version=4)
    cells = list(nb.cells)
    nb.cells = [nbformat.v4.new_code_cell(COUNT_LOOKUPS)] + cells + [nbformat.v4.new_code_cell(REPORT_LOOKUPS)]
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    lookups = int(outputs_text(nb.cells[-1]).split(":")[1])
    setup = next(c for c in cells if c.cell_type == "code")
    assert f"| profile: {profile} |" in outputs_text(setup)
    problems = [f"cell {i}: {p}" for i, c in enumerate(cells) if c.cell_type == "code"
                for p in [figure_problem(c.source, c.get("outputs", []))] if p]
    assert not problems, problems
    text = "\n".join(outputs_text(c) for c in cells if c.cell_type == "code")
    if path.stem == "05_training_on_voc" and profile == "paper":
        assert "the paper profile is active" in text
    if path.stem == "03_stride8_vgg":
        expected = "using torchvision's ImageNet VGG16 weights" if weights == "stand-in weights" else \
            "using a randomly initialised torchvision VGG16 instead"
        assert expected in text
        assert lookups > 0                                 # the lesson that transplants them is seen looking
    return lookups


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["gpu", "paper"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_lesson_runs_under_profile(path, profile, torch_homes, monkeypatch):
    lookups = run_lesson(path, profile, "no weights", torch_homes, monkeypatch)
    if profile == "paper" and lookups:
        run_lesson(path, profile, "stand-in weights", torch_homes, monkeypatch)
