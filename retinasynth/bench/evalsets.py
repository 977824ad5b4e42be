"""The evaluation sets of a benchmark: the real dataset's test split (or, with ``eval=val``, training images
held out from the regimes), plus any number of external datasets named on the command line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from retinasynth.bench.config import BenchConfig
from retinasynth.bench.guards import EvalSet
from retinasynth.bench.plan import val_ids
from retinasynth.data.dataset import DataConfig, Dataset, index_dataset, load_dataset
from retinasynth.errors import ConfigError, DataError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESERVED = ("test", "val")


SPLITS = ("test", "train", "all")


def parse_test_data(test_data) -> dict[str, tuple[Path, str | None]]:
    """``--test-data`` values: 'NAME=PATH', 'NAME:SPLIT=PATH' or a bare PATH (named after its folder), or a
    dict {name: path}; names are unique, file-name safe and not 'test'/'val' (the real dataset's own sets).

    ``NAME:SPLIT`` scores only that split of the dataset ('test', 'train' or 'all'; for a dataset without an
    official split, its seeded one, ``test_fraction`` 0.25, split seed 0), e.g. to keep the other part unscored
    for ``synthesize --style``. Without it (split None): the official test split, or all of a dataset that
    has none. Returns {name: (root, split or None)}."""
    if test_data is None:
        return {}
    if isinstance(test_data, dict):
        items = [(str(k), v) for k, v in test_data.items()]
    else:
        values = [test_data] if isinstance(test_data, (str, Path)) else list(test_data)
        items = []
        for v in values:
            text = str(v)
            name, eq, path = text.partition("=")
            if eq and _NAME.match(name.partition(":")[0]) and not Path(text).exists():
                items.append((name, path))
            else:
                items.append((Path(text).name.lower() or "external", text))
    out: dict[str, tuple[Path, str | None]] = {}
    for name, path in items:
        name, colon, split = name.partition(":")
        if colon and split not in SPLITS:
            raise ConfigError(f"--test-data {name}:{split}={path}: unknown split {split!r}; valid: "
                              f"{', '.join(SPLITS)} (e.g. --test-data {name}:test={path}).")
        if not _NAME.match(name):
            raise ConfigError(f"--test-data name {name!r}: use letters, digits, '-', '_' or '.' (e.g. "
                              "--test-data stare=../shared/data/STARE).")
        if name in RESERVED:
            raise ConfigError(f"--test-data name {name!r} is reserved for the real dataset's own evaluation set; "
                              f"name it otherwise (e.g. --test-data {name}-ext={path}).")
        if name in out:
            raise ConfigError(f"--test-data name {name!r} is given twice; name each set (--test-data NAME=PATH).")
        if not Path(path).is_dir():
            raise DataError(f"--test-data {name}={path}: not a folder; pass a dataset root (any supported layout).")
        out[name] = (Path(path), split or None)
    return out


def external_split(root: str | Path, cfg: DataConfig) -> str:
    """The test split of a dataset that has an official one, else all of it."""
    _, index, records = index_dataset(root, cfg)
    if index.split_source == "seeded" or not any(r.split == "test" for r in records):
        return "all"
    return "test"


def load_eval_set(name: str, root, split: str, cfg, progress: bool) -> EvalSet:
    """An evaluation set at ``cfg``'s working resolution and, for scoring, at native resolution (same frame)."""
    work = load_dataset(root, split, cfg.data_config(), progress=progress)
    native = load_dataset(root, split, cfg.data_config(native=True), progress=progress)
    if work.ids != native.ids:
        raise DataError(f"{root}: the {split} split has different samples at native and working resolution "
                        f"({len(native)} vs {len(work)}); check the folder for unreadable files.")
    return EvalSet(name, Path(root), split, work, native)


def subset(ds: Dataset, ids, split: str) -> Dataset:
    keep = set(ids)
    return dataclasses.replace(ds, samples=[s for s in ds.samples if s.id in keep], split=split)


def load_sets(real_data, cfg: BenchConfig, externals: dict[str, tuple[Path, str | None]], progress: bool
              ) -> tuple[Dataset, list[EvalSet], list[str]]:
    """(the training split feeding the regimes, the evaluation sets, the held-out ids of eval=val)."""
    # With eval=val the sets of --test-data are external *validation* sets (e.g. STARE for unseen cameras): the
    # test split of real_data is still never decoded.
    train = load_dataset(real_data, "train", cfg.data_config(), progress=progress)
    held_out: list[str] = []
    if cfg.eval == "val":
        # The evaluation set is carved from the training split; the test split is never decoded.
        held_out = val_ids(train.ids, cfg)
        native_train = load_dataset(real_data, "train", cfg.data_config(native=True), progress=progress)
        evals = [EvalSet("val", Path(real_data), "train (held out)", subset(train, held_out, "val"),
                         subset(native_train, held_out, "val"))]
        train = subset(train, [i for i in train.ids if i not in set(held_out)], "train")
    else:
        evals = [load_eval_set("test", real_data, "test", cfg, progress)]
    too_big = [n for n in cfg.regimes if n > len(train)]
    if too_big:
        what = (f"the {len(train)} training images left after holding out {len(held_out)} for eval=val"
                if held_out else f"the {len(train)} training images")
        valid = sorted({n for n in cfg.regimes if n <= len(train)} | {len(train)})
        raise ConfigError(f"bench.regimes {too_big} exceed {what} of {real_data}; valid: 1..{len(train)} "
                          f"(e.g. -o bench.regimes={','.join(str(n) for n in valid)}).")
    for name, (root, split) in externals.items():
        split = split or external_split(root, cfg.data_config())
        evals.append(load_eval_set(name, root, split, cfg, progress))
    return train, evals, held_out
