"""No command loses recorded work, and bad input is refused before any work starts, with the package's own words.

End to end through both command lines on a tiny data set: smoke and ad-hoc experiment runs never write into the
recorded results; a new training run never replaces a finished or interrupted one; Ctrl-C and SIGTERM checkpoint
and ``--resume`` continues bit for bit; ``--out`` is checked before the first iteration. Then a fuzz over the
public constructors: every wrong value gets a ``ValueError``/``TypeError`` raised inside ``deeplab_lessons``.
"""

import json
import math
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplab_lessons import config
from deeplab_lessons import experiments as ex
from deeplab_lessons.crf import CRFParams, dense_crf
from deeplab_lessons.data import make_synthetic_voc
from deeplab_lessons.experiments.cli import main as experiments_main
from deeplab_lessons.models import MSC, build_model, check_scales
from deeplab_lessons.receptive_field import receptive_fields_from_specs
from deeplab_lessons.train import TrainConfig, load_checkpoint, main as train_main, train

PACKAGE = Path(__import__("deeplab_lessons").__file__).parent
TINY_ARGS = ["--model", "largefov", "--width", "0.125", "--crop-size", "48", "--batch-size", "2", "--lr", "0.01",
             "--log-every", "1"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("voc"), n_train=6, n_val=3, size=(41, 53), seed=2)


def _train_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPLAB_DEVICE": "cpu", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "deeplab_lessons.train", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------------------------------
# 1. Smoke and ad-hoc experiment runs never write into the recorded results.

