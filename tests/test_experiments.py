"""The experiment suite: measures against hand computations, the runner's bookkeeping (record as
it goes, skip what is recorded, replace what is stale), the results arithmetic and the CLI."""

import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from deeplab_lessons import experiments as ex
from deeplab_lessons.experiments.cli import main as cli_main
from deeplab_lessons.data import make_synthetic_voc
from deeplab_lessons.data.synthetic import IMAGE_CUE_PAIR


@pytest.fixture(scope="module")
def tiny_voc(tmp_path_factory):
    return make_synthetic_voc(tmp_path_factory.mktemp("exp"), n_train=4, n_val=4, size=(64, 80), seed=5)


def test_segmentation_measures_by_hand():
    a, b = IMAGE_CUE_PAIR
    target = np.zeros((6, 8), dtype=np.uint8)
    target[0:2, 0:2] = a          # 4 px object of class a
    target[3:6, 3:6] = 5          # 9 px object
    target[0:4, 6:8] = b          # 8 px object of class b
    target[5, 0] = 255
    pred = target.copy().astype(np.int64)
    pred[0, 0] = b                # one a-pixel swapped within the pair
    pred[3, 3] = 0                # one object pixel missed
    pred[5, 0] = 7                # void: not scored
    m = ex.segmentation_measures([pred], [target])
    # pair: a has 3 right + 1 swapped, b has 8 right -> 11 / 12
    assert m["pair_accuracy"] == pytest.approx(11 / 12)
    # foreground: 21 object px, 20 predicted as some object -> IoU 20 / 21
    assert m["foreground_iou"] == pytest.approx(20 / 21)
    terciles = m["size_terciles"]
    assert sum(terciles["objects"]) == 3
    # smallest object (class a, 4 px) has accuracy 3/4, the 9 px one 8/9, the 8 px one 1
    assert sorted(x for x in terciles["accuracy"] if x is not None) == pytest.approx(sorted([3 / 4, 8 / 9, 1.0]))
    assert m["iou"][5] == pytest.approx(8 / 9)


def test_object_regions_split_connected_parts():
    target = np.zeros((5, 5), dtype=np.uint8)
    target[0, 0] = target[4, 4] = 3
    target[2, 2] = 255
    regions = ex.object_regions(target)
    assert [c for c, _ in regions] == [3, 3] and all(m.sum() == 1 for _, m in regions)


def test_crf_measures_bands_sum_and_zero_gain_without_pairwise():
    from deeplab_lessons.crf import CRFParams
    from deeplab_lessons.data import synthesize_image

    image, target = synthesize_image(1, 0, size=(48, 64))
    logits = torch.randn(21, 6, 8)
    out = ex.crf_measures([image], [logits], [target], params=CRFParams(pos_w=0.0, bi_w=0.0, iterations=3))
    assert out["gain"] == pytest.approx(0.0, abs=1e-9)            # no pairwise terms: the CRF is the softmax
    assert all(v["gain"] == pytest.approx(0.0, abs=1e-9) for v in out["bands"].values() if v["pixels"])
    assert all(v["gain"] is None for v in out["bands"].values() if not v["pixels"])
    scored = int((target != 255).sum())
    widest = str(max(ex.CRF_BANDS))
    assert out["bands"][widest]["pixels"] + out["bands"]["beyond"]["pixels"] == scored


