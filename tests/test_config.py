"""config: data folder, device choice and CPU- vs GPU-sized lesson settings."""

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
    with pytest.raises(RuntimeError, match="no CUDA device"):
        config.device()


def test_settings_scale_with_device(monkeypatch):
    monkeypatch.delenv("DEEPLAB_SCALE", raising=False)
    assert config.lesson_settings("cpu") == config.CPU_SETTINGS
    assert config.lesson_settings("cuda") == config.GPU_SETTINGS
    assert config.GPU_SETTINGS.width == 1.0 and config.GPU_SETTINGS.crop_size == 321   # the papers' setting
    monkeypatch.setenv("DEEPLAB_SCALE", "gpu")
    assert config.lesson_settings("cpu") == config.GPU_SETTINGS
    monkeypatch.setenv("DEEPLAB_SCALE", "huge")
    with pytest.raises(ValueError, match="DEEPLAB_SCALE"):
        config.lesson_settings()


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
