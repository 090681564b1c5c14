"""The training engine: schedule, data stream, checkpoints, exact resume, NaN stop, evaluation, CLI, DDP."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from deeplab_lessons import config
from deeplab_lessons.data import SampleStream
from deeplab_lessons.inference import evaluate, predict_proba
from deeplab_lessons.models import available_models, build_model, classifier_parameters
from deeplab_lessons.train import (TrainConfig, build_parser, config_from_args, load_checkpoint, load_model, poly_lr,
                                   train)
from deeplab_lessons.data import VOCSegmentation, make_synthetic_voc

TINY = dict(model="largefov", width=0.125, crop_size=48, batch_size=2, num_workers=0, progress=False,
            log_every=1, lr=0.01)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), n_train=6, n_val=3, size=(41, 53), seed=2)


def test_poly_lr_closed_form():
    assert poly_lr(1e-3, 0, 100) == pytest.approx(1e-3)
    assert poly_lr(1e-3, 50, 100) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert poly_lr(1e-3, 100, 100) == 0.0
    with pytest.raises(ValueError):
        poly_lr(1e-3, 101, 100)


def test_sample_stream_is_a_function_of_position():
    stream = list(SampleStream(5, 2, seed=3, start=0, stop=5))
    indices = [i for batch in stream for i, _ in batch]
    assert sorted(indices[:5]) == list(range(5)) and sorted(indices[5:10]) == list(range(5))   # epochs
    assert list(SampleStream(5, 2, seed=3, start=2, stop=5)) == stream[2:]                    # resumable
    # two processes with batch 2 see exactly the samples of one process with batch 4
    single = list(SampleStream(7, 4, seed=1, start=0, stop=3))
    ranks = [list(SampleStream(7, 2, seed=1, start=0, stop=3, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks)] == single


def test_registry_and_norm():
    names = available_models()
    assert {"largefov", "deeplab-7x7", "aspp-l", "aspp-s", "v3", "v3plus"} <= set(names)
    with pytest.raises(ValueError, match="unknown or unavailable model 'nope'"):
        build_model("nope")
    plain = build_model("largefov", width=0.125)
    normed = build_model("largefov", width=0.125, norm="batch")
    convs = sum(isinstance(m, nn.Conv2d) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in normed.modules()) == convs - 1   # all but fc8
    head = classifier_parameters(normed)
    assert len(head) == 2 and head[0] is normed.head.fc8.weight
    v3 = build_model("v3", width=0.125, norm="group")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in v3.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in v3.modules())


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="resume=True needs out="):
        TrainConfig(resume=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        TrainConfig(norm="layer")


def test_profiles_size_the_lesson_run_and_only_paper_is_the_published_recipe(monkeypatch, tmp_path):
    cpu = TrainConfig.from_settings(config.CPU_SETTINGS)
    assert cpu == TrainConfig()                     # the CPU profile is the shipped checkpoint's recipe
    gpu = TrainConfig.from_settings(config.GPU_SETTINGS)
    assert (gpu.width, gpu.crop_size, gpu.batch_size, gpu.iterations) == (0.5, 192, 16, 3000)
    assert gpu.amp and gpu.channels_last and not gpu.pretrained and gpu.optimizer == "adamw"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))           # no ImageNet weights cached here
    with pytest.warns(UserWarning, match="no ImageNet weights for 'largefov'.*random initialisation"):
        fallback = TrainConfig.from_settings(config.PAPER_SETTINGS)
    assert not fallback.pretrained and fallback.norm == "batch" and (fallback.crop_size, fallback.width) == (321, 1.0)
    stand_in = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    stand_in.parent.mkdir(parents=True)
    stand_in.write_bytes(b"")                       # only its presence is read here
    paper = TrainConfig.from_settings(config.PAPER_SETTINGS)
    assert (paper.pretrained, paper.norm, paper.optimizer, paper.lr, paper.lr_policy) == (True, "none", "sgd", 1e-3, "step")
    assert (paper.iterations, paper.batch_size, paper.crop_size) == (6000, 20, 321)   # LargeFOV's own schedule
    named = TrainConfig.from_settings(config.PAPER_SETTINGS, model="aspp-l")          # a model given by name
    assert (named.model, named.pretrained, named.iterations, named.batch_size) == ("aspp-l", True, 20000, 10)
    control = TrainConfig.from_settings(config.PAPER_SETTINGS, model="small-field")  # no published recipe
    assert control.model == "small-field" and not control.pretrained and control.crop_size == 321
    assert config_from_args(["--profile", "paper", "--model", "largefov"]).pretrained
    with pytest.warns(UserWarning, match="no ImageNet weights for 'v3'"):              # ResNet weights not cached
        v3 = TrainConfig.from_settings(config.PAPER_SETTINGS, model="v3")
    assert (v3.model, v3.pretrained, v3.crop_size, v3.batch_size) == ("v3", False, 513, 16)
    live = config.PAPER_SETTINGS.for_live_runs()                                      # lessons 06/07 under paper
    assert live == config.GPU_SETTINGS and config.CPU_SETTINGS.for_live_runs() == config.CPU_SETTINGS
    assert fallback.iterations == 6000 and fallback.batch_size == 20


def test_projection_and_budget_warning():
    from deeplab_lessons.train.engine import budget_warning, format_duration, projection

    assert projection(2.0, 5, 3000) == pytest.approx(1200.0)
    assert format_duration(45) == "45 s" and format_duration(1200) == "20.0 min" and format_duration(9000) == "2.5 h"
    assert budget_warning(1200.0, 10) is None                         # 20 min is within twice 10
    assert budget_warning(1200.0, None) is None
    assert "projects to 20.0 min, far beyond its budget of about 8 min" in budget_warning(1200.0, 8)
    with pytest.raises(ValueError):
        projection(1.0, 0, 10)


def test_trainer_projects_the_run_and_warns_past_the_budget(voc, capsys):
    cfg = TrainConfig(**{**TINY, "progress": True}, data=str(voc), iterations=8, budget_minutes=1e-6)
    with pytest.warns(RuntimeWarning, match="far beyond its budget"):
        train(cfg)
    assert "projected: 8 iterations in about" in capsys.readouterr().out


def test_autocast_dtype_is_bfloat16_only_where_the_card_computes_it(monkeypatch):
    from deeplab_lessons.inference import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for capability, dtype in (((7, 5), torch.float16), ((7, 0), torch.float16), ((8, 0), torch.bfloat16),
                              ((9, 0), torch.bfloat16)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert autocast_dtype() == dtype, capability             # T4 (7.5) and V100 (7.0) get float16 + a scaler
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert autocast_dtype() == torch.float16


def test_loader_workers_give_the_same_run(voc):
    """Augmentation is a function of the seed and the sample's position, not of the process that draws it."""
    runs = [train(TrainConfig(**{**TINY, "num_workers": workers}, data=str(voc), iterations=3)) for workers in (0, 2)]
    assert runs[0].history["loss"] == runs[1].history["loss"]


