"""The downstream segmenter, below everything that uses it: an smp model with its own configuration, trained
from scratch on Dice + BCE, scored at native resolution, saved with the config that rebuilds it.

Used by the benchmark (`retinasynth.bench`), by `fit`'s vessel-consistency loss and `evaluate`'s proxy
(`retinasynth.train`), and by `synthesize --filter-model` (`retinasynth.synth`).
"""

from retinasynth.segmenter.config import SegmenterConfig
from retinasynth.segmenter.model import (
    create_segmenter,
    evaluate_segmenter,
    load_segmenter,
    predict_prob,
    save_segmenter,
    train_reader,
    train_segmenter,
)

__all__ = ["SegmenterConfig", "create_segmenter", "evaluate_segmenter", "load_segmenter", "predict_prob",
           "save_segmenter", "train_reader", "train_segmenter"]
