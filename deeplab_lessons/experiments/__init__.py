"""The DeepLab papers' experiments, measured on the embedded set with several seeds.

``python -m deeplab_lessons.experiments NAME [NAME ...]`` runs experiments (``list`` names them,
``all`` runs every one), each (arm, seed) recorded in ``results/NAME.json`` as it finishes;
a rerun skips what is recorded. The lessons plot those files beside the papers' numbers.

Where each part lives: :mod:`.suite` (what each experiment trains and measures, the budget),
:mod:`.measures` (scores beyond mIoU: object sizes, the image-level pair, the CRF by trimap band,
cue flips, each dilated conv's taps on the map), :mod:`.runner` (train once with a learning curve,
measure, record atomically; the CRF-as-RNN arms), :mod:`.results` (mean and spread, the paper's number, Welch's test of a
difference and its power, convergence), :mod:`.properties` (the
embedded set's P1-P6 table), :mod:`.cli`.
"""

from .measures import (CRF_BANDS, FLIP_BINS, MIN_TAP_SHARE, PAPER_CROPS, crf_measures, crf_search, cue_flips,
                       dilated_tap_shares, object_regions, segmentation_measures)
from .properties import colour_only_miou, data_properties, properties_markdown, size_span, write_table
from .results import (CONVERGED_GAIN, arm_values, arms, compare, compare_values, convergence, format_table, mean_std,
                      metric_value, paper_value, summary, tap_share_markdown, verdict, welch)
from .runner import (CRF_SEARCH_IMAGES, RESULTS_DIR, RUNS_DIR, arm_tap_shares, command, cue_scenes, data_marker,
                     load_results, measure, run_config, run_experiment, run_key, tap_share_rows, trained_model)
from .suite import (CRF_RNN_TRAINING, DEFAULT_SEEDS, EXPERIMENTS, LEARNABILITY_ITERATIONS, SMOKE_TRAINING,
                    SUITE_TRAINING, Arm, Experiment)

__all__ = [
    "CRF_BANDS", "FLIP_BINS", "MIN_TAP_SHARE", "PAPER_CROPS", "arm_tap_shares", "crf_measures", "crf_search",
    "cue_flips", "dilated_tap_shares", "object_regions", "segmentation_measures", "tap_share_rows",
    "colour_only_miou", "data_properties", "properties_markdown", "size_span", "write_table",
    "CONVERGED_GAIN", "arm_values", "arms", "compare", "compare_values", "convergence", "format_table", "mean_std",
    "metric_value", "paper_value", "summary", "tap_share_markdown", "verdict", "welch",
    "CRF_SEARCH_IMAGES", "RESULTS_DIR", "RUNS_DIR", "command", "cue_scenes", "data_marker", "load_results", "measure",
    "run_config", "run_experiment", "run_key", "trained_model",
    "CRF_RNN_TRAINING", "DEFAULT_SEEDS", "EXPERIMENTS", "LEARNABILITY_ITERATIONS", "SMOKE_TRAINING", "SUITE_TRAINING",
    "Arm", "Experiment",
]