def test_channels_last_trains_the_same_run(voc):
    """The memory format is a layout, not a different computation: the same losses to rounding.

    Two steps: the first loss is the same forward pass, the second follows one update. Later steps drift
    further, as AdamW scales a gradient entry that rounding moved near zero up to a full-size step."""
    runs = [train(TrainConfig(**TINY, data=str(voc), iterations=2, channels_last=cl)) for cl in (False, True)]
    loss = [torch.tensor(r.history["loss"]) for r in runs]
    torch.testing.assert_close(loss[1][0], loss[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss[1][1], loss[0][1], rtol=1e-3, atol=1e-5)


def test_train_writes_checkpoints_that_rebuild_the_model(voc, tmp_path):
    cfg = TrainConfig(**TINY, data=str(voc), iterations=3, out=str(tmp_path / "run"))
    result = train(cfg)
    assert result.iteration == 3 and len(result.history["loss"]) == 3
    lrs = result.history["lr"]
    assert lrs[0] == pytest.approx(0.01) and lrs[2] == pytest.approx(poly_lr(0.01, 2, 3))
    for name in ("last.pt", "model.pt"):
        state = torch.load(tmp_path / "run" / name, map_location="cpu", weights_only=True)
        assert state["iteration"] == 3
    assert not list((tmp_path / "run").glob("*.tmp"))                       # atomic writes left nothing
    model = load_model(tmp_path / "run" / "model.pt", device="cpu")
    assert not model.training and model.train_config == cfg
    again = evaluate(model, VOCSegmentation(voc, "val"))
    assert again["mean_iou"] == pytest.approx(result.metrics["mean_iou"])
    assert json.loads((tmp_path / "run" / "history.json").read_text())["history"]["loss"] == result.history["loss"]
    with pytest.raises(ValueError, match="not a deeplab_lessons training checkpoint"):
        torch.save({"x": 1}, tmp_path / "other.pt")
        load_checkpoint(tmp_path / "other.pt")


def test_val_images_scores_the_first_images_of_the_split(voc, tmp_path):
    cfg = TrainConfig(**TINY, data=str(voc), iterations=1, val_images=2)
    result = train(cfg)
    val = VOCSegmentation(voc, "val")
    first_two = evaluate(result.model, torch.utils.data.Subset(val, [0, 1]))
    for key in ("mean_iou", "pixel_accuracy"):
        assert result.metrics[key] == pytest.approx(first_two[key])
    assert evaluate(result.model, val)["pixel_accuracy"] != pytest.approx(first_two["pixel_accuracy"])   # not the split
    with pytest.raises(ValueError, match="val_images must be >= 0"):
        TrainConfig(val_images=-1)


def test_classifier_gets_ten_times_the_rate(voc, tmp_path):
    cfg = TrainConfig(**TINY, data=str(voc), iterations=2, out=str(tmp_path / "run"))
    train(cfg)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    groups = state["optimizer"]["param_groups"]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    assert len(groups[1]["params"]) == 2                                     # fc8 weight and bias
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])


