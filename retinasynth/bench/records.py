"""A benchmark's small records kept apart from its weights: ``--records DIR``.

A benchmark folder holds three things per model: its training record (``runs/<cell>.json``), its scores on every
evaluation set (``scores/<key>/<eval>.json``) and its weights (``models/*.safetensors``). A report needs only the
first two, and they are a few kilobytes a model, so a protocol that takes longer than the machine it runs on lives
(an ephemeral scratch disk, a job with a wall-time limit, a work tree laid anew every session) can keep them in a
durable folder, under version control if wanted, and go on elsewhere:

- before the run, every record and score in DIR that OUT lacks (or holds damaged or incomplete) is copied in;
- after every model, every record and score OUT holds that DIR lacks or holds differently is copied out.

Both copies are atomic file by file. A cell whose record and scores are all present counts as done without its
weights (:func:`retinasynth.bench.benchmark.recorded_training`); its weights are rebuilt only if something needs
them again (a new evaluation set, a 'pretrain' cell still to train from the same seed's synthetic model). The keys
are unchanged, so a copied record is used only under the settings, data, code and precision that made it.
"""

from __future__ import annotations

import json
from pathlib import Path

from retinasynth.errors import DataError
from retinasynth.provenance import write_text_atomic

PARTS = ("runs", "scores")


def _complete(path: Path) -> bool:
    try:
        rec = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(rec, dict) and rec.get("status") == "complete"


def _files(root: Path):
    for part in PARTS:
        base = root / part
        if base.is_dir():
            for p in sorted(base.rglob("*.json")):
                if p.is_file() and not p.name.startswith("."):
                    yield p.relative_to(root)


def _copy(src: Path, dst: Path) -> None:
    write_text_atomic(dst, src.read_bytes().decode("utf-8"))


def restore_records(records: str | Path, out: str | Path) -> int:
    """Copy into ``out`` every complete record and score of ``records`` that ``out`` lacks or holds incomplete.
    Returns how many files were copied. A ``records`` path that exists but is no folder is a one-line error."""
    records, out = Path(records), Path(out)
    if records.exists() and not records.is_dir():
        raise DataError(f"--records {records}: not a folder; give a folder that keeps the benchmark's records "
                        "(it is created if missing).")
    n = 0
    for rel in _files(records):
        src, dst = records / rel, out / rel
        if _complete(src) and not _complete(dst):
            _copy(src, dst)
            n += 1
    return n


def save_records(out: str | Path, records: str | Path) -> int:
    """Copy every complete record and score of ``out`` into ``records`` where it is missing or different.
    Returns how many files were copied."""
    records, out = Path(records), Path(out)
    n = 0
    for rel in _files(out):
        src, dst = out / rel, records / rel
        if not _complete(src):
            continue
        data = src.read_bytes()
        if dst.is_file() and dst.read_bytes() == data:
            continue
        _copy(src, dst)
        n += 1
    return n
