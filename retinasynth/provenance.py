"""Provenance and safe file writing: versions, git revision, hashing, atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from retinasynth import __version__


def versions() -> dict[str, str]:
    """Versions of Python, retinasynth and the libraries whose behaviour shapes results."""
    out = {"python": platform.python_version(), "retinasynth": __version__}
    for mod in ("torch", "torchvision", "numpy", "cv2", "skimage", "albumentations",
                "segmentation_models_pytorch", "safetensors"):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, "__version__", "unknown"))
        except Exception:  # noqa: BLE001 - a missing optional library is simply not recorded
            continue
    return out


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the retinasynth source tree (with '-dirty' if modified), or None."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - not a git checkout (e.g. installed wheel)
        return None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint_arrays(items: Iterable[tuple[str, np.ndarray]]) -> str:
    """A sha256 over (name, array bytes) pairs, order-sensitive."""
    h = hashlib.sha256()
    for name, arr in items:
        h.update(name.encode())
        h.update(str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


_UMASK = os.umask(0)
os.umask(_UMASK)


def _atomic(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are meant to be shared
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes to a temporary file in the same folder, then rename over ``path``."""
    return _atomic(Path(path), lambda f: f.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_csv_atomic(path: str | os.PathLike, rows: list[dict], float_format: str | None = None) -> Path:
    """Rows (dicts with the first row's keys) as CSV with a header, atomically; floats as ``float_format``."""
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (format(v, float_format) if float_format and isinstance(v, float) else v)
                        for k, v in r.items()})
    return write_text_atomic(path, buf.getvalue())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def write_png_atomic(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB (HxWx3) or grey (HxW) uint8 array as PNG, atomically. Deterministic bytes."""
    import cv2

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_png_atomic expects uint8, got {arr.dtype}")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    return write_bytes_atomic(path, buf.tobytes())


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


# Libraries whose versions change a trained model's or a score's numbers: they enter the benchmark's cache keys.
KEY_LIBRARIES = ("torch", "segmentation_models_pytorch", "albumentations", "cv2", "numpy")


def key_versions() -> dict[str, str]:
    v = versions()
    return {k: v.get(k, "absent") for k in KEY_LIBRARIES}


_PACKAGE = Path(__file__).resolve().parent


def source_hash(modules: Iterable[str] = ()) -> str:
    """sha256 of the source of the named modules of retinasynth (dotted names below the package, e.g.
    'segmenter.model'; a package name takes every .py under it); with no names, of the whole package. Read
    from disk: call it at process start (:func:`process_record` does) so that it describes the imported code."""
    files: list[Path] = []
    for name in modules or [""]:
        p = _PACKAGE.joinpath(*name.split(".")) if name else _PACKAGE
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]
    h = hashlib.sha256()
    for f in sorted(set(files)):
        h.update(str(f.relative_to(_PACKAGE)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def portable_command(argv: list[str] | None = None) -> str:
    """The command line as typed, with absolute paths made relative to the working directory, so that a
    committed record names no machine."""
    import shlex
    import sys

    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    prog = Path(argv[0]).name
    if prog in ("__main__.py", "main.py"):
        prog = "retinasynth"
    out = [prog]
    for a in argv[1:]:
        key, eq, val = a.partition("=") if a.startswith("-") or "=" in a else ("", "", a)
        target = val if val else a
        if target.startswith("/"):
            rel = os.path.relpath(target)
            a = f"{key}{eq}{rel}" if eq else rel
        out.append(a)
    return shlex.join(out)


def portable_path(path: str | os.PathLike | None, base: str | os.PathLike) -> str | None:
    """``path`` relative to ``base`` (e.g. a benchmark's --out), POSIX style; never absolute."""
    if path is None:
        return None
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


_PROCESS: dict[str, Any] = {}


# CPU flags that decide precision and kernels (retinasynth.precision): recorded with every run, so that a figure
# says which kind of machine made it (fp32 and bf16 results differ between CPU kinds).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


def host_record() -> dict[str, Any]:
    """The machine, never its name: platform, CPU model, the CPU flags that matter for kernels, core count."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
            "cpu_model": model or platform.processor(), "cpu_flags": [f for f in KERNEL_FLAGS if f in flags]}


def process_record() -> dict[str, Any]:
    """Provenance of this process, taken once, at its first call (call it at start): the git revision and
    source hash of the code it imported, versions, the command line; never a host name or a path."""
    if not _PROCESS:
        import datetime

        _PROCESS.update({
            "retinasynth_version": __version__, "versions": versions(), "git_revision": git_revision(),
            "code_sha256": source_hash(), "command": portable_command(),
            "host": host_record(),
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    return dict(_PROCESS)


def run_record(seed: int | None = None) -> dict[str, Any]:
    """What every run records next to its resolved config."""
    import datetime

    return {
        "retinasynth_version": __version__,
        "versions": versions(),
        "git_revision": git_revision(),
        "seed": seed,
        "host": host_record(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
