"""Dataset layouts as users download them, detected from the root folder.

A layout knows how to recognise its folder structure (``detect``) and how to list the samples with
their official split (``index``). Indexing only looks at file names; decoding happens later, so that
every problem in a folder can be reported at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".ppm", ".bmp", ".ppm.gz")


@dataclass(frozen=True)
class Record:
    """One sample's files. ``split`` is 'train'/'test' when the dataset defines it, else None."""

    id: str
    image: Path
    mask: Path | None
    fov: Path | None = None
    split: str | None = None


@dataclass
class Index:
    records: list[Record]
    problems: list[str] = field(default_factory=list)
    split_source: str = "official"


def _files(folder: Path, exts=IMAGE_EXTS) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _ext(p) in exts and not p.name.startswith("."))


def _ext(p: Path) -> str:
    name = p.name.lower()
    return ".ppm.gz" if name.endswith(".ppm.gz") else p.suffix.lower()


def _stem(p: Path) -> str:
    name = p.name
    return name[: -len(_ext(p))] if name.lower().endswith(_ext(p)) else p.stem


def _pair(images: dict[str, Path], masks: dict[str, Path], where: str, problems: list[str],
          mask_hint: str = "") -> list[str]:
    """Ids present in both; list the orphans on either side as problems."""
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    if no_mask:
        names = [str(images[i].relative_to(images[i].parent.parent)) for i in no_mask]
        problems.append(f"{where}: images without vessel masks: {_fmt_ids(names)}{mask_hint}")
    if no_image:
        names = [str(masks[i].relative_to(masks[i].parent.parent)) for i in no_image]
        problems.append(f"{where}: vessel masks without images: {_fmt_ids(names)}")
    return sorted(set(images) & set(masks))


def _fmt_ids(ids: list[str]) -> str:
    return ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


class Layout:
    name: str = ""
    expects: str = ""  # shown when no layout matches

    def detect(self, root: Path) -> bool:
        raise NotImplementedError

    def index(self, root: Path) -> Index:
        raise NotImplementedError


class DRIVE(Layout):
    name = "drive"
    expects = "training/images/*.tif + training/1st_manual/*.gif (+ test/)"

    @staticmethod
    def _split_dirs(root: Path) -> list[tuple[str, Path]]:
        out = []
        for split, names in (("train", ("training",)), ("test", ("test", "testing"))):
            for n in names:
                if (root / n / "images").is_dir():
                    out.append((split, root / n))
                    break
        return out

    def detect(self, root: Path) -> bool:
        d = root / "training" / "images"
        return d.is_dir() and any(p.suffix.lower() in (".tif", ".tiff") for p in d.iterdir())

    def index(self, root: Path) -> Index:
        recs, problems = [], []
        for split, d in self._split_dirs(root):
            imgs = {m.group(1): p for p in _files(d / "images")
                    if (m := re.match(r"^(\d+)_(?:training|test)$", _stem(p)))}
            masks = {m.group(1): p for p in _files(d / "1st_manual")
                     if (m := re.match(r"^(\d+)_manual1$", _stem(p)))}
            fovs = {m.group(1): p for p in _files(d / "mask")
                    if (m := re.match(r"^(\d+)_(?:training|test)_mask$", _stem(p)))}
            hint = f" (expected {d.name}/1st_manual/<id>_manual1.gif)"
            for i in _pair(imgs, masks, f"{root}/{d.name}", problems, hint):
                recs.append(Record(i, imgs[i], masks[i], fovs.get(i), split))
        return Index(recs, problems)


