"""Training DeepLab models on PASCAL VOC 2012 (lesson 05), as a library and a command line.

The recipe of DeepLab v1/v2 (arXiv 1412.7062 Sec. 5, arXiv 1606.00915 Sec. 4.1):

- SGD, momentum 0.9, weight decay 5e-4, batches of random crops (321 px in the released configs);
- v1's "step" learning rate (x0.1 every 2000 iterations) or v2's "poly" ``lr_t = lr_0 (1 - t / T)^0.9``,
  with the classifier (the freshly initialised last layer) at 10x the base rate;
- cross-entropy, 255 ("void") ignored, on labels subsampled to the stride-8 logits (v1/v2) or on
  logits upsampled to the labels (v3) (:mod:`.loss`); v2's multi-scale inputs (MSC) optional;
- scored by mean IoU from one confusion matrix over the whole validation set, on whole images
  (:mod:`deeplab_lessons.inference`).

Each model's published recipe is :meth:`TrainConfig.paper` (``--paper``; ``--dry-run`` prints it).

Where each part lives: :mod:`.recipe` (:class:`TrainConfig`, schedules, published recipes),
:mod:`.loss` (the two label targets), :mod:`.engine`
(:func:`train`), :mod:`.checkpoint` (atomic saves, ``weights_only`` loads, :func:`load_model`),
:mod:`.cli` (``python -m deeplab_lessons.train``), :mod:`.crf_rnn` (:func:`train_crf_as_rnn`: the CRF as
RNN of lesson 08, alone or end to end with the network). Models come from
:func:`deeplab_lessons.models.build_model`, the data order from :mod:`deeplab_lessons.data`.

Library::

    from deeplab_lessons.train import TrainConfig, train, load_model
    result = train(TrainConfig(model="largefov", iterations=500, out="runs/largefov"))
    result.metrics["mean_iou"]
    model = load_model("runs/largefov/model.pt")        # rebuilt from the config it stores

Command line (``--help`` lists every option)::

    python -m deeplab_lessons.train --model largefov --iters 2000 --out runs/largefov
    torchrun --nproc_per_node 2 -m deeplab_lessons.train --model largefov --out runs/ddp

Runs are deterministic for a seed on one machine (``num_workers`` any, data order and
augmentation are a function of the seed and the sample's position in the run), so ``--resume``
continues a run exactly where its last checkpoint left it. A run checkpoints every
``checkpoint_every`` iterations and on Ctrl-C or SIGTERM (then raises :class:`TrainingInterrupted`);
an ``out`` folder that already holds a run is refused unless resumed or ``overwrite=True``.
"""

from .checkpoint import (CHECKPOINT_FORMAT, LESSON_CHECKPOINT, LESSON_RUN, lesson_model, load_checkpoint, load_model,
                         plain_metrics, run_state, save_checkpoint, write_atomically)
from .cli import build_parser, config_from_args, main
from .crf_rnn import (CRF_TRAINING_MODES, CRFTraining, CRFTrainResult, refined_miou, train_crf_as_rnn,
                      upsampled_logits)
from .engine import (RUN_FILES, TrainingInterrupted, TrainResult, budget_warning, build_optimizer, deterministic,
                     dist_env, format_duration, prepare_out, projection, resume, score, set_lr, train, train_step)
from .loss import segmentation_loss, shrink_labels
from .recipe import LR_POLICIES, PAPER_RECIPES, RUN_FIELDS, TrainConfig, poly_lr, step_lr

__all__ = [
    "CHECKPOINT_FORMAT", "LESSON_CHECKPOINT", "LESSON_RUN", "lesson_model", "load_checkpoint", "load_model",
    "plain_metrics", "run_state", "save_checkpoint", "write_atomically",
    "build_parser", "config_from_args", "main",
    "CRF_TRAINING_MODES", "CRFTraining", "CRFTrainResult", "refined_miou", "train_crf_as_rnn", "upsampled_logits",
    "RUN_FILES", "TrainingInterrupted", "TrainResult", "budget_warning", "prepare_out", "build_optimizer",
    "deterministic", "dist_env", "format_duration", "projection", "resume", "score", "set_lr", "train", "train_step",
    "segmentation_loss", "shrink_labels",
    "LR_POLICIES", "PAPER_RECIPES", "RUN_FIELDS", "TrainConfig", "poly_lr", "step_lr",
]
