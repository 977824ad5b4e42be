"""Loading a retinal dataset folder into memory: layout detection, splits, decoding, checks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retinasynth.data.io import derive_fov, read_image, read_mask
from retinasynth.data.layouts import LAYOUTS, TRAIN_ONLY, Index, Layout, Record
from retinasynth.data.preprocess import FIT_MODES, prepare
from retinasynth.errors import ConfigError, DataError

SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class DataConfig:
    """How a dataset folder is read and brought to the working resolution.

    Attributes:
        layout: a name from ``LAYOUTS`` or None to detect it.
        size: square working resolution in pixels; None keeps native resolution.
        fit: 'squash' (resize the whole frame, as the Kaggle 512x512 DRIVE does) or 'pad'.
        crop_fov: crop to the FOV bounding box first.
        split_seed: seed of the train/test split of datasets without an official one.
        test_fraction: share of such datasets held out as test.
        exclude: sample ids never loaded (e.g. the images ``benchmark-downstream -o eval=val`` holds out, so
            that a generator fitted without them can be chosen on them); recorded with the run's config.
    """

    layout: str | None = None
    size: int | None = 256
    fit: str = "squash"
    crop_fov: bool = False
    split_seed: int = 0
    test_fraction: float = 0.25
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ex = self.exclude
        if isinstance(ex, (str, int)):  # `-o data.exclude=27,29` arrives as a string, `=27` as an int
            ex = [p for p in str(ex).split(",") if p.strip()]
        if not isinstance(ex, (list, tuple)) or not all(isinstance(i, (str, int)) for i in ex):
            raise ConfigError(f"data.exclude must be a list of sample ids, e.g. 27,29,31, got {self.exclude!r}.")
        object.__setattr__(self, "exclude", tuple(sorted({str(i).strip() for i in ex})))
        if self.layout is not None and self.layout not in LAYOUTS:
            raise ConfigError(f"unknown layout {self.layout!r}; valid: {', '.join(LAYOUTS)}.")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 16):
            raise ConfigError(f"data.size must be an integer >= 16 or null, got {self.size!r}.")
        if self.fit not in FIT_MODES:
            raise ConfigError(f"data.fit must be one of {', '.join(FIT_MODES)}, got {self.fit!r}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"data.test_fraction must be in (0, 1), got {self.test_fraction!r}.")


@dataclass
class Sample:
    """One decoded sample at working resolution."""

    id: str
    split: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    mask: np.ndarray  # (H, W) bool, vessels
    fov: np.ndarray  # (H, W) bool
    source: str  # path of the image file
    fov_source: str  # 'given' or 'derived'
    native_size: tuple[int, int] = (0, 0)  # (H, W) before preprocessing
    mask_source: str = ""  # path of the vessel mask file


@dataclass
class Dataset:
    root: Path
    layout: str
    split: str
    samples: list[Sample]
    split_source: str
    config: DataConfig
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def __iter__(self):
        return iter(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def fingerprint(self) -> str:
        """sha256 of the decoded samples (ids, images, masks and the FOV masks that scoring uses), independent
        of file paths."""
        from retinasynth.provenance import fingerprint_arrays

        items = []
        for s in self.samples:
            items += [(s.id + ":image", s.image), (s.id + ":mask", s.mask), (s.id + ":fov", s.fov)]
        return fingerprint_arrays(items)

    def legacy_fingerprint(self) -> str:
        """The fingerprint of runs recorded before the FOV masks were hashed (ids, images, masks only)."""
        from retinasynth.provenance import fingerprint_arrays

        items = []
        for s in self.samples:
            items += [(s.id + ":image", s.image), (s.id + ":mask", s.mask)]
        return fingerprint_arrays(items)

    def sample_fingerprints(self) -> dict[str, str]:
        """Per-sample sha256 of the decoded image at working resolution (for leakage checks)."""
        from retinasynth.provenance import fingerprint_arrays

        return {s.id: fingerprint_arrays([("image", s.image)]) for s in self.samples}

    def describe(self) -> dict:
        return {"root": str(Path(self.root).resolve()), "layout": self.layout, "split": self.split,
                "split_source": self.split_source, "n": len(self), "ids": self.ids,
                "config": dataclasses.asdict(self.config), "fingerprint": self.fingerprint(),
                "sample_fingerprints": self.sample_fingerprints()}


def detect_layout(root: str | Path) -> Layout:
    """The first layout whose folder structure matches ``root``; a DataError lists what was tried."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder; pass the dataset's root folder (e.g. .../DRIVE).")
    if not root.is_dir():
        raise DataError(f"{root}: is a file, not a folder; pass the dataset's root folder.")
    for make in LAYOUTS.values():
        layout = make()
        if layout.detect(root):
            return layout
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())[:12]
    tried = "; ".join(f"{m().name}: {m().expects}" for m in LAYOUTS.values())
    raise DataError(f"{root}: matches no known dataset layout (tried {tried}); found "
                    f"{', '.join(found) or 'nothing'}. Rearrange it as images/ + masks/ or pass --layout.")