class Kaggle(Layout):
    """Kaggle "Retina Blood Vessel": DRIVE resized to 512x512 PNG, grey-level masks."""

    name = "kaggle"
    expects = "train/image/*.png + train/mask/*.png (+ test/)"

    def detect(self, root: Path) -> bool:
        return (root / "train" / "image").is_dir() and (root / "train" / "mask").is_dir()

    def index(self, root: Path) -> Index:
        recs, problems = [], []
        for split in ("train", "test"):
            d = root / split
            if not (d / "image").is_dir():
                continue
            imgs = {_stem(p): p for p in _files(d / "image")}
            masks = {_stem(p): p for p in _files(d / "mask")}
            for i in _pair(imgs, masks, f"{d}", problems):
                recs.append(Record(f"{split}-{i}", imgs[i], masks[i], None, split))
        return Index(recs, problems)


class CHASE(Layout):
    """CHASE_DB1: Image_01L.jpg + Image_01L_1stHO.png; conventional split: 01-10 train, 11-14 test."""

    name = "chase"
    expects = "Image_XXY.jpg + Image_XXY_1stHO.png"

    def detect(self, root: Path) -> bool:
        return any(re.match(r"^Image_\d+[LR]_1stHO$", _stem(p)) for p in _files(root))

    def index(self, root: Path) -> Index:
        problems: list[str] = []
        files = _files(root)
        imgs = {_stem(p): p for p in files if re.match(r"^Image_\d+[LR]$", _stem(p))}
        masks = {m.group(1): p for p in files if (m := re.match(r"^(Image_\d+[LR])_1stHO$", _stem(p)))}
        recs = []
        for i in _pair(imgs, masks, str(root), problems, " (expected <id>_1stHO.png)"):
            num = int(re.match(r"^Image_(\d+)", i).group(1))
            recs.append(Record(i, imgs[i], masks[i], None, "train" if num <= 10 else "test"))
        return Index(recs, problems, "conventional (Image_01-10 train, Image_11-14 test)")


class STARE(Layout):
    """STARE: im0001.ppm(.gz) with Hoover's im0001.ah.ppm(.gz) labels, in any sub-folders."""

    name = "stare"
    expects = "*.ppm[.gz] images + *.ah.ppm[.gz] labels"

    @staticmethod
    def _all(root: Path) -> list[Path]:
        return sorted(p for p in root.rglob("*") if p.is_file() and _ext(p) in (".ppm", ".ppm.gz"))

    def detect(self, root: Path) -> bool:
        return any(".ah." in p.name for p in self._all(root))

    def index(self, root: Path) -> Index:
        problems: list[str] = []
        imgs, masks = {}, {}
        for p in self._all(root):
            parts = _stem(p).split(".")
            if len(parts) == 1:
                imgs[parts[0]] = p
            elif parts[1] == "ah":
                masks[parts[0]] = p
        # STARE ships 400 images but only 20 labelled; unlabelled ones are not an error.
        ids = sorted(set(imgs) & set(masks))
        no_image = sorted(set(masks) - set(imgs))
        if no_image:
            problems.append(f"{root}: vessel labels without images: {_fmt_ids(no_image)}")
        return Index([Record(i, imgs[i], masks[i]) for i in ids], problems, "seeded")


class HRF(Layout):
    name = "hrf"
    expects = "images/ + manual1/ + mask/"

    def detect(self, root: Path) -> bool:
        return (root / "images").is_dir() and (root / "manual1").is_dir()

    def index(self, root: Path) -> Index:
        problems: list[str] = []
        imgs = {_stem(p): p for p in _files(root / "images")}
        masks = {_stem(p): p for p in _files(root / "manual1")}
        fovs = {_stem(p).removesuffix("_mask"): p for p in _files(root / "mask")}
        ids = _pair(imgs, masks, str(root), problems, " (expected manual1/<id>.tif)")
        return Index([Record(i, imgs[i], masks[i], fovs.get(i)) for i in ids], problems, "seeded")


