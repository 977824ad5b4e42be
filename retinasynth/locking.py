"""One writer per output folder: an OS advisory lock on a file inside the folder.

Every command that writes a folder (`fit --out`, `synthesize --out`, `synthesize --merge OUT`,
`benchmark-downstream --out`, `evaluate --out`) holds :func:`hold` on it for as long as it writes. A second
writer is refused at once with one line naming the holder (pid, host, start time, command) and what to do.

Why ``fcntl.flock`` and not a lock file that exists or not (or the ``filelock`` package's soft locks): the kernel
owns the lock, so it is released with the process however it ends, ``kill -9`` included; no stale lock ever
needs a manual delete and no pid-alive heuristics decide anything. It is in the standard library (no new
dependency) and, on Linux, works across hosts on NFS (emulated with POSIX locks since 2.6.12). ``filelock``'s
Unix lock is this same call. The lock file stays in the folder (``.retinasynth.lock``, a few hundred bytes): it
records the holders, for the refusal message only; holding the lock is what counts, never the file's content.

Modes: a run that owns the whole folder holds it *exclusively*; the processes of one benchmark that share a
cache by design (``--cells i/N``, SLURM array tasks, torchrun ranks) hold it *shared*, so they run together
while a plain run on the same folder is refused (and the reverse), and each cell they train is locked alone
(:func:`try_hold`), so no cell is trained twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from retinasynth.errors import RetinaSynthError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; the folder is not locked (see `hold`)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".retinasynth.lock"


class FolderBusy(RetinaSynthError):
    """Another process holds the folder (or a cell of it)."""


def holder_record(mode: str) -> dict:
    """Who holds a lock: what the refusal of a second writer prints."""
    argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
    return {"pid": os.getpid(), "host": socket.gethostname(), "mode": mode,
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime()), "command": " ".join(argv)}


def _alive(rec: dict) -> bool:
    """False only where we know: the record's pid is of this host and no such process exists."""
    if rec.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(rec.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def read_holders(path: Path) -> list[dict]:
    """The holder records in a lock file whose process may still run, newest first."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    recs = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("pid") != os.getpid() and _alive(rec):
            recs.append(rec)
    return recs[::-1]


def _describe(recs: list[dict]) -> str:
    if not recs:
        return "another process (its record is unreadable)"
    r = recs[0]
    more = f" and {len(recs) - 1} other process(es)" if len(recs) > 1 else ""
    return f"pid {r.get('pid')} on {r.get('host')} since {r.get('started')} (`{r.get('command')}`){more}"


def _busy(folder: Path, path: Path, what: str) -> FolderBusy:
    recs = read_holders(path)
    pid = recs[0].get("pid") if recs else "N"
    return FolderBusy(f"{folder}: {what} is in use by {_describe(recs)}; wait for it to finish, or stop it "
                      f"(kill {pid}) and rerun; nothing was written.")


class _Lock:
    """An open lock file holding ``flock``; closing it releases the lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = -1


def _acquire(path: Path, shared: bool) -> _Lock | None:
    """The lock on ``path`` (created if absent), or None if another process holds it in a conflicting mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if not shared:  # the sole holder: the file holds just this record
        os.ftruncate(fd, 0)
    rec = (json.dumps(holder_record("shared" if shared else "exclusive")) + "\n").encode()
    os.lseek(fd, 0, os.SEEK_END)
    os.write(fd, rec)  # one small write: shared holders' records do not interleave
    return _Lock(fd)


@contextlib.contextmanager
def hold(folder: str | Path, shared: bool = False, what: str = "the folder") -> Iterator[Path]:
    """Hold ``folder`` (created if absent) while the block runs; a second writer gets :class:`FolderBusy`.

    Under torchrun only the processes that call this lock: each command decides which of its ranks do.
    Where the OS has no ``flock`` (Windows) the block runs unlocked.
    """
    folder = Path(folder)
    if fcntl is None:
        yield folder
        return
    if folder.exists() and not folder.is_dir():
        raise RetinaSynthError(f"{folder}: exists and is a file; choose a folder.")
    created = not folder.exists()
    lock_created = created or not (folder / LOCK_NAME).exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = _acquire(folder / LOCK_NAME, shared)
    except OSError as e:
        raise RetinaSynthError(f"{folder}: cannot create or lock {LOCK_NAME} ({e.strerror or e}); check the "
                               "folder's permissions.") from None
    if lock is None:
        raise _busy(folder, folder / LOCK_NAME, what)
    try:
        yield folder
    except BaseException:
        # A command refused before writing anything leaves the folder as it found it: no lock file it made, and
        # no folder it made.
        if lock_created:  # the file only records holders: dropping it while holding the lock is safe
            with contextlib.suppress(OSError):
                (folder / LOCK_NAME).unlink()
                if created and not entries(folder):
                    folder.rmdir()
        raise
    finally:
        lock.release()


def try_hold(path: str | Path) -> _Lock | None:
    """An exclusive lock on the file ``path`` (e.g. one benchmark cell), or None while another process has it.
    Where the OS has no ``flock`` it always succeeds. Release it with ``.release()``."""
    if fcntl is None:
        return _Lock(-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _acquire(path, shared=False)


def entries(folder: str | Path) -> list[Path]:
    """The folder's entries other than the lock file (what "empty" means for an output folder)."""
    folder = Path(folder)
    return [p for p in folder.iterdir() if p.name != LOCK_NAME] if folder.is_dir() else []


def clear(folder: str | Path) -> None:
    """Delete everything in ``folder`` but its lock file (``--overwrite`` while holding the lock)."""
    import shutil

    for p in entries(folder):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
