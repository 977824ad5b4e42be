"""The benchmark's arms: one registry entry each, the only place an arm's behaviour is written down.

An :class:`Arm` says which pools its batches draw from, how many optimiser steps it trains (as a multiple of
``bench.steps``), what enters its cache key, whether it starts from the synthetic pretraining, which arms it
is compared with, which of them is its compute-matched control (the comparison its verdict comes from), and
the words a report uses for each verdict. Planning (``plan.py``), running (``benchmark.py``), statistics
(``stats.py``) and rendering (``report.py``) read these entries and compare no arm names of their own.

Adding an arm is one :func:`register` call (and its tests); see ``tests/test_bench_arms.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retinasynth.errors import ConfigError

# The verdicts a comparison can reach (the CI of the difference against zero).
ABOVE, BELOW, INCLUDES = "CI above zero", "below zero", "includes zero"


@dataclass(frozen=True)
class Arm:
    """How one arm trains and how it is read.

    Attributes:
        name: the arm's name in ``bench.arms``, file names and reports.
        sampling: the pool every batch element is drawn from: 'real', 'real+synth' (synthetic with
            probability ``synth_ratio``) or 'synth'.
        steps: optimiser steps as a multiple of ``bench.steps`` (for 'pretrain': pretraining + fine-tune).
        uses_real / uses_synth: whether the model depends on the regime's real subset / the synthetic set
            (what enters its cache key; an arm without real images is trained once for every regime).
        pretrain: fine-tune from the synthetic pretraining of the same seed (the 'synth' model) on the
            real subset, with ``steps - 1`` times ``bench.steps`` of fine-tuning.
        same_model_as: an arm whose model at ``steps`` times the steps is this one (equal cache keys: the
            run is trained once), e.g. 'real-2x' is 'real' at twice the steps.
        compare: the arms this one is compared with, in every regime and on every evaluation set.
        control: the compute-matched control: the comparison its verdict (and the primary family) uses.
            None for controls themselves.
        config_keys: settings that enter only this arm's cache key (each left out at its default value,
            so cells recorded before the setting existed stay valid); every arm without them leaves them out.
        ignores: settings left out of this arm's cache key because its training never reads them.
        augment: the augmentation this arm trains with instead of ``bench.augment`` (None: the protocol's).
        adapt: a domain-adaptation control that uses the unlabelled target photographs of ``--adapt NAME=DIR``
            (:mod:`retinasynth.bench.adapt`): 'fda' and 'hist' train on the real subset brought to target looks
            (Fourier amplitude swap, histogram matching); 'self-train' fine-tunes the 'real' model on the real
            subset plus the target photographs pseudo-labelled by it. Their keys include the photographs.
        label: one line for the report's list of arms.
        meaning: per verdict against its control, the sentence the report prints.
    """

    name: str
    sampling: str
    steps: int = 1
    uses_real: bool = True
    uses_synth: bool = False
    pretrain: bool = False
    same_model_as: str | None = None
    compare: tuple[str, ...] = ()
    control: str | None = None
    config_keys: dict = field(default_factory=dict)
    ignores: tuple[str, ...] = ()
    augment: str | None = None
    adapt: str | None = None
    label: str = ""
    meaning: dict = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return self.uses_synth


ARMS: dict[str, Arm] = {}


def register(arm: Arm) -> Arm:
    """Add ``arm`` to the registry (its name must be new; its comparisons must name known arms)."""
    if arm.name in ARMS:
        raise ValueError(f"arm {arm.name!r} is registered already")
    for other in (*arm.compare, *((arm.control,) if arm.control else ()),
                  *((arm.same_model_as,) if arm.same_model_as else ())):
        if other != arm.name and other not in ARMS:
            raise ValueError(f"arm {arm.name!r} refers to unknown arm {other!r}; register that first")
    if arm.control is not None and arm.control not in arm.compare:
        raise ValueError(f"arm {arm.name!r}: its control {arm.control!r} must be one of its comparisons")
    if arm.sampling not in ("real", "real+synth", "synth"):
        raise ValueError(f"arm {arm.name!r}: unknown sampling {arm.sampling!r}")
    ARMS[arm.name] = arm
    return arm


def unregister(name: str) -> None:
    """Remove an arm (tests add and remove toy arms)."""
    ARMS.pop(name, None)


def get_arm(name: str) -> Arm:
    try:
        return ARMS[name]
    except KeyError:
        raise ConfigError(f"unknown arm {name!r}; valid: {', '.join(ARMS)}.") from None


def arm_names() -> tuple[str, ...]:
    return tuple(ARMS)


_NEUTRAL = "no difference detectable with these images and seeds"

register(Arm(
    name="real", sampling="real", ignores=("synth_ratio",),
    label="real patches only: the baseline",
    meaning={ABOVE: "", BELOW: "", INCLUDES: ""}))
register(Arm(
    name="real-2x", sampling="real", steps=2, same_model_as="real", compare=("real",), ignores=("synth_ratio",),
    label="real patches only with twice the steps: the compute-matched control of every arm that trains twice "
          "as long (its cell at the largest regime is also the plateau run)",
    meaning={ABOVE: "twice the steps alone help the real arm: the protocol is not at a plateau",
             BELOW: "twice the steps hurt the real arm (overfitting)",
             INCLUDES: "twice the steps do not measurably help the real arm"}))
register(Arm(
    name="real+aug", sampling="real", steps=2, compare=("real", "real-2x"), control="real-2x",
    ignores=("synth_ratio",), augment="camera",
    label="the real images with strong augmentation aimed at camera shift (geometry, gamma, contrast, colour, "
          "illumination, plasma fields, blur, noise, JPEG) and twice the steps: what a user gets without "
          "synthetic pairs, at the synthetic arms' compute",
    meaning={ABOVE: "strong camera-shift augmentation beat the same steps on the plainly augmented real images",
             BELOW: "strong camera-shift augmentation did worse than the same steps without it",
             INCLUDES: "strong camera-shift augmentation did no better than the same steps without it"}))
register(Arm(
    name="real+synth", sampling="real+synth", uses_synth=True, compare=("real", "real+aug"), control="real",
    label="each batch element synthetic with probability synth_ratio, else real; same steps as real",
    meaning={ABOVE: "adding the synthetic pairs helped (same steps as real)",
             BELOW: "adding the synthetic pairs hurt",
             INCLUDES: _NEUTRAL}))
register(Arm(
    name="synth", sampling="synth", uses_real=False, uses_synth=True, compare=("real", "real+aug"), control="real",
    ignores=("synth_ratio",),
    label="synthetic pairs only (no real image: trained once per seed, the same for every regime)",
    meaning={ABOVE: "synthetic pairs alone beat the real images",
             BELOW: "synthetic pairs alone are worse than the real images",
             INCLUDES: "synthetic pairs alone are indistinguishable from the real images"}))
register(Arm(
    name="real+fda", sampling="real", steps=2, adapt="fda", compare=("real", "real-2x", "real+aug"),
    ignores=("synth_ratio",), config_keys={"fda_beta": 0.01, "adapt_looks": 8},
    label="domain-adaptation control: the real images with their low-frequency Fourier amplitudes swapped for "
          "those of the unlabelled target photographs (--adapt; FDA), twice the steps",
    meaning={ABOVE: "", BELOW: "", INCLUDES: ""}))
register(Arm(
    name="real+hist", sampling="real", steps=2, adapt="hist", compare=("real", "real-2x", "real+aug"),
    ignores=("synth_ratio",), config_keys={"adapt_looks": 8},
    label="domain-adaptation control: the real images histogram-matched (per channel, inside the FOV) to the "
          "unlabelled target photographs (--adapt), twice the steps",
    meaning={ABOVE: "", BELOW: "", INCLUDES: ""}))
register(Arm(
    name="self-train", sampling="real", steps=2, adapt="self-train", compare=("real", "real-2x", "real+aug"),
    ignores=("synth_ratio",),
    # the pseudo-labels are drawn with the scoring settings: here they train, so they enter this arm's key
    config_keys={"threshold": 0.5, "infer_tile": None, "infer_overlap": 0.5},
    label="domain-adaptation control: the 'real' model labels the unlabelled target photographs (--adapt), then "
          "is fine-tuned on the real subset plus those pseudo-labels with the steps of 'real' again",
    meaning={ABOVE: "", BELOW: "", INCLUDES: ""}))
register(Arm(
    name="pretrain", sampling="real", steps=2, uses_synth=True, pretrain=True,
    compare=("real", "real-2x", "real+aug", "real+fda", "real+hist", "self-train"),
    control="real-2x", config_keys={"finetune_lr": None, "pretrain_mix": 0.0},
    label="the synth model of the same seed fine-tuned on the real subset: twice the steps in all, so read "
          "against real-2x",
    meaning={ABOVE: "pretraining on the synthetic pairs beat spending the same steps on the real images: a data "
                    "effect, not compute",
             BELOW: "the same steps spent on the real images alone did better than synthetic pretraining",
             INCLUDES: "synthetic pretraining did no better than the same steps on the real images"}))
register(Arm(
    name="pretrain+aug", sampling="real", steps=2, uses_synth=True, pretrain=True, augment="camera",
    compare=("real", "real-2x", "real+aug", "pretrain", "real+fda", "real+hist", "self-train"), control="real+aug",
    config_keys={"finetune_lr": None, "pretrain_mix": 0.0},
    label="the synth model of the same seed fine-tuned on the real subset with the camera-shift augmentation of "
          "real+aug: twice the steps in all, so read against real+aug (same steps, same augmentation, no "
          "synthetic pairs)",
    meaning={ABOVE: "synthetic pretraining added to what strong augmentation gives at the same compute",
             BELOW: "strong augmentation alone did better than synthetic pretraining followed by it",
             INCLUDES: "synthetic pretraining added nothing measurable to strong augmentation"}))