def test_compare_is_welchs_t_test_with_its_power():
    def rec(arm, seed, v):
        return {"arm": arm, "seed": seed, "measures": {"mean_iou": v}, "paper": None}
    results = {"records": [rec("a", s, v) for s, v in enumerate([0.50, 0.52, 0.54])]
               + [rec("b", s, v) for s, v in enumerate([0.60, 0.61, 0.62])]
               + [rec("c", s, v) for s, v in enumerate([0.53, 0.56, 0.59])]}
    from scipy import stats

    ab = ex.compare(results, "a", "b")
    assert ab["difference"] == pytest.approx(9.0) and ab["spread"] == pytest.approx(3.0) and ab["resolved"]
    ac = ex.compare(results, "a", "c")
    assert ac["difference"] == pytest.approx(4.0) and ac["spread"] == pytest.approx(5.0) and not ac["resolved"]
    for c, other in ((ab, [60, 61, 62]), (ac, [53, 56, 59])):          # against scipy's Welch test
        ref = stats.ttest_ind(other, [50, 52, 54], equal_var=False)
        assert c["t"] == pytest.approx(ref.statistic) and c["p"] == pytest.approx(ref.pvalue)
        assert c["n_a"] == c["n_b"] == 3 and c["ci"][0] < c["difference"] < c["ci"][1]
    # the confidence interval covers 0 exactly when the test does not resolve the difference
    assert ac["ci"][0] < 0 < ac["ci"][1] and ab["ci"][0] > 0
    # closed form of the detectable difference: (t_.975 + t_.80) standard errors at Welch's df
    se = (4 / 3 + 9 / 3) ** 0.5
    assert ac["detectable"] == pytest.approx((stats.t.ppf(0.975, ac["df"]) + stats.t.ppf(0.8, ac["df"])) * se)
    assert "— not resolved" in ex.verdict(ac) and "— resolved" in ex.verdict(ab) and "n = 3 + 3" in ex.verdict(ab)
    # the paper's difference: below what the experiment detects and not resolved -> it cannot test the claim
    for r in results["records"]:
        r["paper"] = {"a": "v3.table5.mg111", "b": "v3.table5.mg124", "c": "v3.table5.mg124"}.get(r["arm"])
    small = ex.compare(results, "a", "c")
    assert small["paper_difference"] == pytest.approx(ex.paper_value("v3.table5.mg124") - ex.paper_value("v3.table5.mg111"))
    assert "this experiment cannot test the paper's claim" in ex.verdict(small)
    # resolved: the direction against the paper's, and whether the interval holds the paper's difference
    big = ex.verdict(ex.compare(results, "a", "b"))
    assert "same direction (outside the interval)" in big and "cannot test" not in big
    one = ex.compare_values([0.5], [0.6, 0.7])
    assert not one["resolved"] and "too few to test" in ex.verdict(one)
    rows = ex.summary(results)
    assert [r["arm"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["mean"] == pytest.approx(52.0) and rows[0]["std"] == pytest.approx(2.0)


def test_paper_values_come_from_the_table():
    assert ex.paper_value("v2.table1.largefov") == pytest.approx(62.25)      # before CRF of "62.25 -> 67.64"
    assert ex.paper_value("v3.table5.mg111") == pytest.approx(75.36)
    for exp in ex.EXPERIMENTS.values():
        for arm in exp.arms:
            if arm.paper is not None:
                ex.paper_value(arm.paper)                                    # every key exists


def test_runner_records_skips_and_replaces(tiny_voc, tmp_path, monkeypatch):
    kw = dict(seeds=(0, 1), smoke=True, data=tiny_voc, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs",
              log=lambda s: None)
    results = ex.run_experiment("lr-policy", **kw)
    assert sorted((r["arm"], r["seed"]) for r in results["records"]) == sorted(
        (a.label, s) for a in ex.EXPERIMENTS["lr-policy"].arms for s in (0, 1))
    on_disk = ex.load_results(tmp_path / "results" / "lr-policy.json")
    assert on_disk["records"] == results["records"] and "python -m deeplab_lessons.experiments lr-policy" in on_disk["command"]
    for record in on_disk["records"]:                # each run's learning curve and its dilated convs' geometry
        assert record["history"][-1]["iteration"] == ex.SMOKE_TRAINING["iterations"] and len(record["history"]) >= 2
        assert record["geometry"]["crop_size"] == ex.SMOKE_TRAINING["crop_size"]
        assert any(".fc6" in k for k in record["geometry"]["off_centre_tap_share"])
    assert ex.runner.eval_interval(300) == 60 and ex.runner.eval_interval(2000) == 400   # 5 evaluations a run

    # a rerun trains and measures nothing
    def fail(*a, **k):
        raise AssertionError("recorded run was redone")
    monkeypatch.setattr(ex.runner, "measure", fail)
    again = ex.run_experiment("lr-policy", **kw)
    assert again["records"] == results["records"]
    monkeypatch.undo()

    # a killed suite: one record missing -> only that one runs, from the cached weights
    on_disk["records"] = on_disk["records"][1:]
    (tmp_path / "results" / "lr-policy.json").write_text(json.dumps(on_disk))
    calls = []
    real_train = ex.runner.train
    monkeypatch.setattr(ex.runner, "train", lambda cfg: calls.append(cfg) or real_train(cfg))
    healed = ex.run_experiment("lr-policy", **kw)
    assert len(healed["records"]) == 4 and calls == []                      # weights were cached


def test_shared_arms_train_once(tiny_voc, tmp_path, monkeypatch):
    calls = []
    real_train = ex.runner.train
    monkeypatch.setattr(ex.runner, "train", lambda cfg: calls.append(cfg.model) or real_train(cfg))
    kw = dict(seeds=(0,), smoke=True, data=tiny_voc, results_dir=tmp_path, runs_dir=tmp_path / "runs", log=lambda s: None)
    ex.run_experiment("lr-policy", **kw)
    ex.run_experiment("aspp", **kw)                     # its LargeFOV arm is lr-policy's poly arm
    assert calls.count("largefov") == 2                 # step and poly; not again for aspp


def test_cue_and_crf_experiments_run(tiny_voc, tmp_path):
    kw = dict(seeds=(0,), smoke=True, data=tiny_voc, results_dir=tmp_path, runs_dir=tmp_path / "runs", log=lambda s: None)
    cue = ex.run_experiment("cue", **kw)["records"][0]["measures"]
    assert len(cue["flipped"]) == len(cue["bins"]) - 1 == len(cue["pixels"])
    assert all(f is None or 0.0 <= f <= 1.0 for f in cue["flipped"])
    crf = ex.run_experiment("crf", **kw)["records"][0]["measures"]
    assert crf["search_images"] + crf["report_images"] == 4
    assert set(crf["search"]["best"]) == {"bi_w", "bi_xy_std", "bi_rgb_std"}


def test_cue_scenes_change_only_one_badge(tiny_voc):
    scenes = ex.cue_scenes(tiny_voc, min_radius=4.0)
    assert scenes
    for image, changed, objects, k, new in scenes:
        assert new != objects[k]["label"] and new not in IMAGE_CUE_PAIR
        diff = np.abs(image.astype(int) - changed.astype(int)).sum(-1) > 0
        bx, by = objects[k]["badge"]
        yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
        disc = np.hypot(xx - bx, yy - by) <= objects[k]["badge_radius"] + 1
        # every changed pixel lies in (or, through chroma upsampling, 1 px beside) a 16x16 JPEG block that the
        # badge's disc touches
        blocks = {(y // 16, x // 16) for y, x in zip(*np.nonzero(disc))}
        touched = np.isin((yy // 16) * 1000 + xx // 16, [by_ * 1000 + bx_ for by_, bx_ in blocks])
        assert diff.any() and not (diff & ~ndimage.binary_dilation(touched, np.ones((3, 3)))).any()


def test_bad_inputs_are_named(tmp_path, tiny_voc):
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        ex.run_experiment("nope", data=tiny_voc, results_dir=tmp_path)
    bad = tmp_path / "fov.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="fov.json is not a results file"):
        ex.load_results(bad)
    assert bad.read_text() == "{not json"                                  # nothing lost
    with pytest.raises(FileNotFoundError, match="python -m deeplab_lessons.experiments missing"):
        ex.load_results(tmp_path / "missing.json")
    assert cli_main(["nope"]) == 2
    with pytest.raises(SystemExit):
        cli_main(["fov", "--seeds"])


def test_cli_lists_every_experiment(capsys):
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ex.EXPERIMENTS)


def test_committed_results_are_complete():
    """Every experiment of the suite has a committed results file, made on the embedded set this
    generator writes (its marker, version included), with every arm at >= 3 seeds."""
    from deeplab_lessons import config
    from deeplab_lessons.data.synthetic import _marker

    current = _marker(**config.EMBEDDED_DEFAULT, classes=tuple(range(1, 21)), void_width=1)
    for name, exp in ex.EXPERIMENTS.items():
        results = ex.load_results(ex.RESULTS_DIR / f"{name}.json")
        assert results["budget"] == exp.budget, name
        assert results["data"] == json.loads(json.dumps(current)), (name, results["data"], "rerun " + results["command"])
        for arm in exp.arms:
            seeds = {r["seed"] for r in results["records"] if r["arm"] == arm.label}
            assert len(seeds) >= 3, (name, arm.label, seeds)


def test_cli_smoke_run(tiny_voc, tmp_path, capsys):
    args = ["lr-policy", "--smoke", "--seeds", "0", "--data", str(tiny_voc), "--results-dir", str(tmp_path),
            "--runs-dir", str(tmp_path / "runs")]
    assert cli_main(args) == 0
    assert "poly (power 0.9)" in capsys.readouterr().out
    assert len(ex.load_results(tmp_path / "lr-policy.json")["records"]) == 2


def test_data_readme_table_matches_the_recorded_results():
    from deeplab_lessons import config

    readme = (config.REPO_ROOT / "data" / "README.md").read_text()
    table = ex.properties_markdown(ex.data_properties(config.voc_root()))
    assert f"{ex.properties.TABLE_START}\n{table}\n{ex.properties.TABLE_END}" in readme


def test_off_centre_tap_share_matches_the_hand_counts():
    from deeplab_lessons.models import off_centre_tap_share

    # a 3x3 filter on the maps of 128-px crops (VGG 16 x 16, v3 8 x 8) and of the papers' crops (41, 33)
    cases = {(16, 6): 50.8, (16, 12): 15.6, (16, 18): 0.0, (16, 24): 0.0, (8, 6): 15.6, (8, 8): 0.0, (8, 12): 0.0,
             (8, 18): 0.0, (41, 24): 29.3, (33, 18): 33.1}
    for (n, rate), share in cases.items():
        assert round(100 * off_centre_tap_share(n, rate), 1) == share, (n, rate)
    # by hand on a 3-wide map at rate 1: corner positions see 3 of 8, edges 5 of 8, the centre all 8
    assert off_centre_tap_share(3, 1) == pytest.approx((4 * 3 + 4 * 5 + 8) / 9 / 8)
    assert off_centre_tap_share(5, 1, kernel_size=1) == 1.0


def test_dilated_tap_shares_reads_every_dilated_conv_of_a_model():
    from deeplab_lessons.models import build_model

    shares = ex.dilated_tap_shares(build_model("aspp-l", width=0.125, norm="batch"), 128)
    fc6 = {k: v for k, v in shares.items() if ".fc6" in k}
    assert len(fc6) == 4                                         # one per ASPP-L branch: rates 6, 12, 18, 24
    assert sorted(fc6.values(), reverse=True) == pytest.approx([0.5078, 0.1562, 0.0, 0.0], abs=1e-4)
    assert all(k.startswith("features.conv5") for k in shares if ".fc6" not in k)         # rate-2 conv5


def test_convergence_reads_the_learning_curves():
    def rec(seed, curve):
        return {"arm": "a", "seed": seed, "history": [{"iteration": 100 * (i + 1), "mean_iou": m}
                                                       for i, m in enumerate(curve)]}
    still = {"records": [rec(0, [0.2, 0.4, 0.5, 0.6]), rec(1, [0.2, 0.4, 0.52, 0.62])]}
    c = ex.convergence(still, "a")
    assert c["n"] == 2 and c["gains"] == pytest.approx([10.0, 10.0]) and not c["converged"]   # 3/4 of 400 = 300
    flat = {"records": [rec(0, [0.5, 0.7, 0.80, 0.81])]}
    assert ex.convergence(flat, "a")["converged"]
    assert ex.convergence({"records": [{"arm": "a", "seed": 0}]}, "a") is None


def test_crf_rnn_experiment_runs_every_arm(tiny_voc, tmp_path):
    """Smoke budget: every arm recorded; the learned arms carry a learning curve, their cost and the learnt
    parameters; the arms that do not depend on the seed say so; all are scored on the same report images."""
    kw = dict(seeds=(0,), smoke=True, data=tiny_voc, results_dir=tmp_path, runs_dir=tmp_path / "runs", log=lambda s: None)
    records = {r["arm"]: r for r in ex.run_experiment("crf-rnn", **kw)["records"]}
    assert set(records) == {arm.label for arm in ex.EXPERIMENTS["crf-rnn"].arms}
    alone = records["network alone"]["measures"]
    assert alone["gain"] == 0 and alone["mean_iou"] == alone["before"]
    for label, record in records.items():
        m = record["measures"]
        assert m["report_images"] == 2 and m["search_images"] == 2
        learned = "mode" in record["evaluate"]
        assert record["seed_dependent"] == learned
        if learned:
            assert [h["iteration"] for h in record["history"]] == [0, 1, 2] and record["seconds_per_step"] > 0
        if record["evaluate"]["crf"] == "learned":
            c = m["crf_parameters"]
            assert len(c["compatibility"]) == 21 and c["bi_w"] > 0 and c["pos_w"] > 0
        if record["evaluate"].get("mode") != "end-to-end" and record["evaluate"].get("mode") != "network":
            assert m["before"] == alone["before"]               # the same frozen network
    assert set(records["v1 search"]["measures"]["search"]["best"]) == {"bi_w", "bi_xy_std", "bi_rgb_std"}


def test_tap_share_rows_match_the_hand_counts_at_both_crops():
    """The issue's hand counts: on 16 x 16 (128-px crop, OS 8) ASPP-L's rates 18 and 24 keep none of their
    off-centre taps and LargeFOV's rate 12 keeps 15.6 %; at 321 px (41 x 41) ASPP-L's rate 24 keeps 29.3 %;
    v3 at 513 px (33 x 33, OS 16) keeps 33.1 % at rate 18, and on 8 x 8 rates 12 and 18 keep none."""
    rows = {r["arm"]: r for r in ex.tap_share_rows("aspp", ex.PAPER_CROPS["v2"])}
    aspp_l = rows["ASPP-L {6,12,18,24}"]
    assert (aspp_l["convs"], aspp_l["starved"], aspp_l["starved_paper"]) == (7, 2, 0)
    assert aspp_l["worst_share"] == 0.0 and aspp_l["worst_paper_share"] == pytest.approx(0.2933, abs=1e-4)
    assert rows["LargeFOV"]["worst_share"] == pytest.approx(0.1562, abs=1e-4) and rows["LargeFOV"]["starved"] == 0
    v3 = {r["arm"]: r for r in ex.tap_share_rows("v3-aspp", ex.PAPER_CROPS["v3"])}
    no_mg = v3["MG (1,1,1), no image pooling"]
    assert no_mg["starved"] == 2 and no_mg["worst_paper_share"] == pytest.approx(0.3306, abs=1e-4)
    assert v3["MG (1,2,4), no image pooling"]["starved"] == 3            # block 4's rate-8 unit as well
    small = {r["arm"]: r for r in ex.tap_share_rows("fov", 321)}["small field (51 px)"]
    assert small["convs"] == 0
    table = ex.tap_share_markdown(list(rows.values()))
    assert "| ASPP-L {6,12,18,24} | 7 | 0.0% (`aspp.branches.2.fc6.0`) | 2 |" in table
    with pytest.raises(ValueError, match="unknown experiment"):
        ex.arm_tap_shares("nope")