def _assign_splits(index: Index, cfg: DataConfig) -> list[Record]:
    if index.split_source != "seeded":
        return index.records
    ids = sorted(r.id for r in index.records)
    rng = np.random.default_rng(cfg.split_seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_test = int(round(len(ids) * cfg.test_fraction)) if len(ids) > 1 else 0
    test = set(order[:n_test])
    return [dataclasses.replace(r, split="test" if r.id in test else "train") for r in index.records]


def index_dataset(root: str | Path, cfg: DataConfig = DataConfig()) -> tuple[Layout, Index, list[Record]]:
    root = Path(root)
    layout = LAYOUTS[cfg.layout]() if cfg.layout else detect_layout(root)
    if cfg.layout and not root.is_dir():
        detect_layout(root)  # raises the missing-folder error
    index = layout.index(root)
    records = _assign_splits(index, cfg)
    return layout, index, records


def load_record(rec: Record, cfg: DataConfig, problems: list[str]) -> Sample | None:
    """Decode, validate and preprocess one record; append problems instead of raising."""
    try:
        image = read_image(rec.image)
        mask = read_mask(rec.mask)
        fov = read_mask(rec.fov, warn_non_binary=False) if rec.fov else None
    except DataError as e:
        problems.append(str(e))
        return None
    bad = []
    if mask.shape != image.shape[:2]:
        bad.append(f"{rec.mask}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {rec.image.name} "
                   f"is {image.shape[1]}x{image.shape[0]}; the mask must match the image size")
    if fov is not None and fov.shape != image.shape[:2]:
        bad.append(f"{rec.fov}: FOV mask size {fov.shape[1]}x{fov.shape[0]} differs from its image "
                   f"{image.shape[1]}x{image.shape[0]}")
    if not bad and not mask.any():
        bad.append(f"{rec.mask}: vessel mask is empty (no pixel > 127); fix or remove this pair")
    if bad:
        problems.extend(bad)
        return None
    fov_source = "given"
    if fov is None or not fov.any():
        fov, fov_source = derive_fov(image), "derived"
    native = image.shape[:2]
    image, mask, fov = prepare(image, mask, fov, cfg.size, cfg.fit, cfg.crop_fov)
    return Sample(rec.id, rec.split or "train", image, mask, fov, str(rec.image), fov_source, native, str(rec.mask))


def load_dataset(root: str | Path, split: str | None = None, cfg: DataConfig | None = None,
                 progress: bool = False) -> Dataset:
    """Load a dataset folder as downloaded.

    Args:
        root: the dataset's root folder (DRIVE, Kaggle, CHASE_DB1, STARE, HRF or generic layout).
        split: 'train', 'test' or 'all'. Datasets without an official split get a seeded one. None (the
            default): 'all' for a synthetic set written by `retinasynth synthesize` (every pair), else 'train'.
        cfg: how to read and resize; defaults to ``DataConfig()``.
        progress: show a progress bar while decoding.

    Raises:
        DataError: one line listing every problem found (missing pairs, corrupt files, size mismatch).
    """
    cfg = cfg or DataConfig()
    if split is None:
        split = "all" if (Path(root) / "synth.json").is_file() else "train"
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    root = Path(root)
    layout, index, records = index_dataset(root, cfg)
    unknown = sorted(set(cfg.exclude) - {r.id for r in records})
    if unknown:
        raise DataError(f"{root}: data.exclude names id(s) {', '.join(unknown[:5])} that the {layout.name} layout "
                        f"does not have (ids look like {', '.join(sorted(r.id for r in records)[:3])}); fix the list.")
    wanted = [r for r in records if (split == "all" or r.split == split) and r.id not in cfg.exclude]
    problems = [p for p in index.problems
                if split == "all" or _problem_in_split(p.replace(str(root), "", 1), split, layout.name)]
    samples = []
    it = wanted
    if progress:
        from retinasynth.progress import progress as progress_bar

        it = progress_bar(wanted, desc=f"loading {layout.name}/{split}", unit="img", leave=False)
    for rec in it:
        s = load_record(rec, cfg, problems)
        if s is not None:
            samples.append(s)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in {root}: " + " | ".join(problems))
    if not samples and split == "test" and index.split_source == TRAIN_ONLY:
        raise DataError(f"{root}: has train/ but no test/, so there is no test split to score; add a test/ folder "
                        "(images/ + masks/), score held-out training images with -o bench.eval=val, or give "
                        "labelled images of another set with --test-data NAME=PATH.")
    if not samples:
        have = sorted({r.split for r in records if r.split})
        raise DataError(f"{root}: no samples in split {split!r} of the {layout.name} layout "
                        f"(splits present: {', '.join(have) or 'none'}).")
    return Dataset(root, layout.name, split, samples, index.split_source, cfg)


def _problem_in_split(problem: str, split: str, layout: str) -> bool:
    """Index problems name their folder (relative to the root, so that a root under e.g. /data/test/
    does not look like the test split); keep those of the requested split (all, if unknown)."""
    names = {"train": ("/training", "/train"), "test": ("/test", "/testing")}
    other = "test" if split == "train" else "train"
    mine = any(n + ":" in problem or n + "/" in problem for n in names[split])
    theirs = any(n + ":" in problem or n + "/" in problem for n in names[other])
    return mine or not theirs