def test_resume_continues_exactly(voc, tmp_path):
    straight = train(TrainConfig(**TINY, data=str(voc), iterations=4, out=str(tmp_path / "a")))
    train(TrainConfig(**TINY, data=str(voc), iterations=4, out=str(tmp_path / "b"), stop_at=2))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 2
    assert not (tmp_path / "b" / "model.pt").exists()
    resumed = train(TrainConfig(**TINY, data=str(voc), iterations=4, out=str(tmp_path / "b"), resume=True))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.history["loss"] == straight.history["loss"]
    with pytest.raises(ValueError, match="different lr=0.01"):
        train(TrainConfig(**{**TINY, "lr": 0.02}, data=str(voc), iterations=4, out=str(tmp_path / "b"),
                              resume=True))


def test_a_run_killed_while_it_evaluates_resumes_without_losing_that_evaluation(voc, tmp_path, monkeypatch):
    """An iteration that evaluates and checkpoints evaluates first: a run killed during the evaluation (nothing can
    catch a SIGKILL) resumes from the checkpoint before it, and its learning curve has every evaluation."""
    from deeplab_lessons.train import engine

    cfg = dict(**TINY, data=str(voc), iterations=4, eval_every=2, checkpoint_every=1)
    straight = train(TrainConfig(**cfg, out=str(tmp_path / "a")))
    real = engine.evaluate

    def killed(*args, **kwargs):
        raise RuntimeError("killed while evaluating")

    monkeypatch.setattr(engine, "evaluate", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train(TrainConfig(**cfg, out=str(tmp_path / "b")))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["iteration"] == 1
    monkeypatch.setattr(engine, "evaluate", real)
    resumed = train(TrainConfig(**cfg, out=str(tmp_path / "b"), resume=True))
    assert resumed.history["eval_iteration"] == straight.history["eval_iteration"] == [2, 4]
    assert resumed.history["mean_iou"] == straight.history["mean_iou"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(voc, tmp_path):
    cfg = TrainConfig(**{**TINY, "lr": 1e12, "norm": "none"}, data=str(voc), iterations=6,
                        checkpoint_every=1, out=str(tmp_path / "run"))
    with pytest.raises(FloatingPointError, match=r"(loss became|weights became) .* last good checkpoint"):
        train(cfg)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_evaluation_scores_every_pixel_of_whole_images(voc):
    torch.manual_seed(0)
    model = build_model("largefov", width=0.125, norm="batch").eval()
    val = VOCSegmentation(voc, "val")
    scores = evaluate(model, val)
    labelled = sum(int((val[i][1] != 255).sum()) for i in range(len(val)))
    assert int(scores["confusion"].matrix.sum()) == labelled                # 41x53 images, nothing cropped


def test_multiscale_and_flip_average_the_probabilities():
    torch.manual_seed(0)
    model = build_model("largefov", width=0.125, norm="batch").eval()
    images = torch.randint(0, 256, (1, 3, 40, 48), dtype=torch.uint8)
    single = predict_proba(model, images)
    assert single.shape == (1, 21, 40, 48)
    torch.testing.assert_close(single.sum(1), torch.ones(1, 40, 48))
    mirrored = predict_proba(model, images.flip(-1)).flip(-1)
    torch.testing.assert_close(predict_proba(model, images, flip=True), (single + mirrored) / 2)
    half = predict_proba(model, images, scales=(0.5,))
    torch.testing.assert_close(predict_proba(model, images, scales=(0.5, 1.0)), (single + half) / 2)
    assert not torch.allclose(half, single)


def test_cli_help_and_arguments():
    text = build_parser().format_help()
    for option in ("--model", "--iters", "--out", "--resume", "--data", "--eval-scales", "--paper"):
        assert option in text
    cfg = config_from_args(["--model", "aspp-s", "--iters", "7", "--no-flip", "--eval-scales", "0.5", "1"])
    assert (cfg.model, cfg.iterations, cfg.flip, cfg.eval_scales) == ("aspp-s", 7, False, (0.5, 1.0))
    assert config_from_args(["--paper"]).crop_size == 321
    gpu = config_from_args(["--profile", "gpu", "--iters", "50"])
    assert (gpu.width, gpu.crop_size, gpu.iterations, gpu.amp) == (0.5, 192, 50, True)
    with pytest.raises(ValueError, match="--paper or --profile"):
        config_from_args(["--paper", "--profile", "gpu"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_run_on_cpu(voc, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "deeplab_lessons.train", "--data", str(voc),
           "--model", "largefov", "--width", "0.125", "--crop-size", "48", "--batch-size", "2", "--iters", "3",
           "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPLAB_DEVICE": "cpu"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("mean IoU") == 1                                 # only rank 0 reports
    state = load_checkpoint(out / "model.pt")
    assert state["iteration"] == 3 and not any(k.startswith("module.") for k in state["model"])
    # each rank scored half of the val set; the reduced matrix equals one process scoring all of it
    single = evaluate(load_model(out / "model.pt", device="cpu"), VOCSegmentation(voc, "val"))
    assert state["metrics"]["mean_iou"] == pytest.approx(single["mean_iou"])


def test_lesson_model_prefers_the_profiles_own_lesson_05_run(voc, tmp_path, monkeypatch):
    from deeplab_lessons.train import LESSON_CHECKPOINT, lesson_model

    monkeypatch.delenv("DEEPLAB_TEST", raising=False)
    small_gpu = config.LessonSettings(**{**config.GPU_SETTINGS.as_dict(), "width": 0.125, "crop_size": 48,
                                         "batch_size": 2, "iterations": 2, "live_iterations": 2, "num_workers": 0})
    cfg = TrainConfig.from_settings(small_gpu, data=str(voc), out=str(tmp_path / "run"), progress=False)
    train(cfg)
    model, why = lesson_model(small_gpu, "cpu", run=tmp_path / "run")
    assert model.train_config.width == 0.125 and "lesson 05's gpu-profile run (2 iterations" in why
    # another profile's run is not taken for this one: the shipped checkpoint is
    other = config.LessonSettings(**{**small_gpu.as_dict(), "iterations": 3})
    model, why = lesson_model(other, "cpu", run=tmp_path / "run")
    assert why.startswith("the shipped CPU checkpoint") and "run lesson 05 under the gpu profile" in why
    assert model.train_config.width == torch.load(LESSON_CHECKPOINT, weights_only=True)["config"]["width"]
    model, why = lesson_model(config.CPU_SETTINGS, "cpu", run=tmp_path / "run")      # the CPU path: always shipped
    assert why.startswith("the shipped CPU checkpoint") and "profile" not in why