class NNUNet(Layout):
    """An nnU-Net v2 raw dataset: ``imagesTr/<case>_0000.png`` + ``labelsTr/<case>.png`` (label 1 = vessel), optional
    ``imagesTs/`` + ``labelsTs/`` (the test split), ``dataset.json``. The RGB photograph is the one channel file
    ``_0000`` (nnU-Net's natural-image reader); ``fovTr/``/``fovTs/`` (written by `retinasynth export`, ignored
    by nnU-Net) hold FOV masks where present."""

    name = "nnunet"
    expects = "imagesTr/<case>_0000.png + labelsTr/<case>.png (+ imagesTs/, labelsTs/, dataset.json)"

    def detect(self, root: Path) -> bool:
        return (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir()

    def index(self, root: Path) -> Index:
        problems: list[str] = []
        recs: list[Record] = []
        for split, tag in (("train", "Tr"), ("test", "Ts")):
            if not (root / f"images{tag}").is_dir():
                continue
            imgs = {}
            for p in _files(root / f"images{tag}"):
                m = re.match(r"^(.+)_(\d{4})$", _stem(p))
                if m is None:
                    problems.append(f"{root}/images{tag}: {p.name} lacks nnU-Net's channel suffix (expected "
                                    "<case>_0000.png)")
                elif m.group(2) == "0000":
                    imgs[m.group(1)] = p
                else:
                    problems.append(f"{root}/images{tag}: {p.name} is a second channel file; retinasynth reads one "
                                    "RGB file per case (<case>_0000.png)")
            if not (root / f"labels{tag}").is_dir():  # an unlabelled test split: nothing to score
                continue
            masks = {_stem(p): p for p in _files(root / f"labels{tag}")}
            fovs = {_stem(p): p for p in _files(root / f"fov{tag}")}
            for i in _pair(imgs, masks, f"{root}/images{tag}", problems, f" (expected labels{tag}/<case>.png)"):
                recs.append(Record(i, imgs[i], masks[i], fovs.get(i), split))
        if any(r.split == "test" for r in recs):
            return Index(recs, problems)
        return Index(recs, problems, TRAIN_ONLY)


_MASK_SUFFIXES = ("_mask", "_manual1", "_label", "_seg", "_vessels", "_gt")


# split_source of a folder with train/ but no test/: every image is a training image and there is no test split.
TRAIN_ONLY = "train-only"


class Generic(Layout):
    """``images/`` + ``masks/`` (+ ``fov/``) paired by stem; optionally under train/ and test/."""

    name = "generic"
    expects = "images/ + masks/ (+ fov/), or train|test/images + masks"

    def detect(self, root: Path) -> bool:
        return ((root / "images").is_dir() and (root / "masks").is_dir()) or (
            (root / "train" / "images").is_dir() and (root / "train" / "masks").is_dir())

    @staticmethod
    def _mask_stem(p: Path) -> str:
        s = _stem(p)
        for suf in _MASK_SUFFIXES:
            if s.endswith(suf):
                return s[: -len(suf)]
        return s

    def _one(self, d: Path, split: str | None, problems: list[str]) -> list[Record]:
        imgs = {_stem(p): p for p in _files(d / "images")}
        masks = {self._mask_stem(p): p for p in _files(d / "masks")}
        fovs = {self._mask_stem(p): p for p in _files(d / "fov")}
        ids = _pair(imgs, masks, str(d), problems, " (expected masks/<stem>.png)")
        prefix = f"{split}-" if split else ""
        return [Record(prefix + i, imgs[i], masks[i], fovs.get(i), split) for i in ids]

    def index(self, root: Path) -> Index:
        problems: list[str] = []
        if (root / "train" / "images").is_dir():
            recs = self._one(root / "train", "train", problems)
            if (root / "test" / "images").is_dir():
                recs += self._one(root / "test", "test", problems)
                return Index(recs, problems)
            return Index(recs, problems, TRAIN_ONLY)
        return Index(self._one(root, None, problems), problems, "seeded")


LAYOUTS: dict[str, Callable[[], Layout]] = {
    "drive": DRIVE, "kaggle": Kaggle, "hrf": HRF, "chase": CHASE, "stare": STARE, "nnunet": NNUNet,
    "generic": Generic,
}