def test_smoke_and_other_data_runs_never_touch_the_recorded_results(voc, tmp_path, monkeypatch):
    recorded = tmp_path / "results"
    recorded.mkdir()
    full = {"format": ex.runner.RESULTS_FORMAT, "experiment": "lr-policy", "budget": {"iterations": 2000},
            "data": ex.runner.data_marker(voc), "records": [{"arm": "poly", "seed": s, "key": "x"} for s in range(6)]}
    (recorded / "lr-policy.json").write_text(json.dumps(full))
    before = (recorded / "lr-policy.json").read_bytes()
    monkeypatch.setattr(ex.runner, "RESULTS_DIR", recorded)
    monkeypatch.setattr(ex.runner, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(config, "voc_root", lambda *a, **k: voc)

    # the command: --smoke on the default data set writes to runs/, not results/
    assert experiments_main(["lr-policy", "--smoke", "--seeds", "0"]) == 0
    assert (recorded / "lr-policy.json").read_bytes() == before
    smoke = ex.load_results(tmp_path / "runs" / "results-smoke" / "lr-policy.json")
    assert len(smoke["records"]) == 2

    # another --data: its own folder under runs/ as well
    other = make_synthetic_voc(tmp_path / "other", n_train=6, n_val=3, size=(41, 53), seed=5)
    assert experiments_main(["lr-policy", "--smoke", "--seeds", "0", "--data", str(other)]) == 0
    assert (recorded / "lr-policy.json").read_bytes() == before
    assert len(list((tmp_path / "runs").glob("results-smoke-*/lr-policy.json"))) == 1

    # naming the recorded folder itself: refused, nothing trained or written; --overwrite replaces on purpose
    with pytest.raises(ValueError, match=r"holds 6 records made with another budget .* they are kept"):
        ex.run_experiment("lr-policy", seeds=(0,), smoke=True, data=voc, results_dir=recorded, log=lambda s: None)
    assert experiments_main(["lr-policy", "--smoke", "--seeds", "0", "--results-dir", str(recorded)]) == 2
    assert (recorded / "lr-policy.json").read_bytes() == before
    assert experiments_main(["lr-policy", "--smoke", "--seeds", "0", "--results-dir", str(recorded),
                             "--overwrite"]) == 0
    assert len(ex.load_results(recorded / "lr-policy.json")["records"]) == 2


# ------------------------------------------------------------------------------------------------------------------
# 2. Ctrl-C / SIGTERM checkpoint the run, and the README's resume recipe continues it bit for bit.

def _interrupt(voc: Path, out: Path, sig: int, iterations: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEEPLAB_DEVICE": "cpu", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deeplab_lessons.train", "--data", str(voc), *TINY_ARGS,
                             "--iters", str(iterations), "--checkpoint-every", "0", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:                 # the projection is printed after the first 6 iterations
        if line.startswith("projected:"):
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_ctrl_c_checkpoints_and_resume_continues_exactly(voc, tmp_path):
    done = _interrupt(voc, tmp_path / "run", signal.SIGINT)
    assert done.returncode == 128 + signal.SIGINT, done.stderr
    assert "interrupted: SIGINT" in done.stderr and "--resume" in done.stderr and "Traceback" not in done.stderr
    stopped = load_checkpoint(tmp_path / "run" / "last.pt")["iteration"]
    assert 6 <= stopped < 300
    assert not (tmp_path / "run" / "model.pt").exists()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    resumed = _train_cli("--out", str(tmp_path / "run"), "--resume", "--data", str(voc))  # the README's recipe
    assert resumed.returncode == 0, resumed.stderr
    straight = _train_cli("--data", str(voc), *TINY_ARGS, "--iters", "300", "--out", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr
    a, b = (load_checkpoint(tmp_path / d / "model.pt")["model"] for d in ("straight", "run"))
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_sigterm_checkpoints_and_leaves_no_temporary_file(voc, tmp_path):
    done = _interrupt(voc, tmp_path / "run", signal.SIGTERM)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "SIGTERM" in done.stderr and "Traceback" not in done.stderr
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] >= 6
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["history.json", "last.pt"]


def test_the_default_run_checkpoints_periodically():
    assert TrainConfig().checkpoint_every == 100


# ------------------------------------------------------------------------------------------------------------------
# 3. A new run never replaces a finished or interrupted one.

def test_a_new_run_never_replaces_a_finished_or_interrupted_run(voc, tmp_path):
    out = tmp_path / "run"
    assert _train_cli("--data", str(voc), *TINY_ARGS, "--iters", "3", "--out", str(out)).returncode == 0
    finished = _snapshot(out)
    again = _train_cli("--data", str(voc), *TINY_ARGS, "--iters", "5", "--stop-at", "2", "--out", str(out))
    assert again.returncode == 2 and "already holds a finished run" in again.stderr
    assert "--resume" in again.stderr and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    assert _snapshot(out) == finished
    # an interrupted run (stop_at) is protected the same way, from the library too
    train(TrainConfig(data=str(voc), **_tiny(), iterations=4, stop_at=2, out=str(tmp_path / "part")))
    with pytest.raises(ValueError, match="already holds an interrupted run"):
        train(TrainConfig(data=str(voc), **_tiny(), iterations=4, out=str(tmp_path / "part")))
    # --overwrite with --stop-at: the old model.pt goes, so the folder never mixes two runs
    replaced = _train_cli("--data", str(voc), *TINY_ARGS, "--iters", "5", "--stop-at", "2", "--out", str(out),
                          "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "last.pt"]
    assert load_checkpoint(out / "last.pt")["config"]["iterations"] == 5


def _tiny() -> dict:
    return dict(model="largefov", width=0.125, crop_size=48, batch_size=2, num_workers=0, progress=False, lr=0.01)


def test_resume_refuses_what_it_cannot_continue(voc, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(data=str(voc), **_tiny(), iterations=3, out=str(out)))
    with pytest.raises(ValueError, match="at iteration 3, and the run is finished: nothing to train"):
        train(TrainConfig(data=str(voc), **_tiny(), iterations=3, out=str(out), resume=True))
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(TrainConfig(data=str(voc), **_tiny(), iterations=3, out=str(tmp_path / "empty"), resume=True))
    state = load_checkpoint(out / "last.pt")
    state["model"] = {k: v * float("nan") if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save(state, out / "last.pt")
    (out / "model.pt").unlink()
    with pytest.raises(ValueError, match="holds non-finite weights"):
        train(TrainConfig(data=str(voc), **_tiny(), iterations=3, out=str(out), resume=True))
    (out / "last.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ValueError, match="could not be read") as err:
        load_checkpoint(out / "last.pt")
    assert "weights_only" not in str(err.value)


# ------------------------------------------------------------------------------------------------------------------
# 4. --out is checked before the first iteration.

@pytest.mark.parametrize("kind", ["file", "under a file"])
def test_an_out_that_cannot_hold_a_run_is_refused_before_training(voc, tmp_path, kind):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    out = blocker if kind == "file" else blocker / "run"
    done = _train_cli("--data", str(voc), *TINY_ARGS, "--iters", "400", "--out", str(out))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("is a file, not a folder" if kind == "file" else "cannot be written") in done.stderr
    assert "projected" not in done.stdout and blocker.read_text() == "mine"


# ------------------------------------------------------------------------------------------------------------------
# The command lines: bad options get one line naming them, before any work.

@pytest.mark.parametrize("args, message", [
    (["--model", "resnet", "--dry-run"], "unknown model 'resnet'"),
    (["--device", "gpu", "--dry-run"], "device='gpu' is not a device"),
    (["--crop-size", "4", "--dry-run"], "crop_size=4 is too small"),
    (["--eval-scales", "1", "inf", "--dry-run"], "eval_scales"),
    (["--msc-scales", "1", "1e6", "--dry-run"], "msc_scales"),
    (["--lr", "nan", "--dry-run"], "lr must be finite"),
    (["--momentum", "1.5", "--dry-run"], "momentum < 1"),
    (["--resume", "--overwrite", "--out", "x", "--dry-run"], "give one of them"),
])
def test_train_cli_names_the_bad_option(args, message, capsys):
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_cli_env_device_is_named(monkeypatch, voc, capsys):
    monkeypatch.setenv("DEEPLAB_DEVICE", "gpu")
    assert train_main(["--data", str(voc), "--iters", "2"]) == 2
    assert "DEEPLAB_DEVICE='gpu' is not a device" in capsys.readouterr().err


def test_help_states_the_defaults():
    from deeplab_lessons.train import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "AdamW" in text and "(default: 100)" in text and "--overwrite" in text
    assert "SGD, poly" not in text


# ------------------------------------------------------------------------------------------------------------------
# Fuzz: every public constructor takes a value in its domain and refuses every other one with its own error.

WEIRD = [None, "3", b"3", -1, 0, 1, 2, 0.5, 2.5, -0.5, 1e-9, 1e9, 10 ** 12, math.nan, math.inf, -math.inf, True,
         [], (), [1.0], (1.0, math.inf), (1.0, 1e6), (1.0, -0.5), (0.5, 1.0), object(), np.float32(3.0), np.int64(3)]


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _scales(v, first_one: bool) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) > 0 and all(_is_real(s) and 0 < s <= 4 for s in v)
            and (not first_one or float(v[0]) == 1.0))


_TC = {   # TrainConfig field -> its domain
    "width": lambda v: _is_real(v) and v > 0,
    "crop_size": lambda v: _is_int(v) and v >= 16,
    "batch_size": lambda v: _is_int(v) and v > 0,
    "iterations": lambda v: _is_int(v) and v > 0,
    "lr": lambda v: _is_real(v) and v > 0,
    "momentum": lambda v: _is_real(v) and 0 <= v < 1,
    "weight_decay": lambda v: _is_real(v) and v >= 0,
    "checkpoint_every": lambda v: _is_int(v) and v >= 0,
    "eval_every": lambda v: _is_int(v) and v >= 0,
    "seed": _is_int,
    "eval_scales": lambda v: _scales(v, False),
    "msc_scales": lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) == 0) or _scales(v, True),
    "device": lambda v: v is None or v == "cpu",
    "model": lambda v: False,                     # no weird value names a model
}

_CRF = {
    "pos_w": lambda v: _is_real(v) and v >= 0, "bi_w": lambda v: _is_real(v) and v >= 0,
    "pos_xy_std": lambda v: _is_real(v) and v >= 1e-3, "bi_xy_std": lambda v: _is_real(v) and v >= 1e-3,
    "bi_rgb_std": lambda v: _is_real(v) and v >= 1e-3, "iterations": lambda v: _is_int(v) and v >= 0,
}

_VOC = {"n_train": lambda v: _is_int(v) and 1 <= v, "void_width": lambda v: _is_int(v) and 0 <= v <= 8,
        "seed": lambda v: _is_int(v) and v >= 0}


def _raised_by_package(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE.resolve())


def _check(build, valid: bool, what: str):
    try:
        result = build()
    except (ValueError, TypeError) as err:
        assert not valid, f"{what}: a valid value was refused: {err}"
        assert _raised_by_package(err), f"{what}: {type(err).__name__} from outside the package: {err}"
        return None
    except Exception as err:  # noqa: BLE001
        raise AssertionError(f"{what}: {type(err).__name__} instead of a clear ValueError/TypeError: {err}") from err
    assert valid, f"{what}: an invalid value was accepted"
    return result


@pytest.mark.parametrize("field", sorted(_TC))
def test_fuzz_train_config(field):
    for value in WEIRD:
        _check(lambda: TrainConfig(**{field: value}), _TC[field](value), f"TrainConfig({field}={value!r})")


@pytest.mark.parametrize("field", sorted(_CRF))
def test_fuzz_crf_params_and_every_backend(field):
    image = np.random.default_rng(0).integers(0, 256, (12, 14, 3), dtype=np.uint8)
    probs = np.full((2, 12, 14), 0.5, np.float32)
    for value in WEIRD:
        params = _check(lambda: CRFParams(**{field: value}), _CRF[field](value), f"CRFParams({field}={value!r})")
        if params is not None and not (field == "iterations" and value > 20):
            for backend in ("torch", "naive"):
                try:
                    q = dense_crf(image, probs, params.replace(iterations=min(params.iterations, 2)), backend=backend)
                except ValueError as err:         # the torch lattice's range: a clear error of its own
                    assert backend == "torch" and "too small for the torch backend" in str(err)
                    continue
                assert np.isfinite(q).all() and np.allclose(q.sum(0), 1, atol=1e-5)


@pytest.mark.parametrize("field", sorted(_VOC))
def test_fuzz_make_synthetic_voc(field, tmp_path):
    for k, value in enumerate(WEIRD):
        if _VOC[field](value) and (value > 4 if field == "n_train" else False):
            continue                              # valid and slow: not a check of validation
        kwargs = {"n_train": 2, "n_val": 1, "size": (32, 32), field: value}
        _check(lambda: make_synthetic_voc(tmp_path / str(k), **kwargs), _VOC[field](value),
               f"make_synthetic_voc({field}={value!r})")


def test_fuzz_scales_and_layer_specs():
    net = build_model("largefov", width=0.125, norm="batch")
    for value in WEIRD:
        _check(lambda: check_scales(value), _scales(value, True), f"check_scales({value!r})")
        _check(lambda: MSC(net, value), _scales(value, True), f"MSC(scales={value!r})")
        for k in range(3):
            spec = [3, 1, 1, 1]
            spec[k] = value
            if _is_int(value) and value >= 1:
                continue                           # valid: its output is checked by test_receptive_field
            _check(lambda: receptive_fields_from_specs([tuple(spec)]), False, f"receptive_fields_from_specs([{spec!r}])")
