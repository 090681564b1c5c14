"""The experiments of the DeepLab papers, as run on the embedded set: what each trains and measures.

An :class:`Experiment` is a list of :class:`Arm` s (one configuration each: ``TrainConfig``
overrides on top of :data:`SUITE_TRAINING`, evaluation options, the paper's number for that row)
run with several seeds. Arms of different experiments with the same configuration are the same
training: the runner trains it once and measures it for each.

``kind`` says what is measured per (arm, seed): ``"train"`` (the validation scores of
:func:`.measures.segmentation_measures`), ``"crf"`` (the CRF's gain by trimap band, and v1's
parameter search on held-out images), ``"cue"`` (which predictions flip when one object's
distant badge is changed: the effective receptive field on data), ``"crf-rnn"`` (the CRF as RNN of
lesson 08 on top of the shipped LargeFOV: each arm's CRF, and what training it gains, by trimap band).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

from deeplab_lessons.models.registry import register_model
from deeplab_lessons.models.vgg import deeplab_v1

#: The training budget of every run of the suite on a 2-core CPU: the lesson's network (width
#: 0.25, BatchNorm, AdamW, from scratch) at the lesson's crop and batch for 300 iterations, 15 % of
#: the learnability run (:data:`LEARNABILITY_ITERATIONS`), so that the suite fits in about two
#: hours. Not smaller crops: on a 96-px crop a rate-12 fc6 sees a 12 x 12 map and its outer taps
#: never touch the image, so LargeFOV would train as a 1x1 fc6 (lesson 04, section 6).
SUITE_TRAINING: dict = {"width": 0.25, "crop_size": 128, "batch_size": 8, "iterations": 300}

#: Iterations of the learnability run (the data set's property P6: LargeFOV from scratch), also the budget of the
#: v3 experiments: a ResNet from random weights sits on "all background" after 300 iterations and is still
#: learning after 2,000 (single-seed probes: val mIoU 4.8, 6.5, 10.4, 12.7 at 500, 1000, 1500, 2000).
LEARNABILITY_ITERATIONS = 2000

#: The smoke version (``--smoke``, ``make test``): the same code paths in seconds.
SMOKE_TRAINING: dict = {"width": 0.125, "crop_size": 64, "batch_size": 2, "iterations": 2}

#: The CRF as RNN's training (:class:`deeplab_lessons.train.CRFTraining` fields): 150 steps of 4 whole
#: training images (1.5 passes over the 400), 5 mean-field iterations in training and ``test_iterations``
#: (the paper's 10) at test time; the learning curve is read every ``eval_every`` steps on the search images.
CRF_RNN_TRAINING: dict = {"steps": 150, "batch_size": 4, "crf_lr": 0.01, "network_lr": 5e-5, "train_iterations": 5,
                          "eval_every": 30, "test_iterations": 10}

#: Its smoke version (``--smoke``): the same code paths in seconds.
SMOKE_CRF_RNN_TRAINING: dict = {**CRF_RNN_TRAINING, "steps": 2, "batch_size": 1, "eval_every": 1}

#: Seeds of a full run (the issue's "at least 3").
DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Arm:
    """One row of an experiment: ``train`` (TrainConfig overrides), ``evaluate`` (evaluation
    options: ``eval_output_stride``), ``paper`` (key of :data:`deeplab_lessons.papers.PAPER_FIGURES`
    holding the published number for this row, or None)."""

    label: str
    train: dict
    evaluate: dict = field(default_factory=dict)
    paper: str | None = None


@dataclass(frozen=True)
class Experiment:
    """A named experiment: its arms, what it measures, and where the paper reports it."""

    name: str
    title: str
    source: str
    arms: tuple[Arm, ...]
    kind: str = "train"
    budget: dict = field(default_factory=lambda: dict(SUITE_TRAINING))
    question: str = ""


#: v1 Table 2's fc6 variants with LargeFOV's 1024 filters (x width) instead of 4096, on their released
#: trunk, so that the field-of-view experiment varies only fc6's kernel and rate (and costs a fifth).
FOV_MODELS = {"fov-4x4-r4": {"fov": "4x4"}, "fov-4x4-r8": {"fov": "4x4", "fc6_rate": 8}, "fov-7x7-r4": {"fov": "7x7"}}
for _name, _kw in FOV_MODELS.items():
    register_model(_name, partial(deeplab_v1, fc6_channels=1024, **_kw))


def _fov_arm(label: str, name: str, paper: str) -> "Arm":
    return Arm(label, {"model": name, "init": "looks-linear", "label_target": "shrink"}, paper=paper)


LARGEFOV = Arm("LargeFOV (3x3, rate 12)", {"model": "largefov"}, paper="v2.table1.largefov")
SMALL_FIELD = Arm("small field (51 px)", {"model": "small-field", "label_target": "shrink"})
V3_BASE = {"model": "v3"}

_learn_budget = {**SUITE_TRAINING, "iterations": LEARNABILITY_ITERATIONS}

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "learnability", "LargeFOV from scratch at the CPU lesson's size", "data set property P6",
        (Arm("LargeFOV (3x3, rate 12)", {"model": "largefov"}), SMALL_FIELD), budget=_learn_budget,
        question="Does the default CPU network learn the set from random weights within 2,000 iterations, "
                 "and how far below it does a network with a 51-px field stay?"),
    Experiment(
        "fov", "Field of view of fc6", "v1 Table 2 / v2 Table 1",
        (SMALL_FIELD,
         _fov_arm("4x4, rate 4", "fov-4x4-r4", "v2.table1.4x4_r4"),
         _fov_arm("4x4, rate 8", "fov-4x4-r8", "v2.table1.4x4_r8"),
         _fov_arm("7x7, rate 4", "fov-7x7-r4", "v2.table1.7x7_r4"),
         LARGEFOV),
        question="Does a larger field of view (same depth) label objects better?"),
    Experiment(
        "lr-policy", "Step vs poly learning rate", "v2 Table 2",
        (Arm("step (x0.1 every third)", {"model": "largefov", "lr_policy": "step",
                                          "lr_step": SUITE_TRAINING["iterations"] // 3}, paper="v2.table2.step"),
         Arm("poly (power 0.9)", {"model": "largefov"}, paper="v2.table2.poly")),
        question="Same batch, same iterations: does poly beat step?"),
    Experiment(
        "aspp", "LargeFOV vs ASPP-S vs ASPP-L", "v2 Table 3",
        (Arm("LargeFOV", {"model": "largefov"}, paper="v2.val.largefov"),
         Arm("ASPP-S {2,4,8,12}", {"model": "aspp-s"}, paper="v2.val.aspp_s"),
         Arm("ASPP-L {6,12,18,24}", {"model": "aspp-l"}, paper="v2.val.aspp_l")),
        question="Do parallel atrous branches help, and at which object sizes?"),
    Experiment(
        "v3-aspp", "Multi-grid and image pooling", "v3 Table 5",
        (Arm("MG (1,1,1), no image pooling", {"model": "v3-multigrid-111"}, paper="v3.table5.mg111"),
         Arm("MG (1,2,4), no image pooling", {"model": "v3-no-image-pooling"}, paper="v3.table5.mg124"),
         Arm("MG (1,2,4) + image pooling", V3_BASE, paper="v3.val.os16")), budget=_learn_budget,
        question="Does image pooling tell apart the two classes only the image's tint separates?"),
    Experiment(
        "v3-output-stride", "Output stride in training and evaluation", "v3 Table 6 (and Table 1)",
        (Arm("train 16, evaluate 16", V3_BASE, paper="v3.val.os16"),
         Arm("train 16, evaluate 8", V3_BASE, {"eval_output_stride": 8}, paper="v3.table6.os8"),
         Arm("train 8, evaluate 8", {**V3_BASE, "output_stride": 8})), budget=_learn_budget,
        question="Is a denser evaluation (or training) worth its cost?"),
    Experiment(
        "crf", "Dense CRF gain by trimap band; v1's parameter search", "v1 Sec. 5, Fig. 5; v2 Table 3",
        (Arm("LargeFOV (3x3, rate 12)", {"model": "largefov"}),), kind="crf", budget=_learn_budget,
        question="Where does the CRF gain: near boundaries or everywhere?"),
    Experiment(
        "crf-rnn", "CRF as RNN: the CRF's weights learnt, alone and end to end", "Zheng et al. 2015, Table 1 and Sec. 7.1",
        (Arm("network alone", {"model": "largefov"}, {"crf": "none"}, paper="crfrnn.table1.fcn8s"),
         Arm("released parameters", {"model": "largefov"}, {"crf": "released"}),
         Arm("v1 search", {"model": "largefov"}, {"crf": "search"}, paper="crfrnn.table1.disconnected"),
         Arm("learned CRF (weights + compatibility)", {"model": "largefov"}, {"crf": "learned", "mode": "crf"}),
         Arm("learned end to end", {"model": "largefov"}, {"crf": "learned", "mode": "end-to-end"},
             paper="crfrnn.table1.end_to_end"),
         Arm("network fine-tuned alone, released CRF", {"model": "largefov"}, {"crf": "released", "mode": "network"})),
        kind="crf-rnn", budget=_learn_budget,
        question="Does learning the CRF's weights by backpropagation beat the released and the searched ones, "
                 "and does training the network through it gain more than training the network alone?"),
    Experiment(
        "cue", "Effective receptive field on data: flip one distant cue", "Luo et al. 2016 (gradients)",
        (SMALL_FIELD, Arm("LargeFOV (3x3, rate 12)", {"model": "largefov"})), kind="cue", budget=_learn_budget,
        question="How far from the badge does changing it still change the prediction?"),
)}
