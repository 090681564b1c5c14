"""config: data folder, device choice and the lesson profiles (smoke, cpu, gpu, paper)."""

import pytest
import torch

from deeplab_lessons import config


def test_data_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPLAB_DATA", str(tmp_path))
    assert config.data_dir() == tmp_path.resolve()
    monkeypatch.delenv("DEEPLAB_DATA")
    assert config.data_dir() == config.REPO_ROOT / "data"


def test_device_defaults_and_override(monkeypatch):
    monkeypatch.delenv("DEEPLAB_DEVICE", raising=False)
    assert config.device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("DEEPLAB_DEVICE", "cpu")
    assert config.device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_gpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("DEEPLAB_DEVICE", "cuda")
    with pytest.raises(ValueError, match="DEEPLAB_DEVICE='cuda' but torch sees no CUDA device"):
        config.device()


def test_a_device_that_is_no_device_is_named(monkeypatch):
    monkeypatch.setenv("DEEPLAB_DEVICE", "gpu")
    with pytest.raises(ValueError, match="DEEPLAB_DEVICE='gpu' is not a device: use cpu, cuda, cuda:N"):
        config.device()
    with pytest.raises(ValueError, match="device='tpu'"):
        config.parse_device("tpu")


def test_profile_follows_device_and_env(monkeypatch):
    monkeypatch.delenv("DEEPLAB_PROFILE", raising=False)
    monkeypatch.delenv("DEEPLAB_SCALE", raising=False)
    monkeypatch.delenv("DEEPLAB_TEST", raising=False)
    assert config.lesson_settings("cpu") == config.CPU_SETTINGS
    assert config.lesson_settings("cuda") == config.GPU_SETTINGS          # a GPU never gets the paper's schedule
    monkeypatch.setenv("DEEPLAB_PROFILE", "paper")
    assert config.lesson_settings("cpu") == config.PAPER_SETTINGS
    monkeypatch.setenv("DEEPLAB_PROFILE", "huge")
    with pytest.raises(ValueError, match="DEEPLAB_PROFILE must be one of smoke, cpu, gpu, paper"):
        config.lesson_settings()
    monkeypatch.delenv("DEEPLAB_PROFILE")
    monkeypatch.setenv("DEEPLAB_SCALE", "gpu")                             # the old name still works, with a warning
    with pytest.warns(FutureWarning, match="DEEPLAB_PROFILE"):
        assert config.lesson_settings("cpu") == config.GPU_SETTINGS


def test_profiles_grow_from_smoke_to_paper():
    order = [config.PROFILES[name] for name in ("smoke", "cpu", "gpu", "paper")]
    work = [s.width ** 2 * s.crop_size ** 2 * s.batch_size * s.iterations for s in order]
    assert work == sorted(work) and len(set(work)) == 4
    gpu, cpu = config.GPU_SETTINGS, config.CPU_SETTINGS
    assert gpu.width > cpu.width and gpu.crop_size > cpu.crop_size and gpu.amp and not cpu.amp
    assert gpu.live_iterations == gpu.iterations and cpu.live_iterations < cpu.iterations   # the GPU trains it all
    assert config.PAPER_SETTINGS.pretrained and not gpu.pretrained and config.PAPER_SETTINGS.width == 1.0
    for s in order:
        assert 0 < s.live_iterations <= s.iterations and 0 < s.eval_every <= s.iterations, s.profile


def test_tests_run_each_profiles_code_path_at_smoke_sizes(monkeypatch):
    monkeypatch.setenv("DEEPLAB_TEST", "1")
    for name in ("cpu", "gpu", "paper"):
        monkeypatch.setenv("DEEPLAB_PROFILE", name)
        s = config.lesson_settings()
        assert s.profile == name and s.quick and s.iterations == config.SMOKE_SETTINGS.iterations
        assert s.amp == config.PROFILES[name].amp and s.pretrained == config.PROFILES[name].pretrained


def test_budget_note_names_every_profile_and_marks_the_active_one():
    assert set(config.LESSON_MINUTES) == {p.stem for p in (config.REPO_ROOT / "notebooks").glob("*.ipynb")}
    note = config.budget_note("05_training_on_voc", config.GPU_SETTINGS)
    assert "**GPU (T4 class): about 8 min** (active)" in note and "CPU (2 cores): about 4 min" in note
    for minutes in config.LESSON_MINUTES.values():
        assert minutes["gpu"] <= 10, "every lesson fits 10 minutes on a T4-class GPU"
    with pytest.raises(ValueError, match="no run-time budget for lesson '99_x'"):
        config.budget_note("99_x")


def test_voc_root_generates_embedded_set_then_prefers_real(monkeypatch, tmp_path):
    import deeplab_lessons.data.synthetic as synthetic

    calls = []
    monkeypatch.setenv("DEEPLAB_DATA", str(tmp_path))
    monkeypatch.setattr(config, "EMBEDDED_DEFAULT", {"n_train": 2, "n_val": 1, "size": (40, 40), "seed": 0})
    real_make = synthetic.make_synthetic_voc
    monkeypatch.setattr(synthetic, "make_synthetic_voc", lambda *a, **k: calls.append(k) or real_make(*a, **k))
    root = config.voc_root()
    assert root == tmp_path / "VOCdevkit" / "VOC2012" and not config.is_real_voc(root)
    assert calls and calls[0]["n_train"] == 2
    # a real VOC folder (no SYNTHETIC marker) next to it is preferred
    import shutil
    shutil.rmtree(tmp_path / "VOCdevkit")
    (tmp_path / "VOCdevkit" / "VOC2012" / "JPEGImages").mkdir(parents=True)
    assert config.voc_root() == tmp_path / "VOCdevkit" / "VOC2012"
    assert config.voc_root(prefer_real=False) == tmp_path / "embedded" / "VOCdevkit" / "VOC2012"
