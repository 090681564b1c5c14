"""The papers' figures the lessons print beside their own measurements, each with its source.

One table, so a number quoted from a paper is typed once: ``paper("v1.rf.7x7.convolutional")``
returns the :class:`PaperFigure` (value, unit, paper, where in it, what it measures) and
``cite(key)`` a short string for a printed line, e.g. ``"404 px (v1, Sec. 3.2)"``.

Papers: v1 = Chen et al., arXiv 1412.7062; v2 = arXiv 1606.00915; v3 = arXiv 1706.05587;
v3+ = arXiv 1802.02611; crfrnn = Zheng et al., "Conditional Random Fields as Recurrent Neural
Networks", arXiv 1502.03240 (ICCV 2015). "released config" marks numbers of the authors' released Caffe
configuration files rather than the paper text.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PaperFigure", "PAPER_FIGURES", "paper", "cite"]


@dataclass(frozen=True)
class PaperFigure:
    """A number from a paper: ``value`` in ``unit``, from ``source`` (paper) at ``where``, meaning ``what``."""

    value: float | str
    unit: str
    source: str
    where: str
    what: str

    def __str__(self) -> str:
        unit = "" if not self.unit else (self.unit if self.unit in ("%", "x") else " " + self.unit)
        return f"{self.value}{unit} ({self.source}, {self.where})"


def _f(value, unit, source, where, what) -> PaperFigure:
    return PaperFigure(value, unit, source, where, what)


PAPER_FIGURES: dict[str, PaperFigure] = {
    # v1: receptive fields and fc6 variants
    "v1.rf.7x7.zero_padding": _f(224, "px", "v1", "Sec. 3.2", "VGG16's receptive field with zero padding"),
    "v1.rf.7x7.convolutional": _f(404, "px", "v1", "Sec. 3.2", "VGG16's receptive field applied convolutionally"),
    "v1.rf.4x4.zero_padding": _f(128, "px", "v1", "Sec. 3.2", "field after decimating fc6 to 4x4, zero padding"),
    "v1.rf.4x4.convolutional": _f(308, "px", "v1", "Sec. 3.2", "field after decimating fc6 to 4x4, convolutional"),
    "v1.rf.largefov": _f(224, "px", "v1", "Table 2", "RF size of DeepLab-CRF-LargeFOV (3x3, rate 12)"),
    "v1.params.7x7": _f(134.3, "M", "v1", "Table 2", "parameters of DeepLab-CRF-7x7"),
    "v1.params.4x4": _f(65.1, "M", "v1", "Table 2", "parameters with fc6 4x4 x 4096"),
    "v1.params.largefov": _f(20.5, "M", "v1", "Table 2", "parameters of DeepLab-CRF-LargeFOV"),
    "v1.speedup.largefov": _f(3.36, "x", "v1", "Table 2", "training speed of LargeFOV over DeepLab-CRF-7x7"),
    "v1.crop.deeplab": _f(306, "px", "v1", "Sec. 3.2", "input size of DeepLab's dense score computation"),
    "v1.scores.deeplab": _f(39, "", "v1", "Sec. 3.2", "score map side for a 306 px input"),
    "v1.crop.largefov": _f(321, "px", "released config", "DeepLab-LargeFOV train.prototxt", "training crop"),
    "v1.test.largefov": _f(513, "px", "released config", "DeepLab-LargeFOV test.prototxt", "test input (padded)"),
    "v1.val.deeplab": _f("59.80 -> 63.74", "% mIoU", "v1", "Table 1(a)", "DeepLab before -> after CRF, VOC12 val"),
    "v1.val.largefov": _f("62.25 -> 67.64", "% mIoU", "v1", "Table 1(a)", "LargeFOV before -> after CRF, VOC12 val"),
    "v1.label_shrink": _f(8, "", "released config", "label_shrink, shrink_factor", "labels subsampled by 8 for the loss"),
    # v2
    "v2.val.largefov": _f("65.76 -> 69.84", "% mIoU", "v2", "Table 3", "VGG16 LargeFOV before -> after CRF"),
    "v2.val.aspp_s": _f("66.98 -> 69.73", "% mIoU", "v2", "Table 3", "VGG16 ASPP-S before -> after CRF"),
    "v2.val.aspp_l": _f("68.96 -> 71.57", "% mIoU", "v2", "Table 3", "VGG16 ASPP-L before -> after CRF"),
    "v2.val.resnet101": _f("76.35 -> 77.69", "% mIoU", "v2", "Table 4",
                           "ResNet-101 with MSC, COCO pre-training, scale augmentation and ASPP-L, before -> after CRF"),
    # v2 Table 1 (v1 Table 2): fc6's field of view, val mIoU before -> after CRF
    "v2.table1.7x7_r4": _f("64.38 -> 67.64", "% mIoU", "v2", "Table 1", "fc6 7x7, rate 4 (FOV 224): before -> after CRF"),
    "v2.table1.4x4_r4": _f("59.80 -> 63.74", "% mIoU", "v2", "Table 1", "fc6 4x4, rate 4 (FOV 128): before -> after CRF"),
    "v2.table1.4x4_r8": _f("63.41 -> 67.14", "% mIoU", "v2", "Table 1", "fc6 4x4, rate 8 (FOV 224): before -> after CRF"),
    "v2.table1.largefov": _f("62.25 -> 67.64", "% mIoU", "v2", "Table 1",
                             "fc6 3x3, rate 12 (LargeFOV, FOV 224): before -> after CRF"),
    # v2 Table 2: learning-rate policy, LargeFOV before CRF
    "v2.table2.step": _f(62.25, "% mIoU", "v2", "Table 2", "step policy, batch 30, 6K iterations"),
    "v2.table2.poly": _f(63.42, "% mIoU", "v2", "Table 2", "poly policy, batch 30, 6K iterations"),
    "v2.table2.poly_20k": _f(65.88, "% mIoU", "v2", "Table 2", "poly policy, batch 10, 20K iterations"),
    "v1.crf.search": _f("w1 in [5, 10], theta_alpha in [50:10:100], theta_beta in [3:1:10]", "", "v1", "Sec. 5",
                        "coarse-to-fine CRF parameter search, w2 = 3 and theta_gamma = 3 fixed"),
    "v2.msc.scales": _f("1, 0.75, 0.5", "", "v2", "Sec. 3.2 and 4.1", "MSC input scales, fused by max, trained jointly"),
    # v3
    "v3.table1.os32": _f(70.06, "% mIoU", "v3", "Table 1", "ResNet-50 cascaded to block7, output stride 32"),
    "v3.table1.os16": _f(73.88, "% mIoU", "v3", "Table 1", "ResNet-50 cascaded to block7, output stride 16"),
    "v3.table1.os8": _f(75.18, "% mIoU", "v3", "Table 1", "ResNet-50 cascaded to block7, output stride 8"),
    "v3.val.os16": _f(77.21, "% mIoU", "v3", "Table 6", "ResNet-101, multi-grid, ASPP + image pooling, OS 16, no CRF"),
    "v3.recipe": _f("crop 513, batch 16, lr 0.007 poly, 30k iterations, OS 16 train / 8 eval", "", "v3",
                    "Sec. 4.1 and Table 6", "training protocol"),
    "v3.table5.mg111": _f(75.36, "% mIoU", "v3", "Table 5", "multi-grid (1, 1, 1), ASPP (6, 12, 18), no image pooling, OS 16"),
    "v3.table5.mg124": _f(76.58, "% mIoU", "v3", "Table 5", "multi-grid (1, 2, 4), ASPP (6, 12, 18), no image pooling, OS 16"),
    "v3.table6.os8": _f(78.51, "% mIoU", "v3", "Table 6", "trained at output stride 16, evaluated at 8"),
    "v3.table8.shrink_vs_upsample": _f("76.01 -> 77.21", "% mIoU", "v3", "Appendix, Table 8",
                                       "subsampled labels -> upsampled logits in the loss"),
    "v3.table6.os16_to_os8": _f("77.21 -> 78.51", "% mIoU", "v3", "Table 6", "evaluated at output stride 16 -> 8"),
    "v3.table6.ms_flip": _f("78.51 -> 79.45 -> 79.77", "% mIoU", "v3", "Table 6",
                            "OS 8 -> + multi-scale inputs -> + left-right flip"),
    # v3+
    "v3p.separable_madds": _f("33% to 41%", "", "v3+", "Table 5",
                              "fewer multiply-adds with atrous separable convolution"),
    "v3p.xception.middle_blocks": _f(16, "", "v3+", "Sec. 3.2, Fig. 4", "middle-flow blocks of Xception-65"),
    # CRF as RNN (FCN-8s + the dense CRF as layers): Table 1 is the reduced VOC 2012 val set (346 images), no COCO
    "crfrnn.table1.fcn8s": _f(61.3, "% mIoU", "crfrnn", "Table 1", "plain FCN-8s, reduced VOC12 val"),
    "crfrnn.table1.disconnected": _f(63.7, "% mIoU", "crfrnn", "Table 1",
                                     "FCN-8s and CRF disconnected (CRF parameters by cross-validation)"),
    "crfrnn.table1.end_to_end": _f(69.6, "% mIoU", "crfrnn", "Table 1", "end-to-end training of CRF-RNN"),
    "crfrnn.gain.end_to_end": _f(3.4, "points", "crfrnn", "Sec. 7.1",
                                 "end-to-end training after initialising the CRF's parameters"),
    "crfrnn.gain.crf_only": _f(1, "point", "crfrnn", "Sec. 7.1", "training only the CRF, FCN-8s frozen"),
    "crfrnn.gain.test_t10": _f(0.2, "points", "crfrnn", "Sec. 7.1", "T = 10 at test time after training with T = 5"),
    "crfrnn.gain.train_t10": _f(-0.7, "points", "crfrnn", "Sec. 7.1", "T = 10 in training too"),
    "crfrnn.gain.per_label_weights": _f(1.8, "points", "crfrnn", "Sec. 7.1", "one kernel weight per label"),
    "crfrnn.gain.asymmetric": _f(0.9, "points", "crfrnn", "Sec. 7.1", "asymmetric compatibility, on top of that"),
    "crfrnn.test.coco": _f(74.7, "% mIoU", "crfrnn", "Sec. 1", "VOC 2012 test, trained with COCO"),
    "crfrnn.lr": _f("1e-13", "", "crfrnn", "Sec. 6", "fixed learning rate (momentum 0.99, one image per batch)"),

}


def paper(key: str) -> PaperFigure:
    """The figure stored under ``key``; a ``KeyError`` listing the keys that share its prefix."""
    if key not in PAPER_FIGURES:
        prefix = key.split(".")[0]
        near = [k for k in PAPER_FIGURES if k.startswith(prefix)]
        raise KeyError(f"no paper figure {key!r}; figures of {prefix!r}: {near}")
    return PAPER_FIGURES[key]


def cite(key: str) -> str:
    """``"value unit (paper, where)"`` for a printed line."""
    return str(paper(key))
