"""Progress reporting that a terminal, a log file and a batch scheduler can all hold.

:func:`progress` returns a tqdm bar when its stream (``sys.stderr`` by default) is a terminal (or in a
Jupyter kernel, as ``tqdm.auto`` would), and otherwise a :class:`PlainProgress` that writes occasional whole
lines, each ending in ``"\\n"`` and never containing ``"\\r"``, e.g.::

    benchmark: 3/36 runs (8%), 2m10s elapsed, ETA 40m05s, synth_n5_s0

A plain bar writes a line when at least ``every`` seconds have passed since its last line (or its start)
or when its count crosses a further tenth of ``total``, and a final line at ``close()`` (or at the end of
iteration) if the count moved and that state was not the last line written. A bar abandoned by an exception
writes no final line.

Nested bars: a bar made with ``leave=False`` (the per-run step bar inside the benchmark's run bar, the
per-split loading bars) writes, in plain mode, nothing but its one final line, so a log reads as one line
per finished inner task between the outer bar's occasional lines.

Environment:
    RETINASYNTH_PROGRESS=plain|tqdm|off   force a mode (default: tqdm on a terminal, plain otherwise).
    RETINASYNTH_PROGRESS_EVERY=SECONDS    the plain-mode interval when the caller gives none (default 30).

Before printing a one-line message that may follow a bar (``error: ...``), call :func:`ensure_line_start`;
to print a line while bars keep running (``warning: ...``), write it inside :func:`message_mode`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

MODE_ENV = "RETINASYNTH_PROGRESS"
EVERY_ENV = "RETINASYNTH_PROGRESS_EVERY"
DEFAULT_EVERY = 30.0
MODES = ("plain", "tqdm", "off")

# id(stream) -> True when the last text our tqdm bars wrote there did not end with "\n".
_mid_line: dict[int, bool] = {}
# tqdm bars made here and not yet closed (closed by ensure_line_start before an error line).
_open_tqdm: weakref.WeakSet = weakref.WeakSet()


def mode(stream=None) -> str:
    """The mode :func:`progress` uses for ``stream``: 'plain', 'tqdm' or 'off'."""
    forced = os.environ.get(MODE_ENV, "").strip().lower()
    if forced in MODES:
        return forced
    stream = sys.stderr if stream is None else stream
    if _isatty(stream) or (stream is sys.stderr and _in_notebook()):
        return "tqdm"
    return "plain"


def progress(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
             initial: float = 0, leave: bool = True, disable: bool = False, stream=None,
             every: float | None = None, **tqdm_kwargs: Any):
    """A progress bar over ``iterable`` (or updated by hand): tqdm on a terminal, plain lines otherwise.

    Args:
        iterable: what to iterate over; ``total`` defaults to its ``len()``.
        total, desc, unit, initial, leave, disable: as in tqdm.
        stream: where to write (default ``sys.stderr``, looked up at call time).
        every: plain mode: seconds between lines [env RETINASYNTH_PROGRESS_EVERY, else 30].
        tqdm_kwargs: passed to tqdm only (e.g. ``dynamic_ncols=True``).

    Returns:
        an object with iteration, ``update(n)``, ``set_postfix(**kw)``, ``set_postfix_str(s)``,
        ``close()``, context-manager use, ``n`` and ``total``.
    """
    stream = sys.stderr if stream is None else stream
    m = "off" if disable else mode(stream)
    if m == "tqdm":
        return _tqdm_bar(iterable, stream, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                         **tqdm_kwargs)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, leave=leave,
                         stream=stream, every=every, silent=m == "off")


def ensure_line_start(stream=None) -> None:
    """Close the tqdm bars still open and make the next write to ``stream`` start a line.

    For the last message of a failing command: bars left open by the exception are closed (a ``leave``
    bar keeps its last state on its own line, others are cleared); if a bar still left the cursor
    mid-line, a terminal gets ``"\\r\\033[K"`` (erase that line) and a file gets ``"\\n"``.
    Plain-mode lines always end in ``"\\n"``: nothing to do for them.
    """
    stream = sys.stderr if stream is None else stream
    bars = sorted(list(_open_tqdm), key=lambda b: -abs(getattr(b, "pos", 0) or 0))  # innermost first
    for bar in bars:
        with contextlib.suppress(Exception):
            bar.close()
    _open_tqdm.clear()
    _end_partial_line(stream)


@contextlib.contextmanager
def message_mode(stream=None):
    """Write whole lines inside this block while bars keep running (tqdm bars are cleared, then redrawn)."""
    stream = sys.stderr if stream is None else stream
    open_bars = [b for b in list(_open_tqdm) if not getattr(b, "disable", True)]
    if not open_bars:
        _end_partial_line(stream)
        yield
        return
    with type(open_bars[0]).external_write_mode(file=stream):
        yield


def _end_partial_line(stream) -> None:
    """After a tqdm bar left the cursor mid-line: erase that line on a terminal, end it in a file."""
    if _mid_line.get(id(stream)):
        with contextlib.suppress(OSError, ValueError):
            stream.write("\r\033[K" if _isatty(stream) else "\n")
            stream.flush()
        _mid_line[id(stream)] = False


# ------------------------------------------------------------------------------------------- plain mode


class PlainProgress:
    """A progress bar that writes occasional whole lines (see the module docstring)."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: float = 0, leave: bool = True, stream=None,
                 every: float | None = None, silent: bool = False):
        if total is None and iterable is not None:
            with contextlib.suppress(TypeError, AttributeError):
                total = len(iterable)  # type: ignore[arg-type]
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.initial = initial
        self.n = initial
        self.leave = leave
        self.stream = sys.stderr if stream is None else stream
        self.every = _every() if every is None else float(every)
        self.silent = silent
        self.disable = silent
        self.postfix = ""
        self.start_t = time.monotonic()
        self._last_t = self.start_t
        self._last_decile = self._decile()
        self._last_state: tuple | None = None
        self.closed = False

    # --- the tqdm surface used in this project
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("this progress bar has no iterable; use update()")
        for obj in self.iterable:
            yield obj
            self.update(1)
        self.close()  # not reached when the loop is left by an exception or a break: no final line

    def __len__(self) -> int:
        if self.total is not None:
            return int(self.total)
        return len(self.iterable)  # type: ignore[arg-type]

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.closed = True

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.silent or self.closed or not self.leave:
            return
        now = time.monotonic()
        decile = self._decile()
        if now - self._last_t >= self.every or decile > self._last_decile:
            self._write(now)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        items = dict(ordered_dict or {})
        items.update(kwargs)
        self.postfix = ", ".join(f"{k}={_fmt_value(v)}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.silent or self.n == self.initial:
            return  # nothing happened
        if self._last_state != (self.n, self.postfix):
            self._write(time.monotonic(), final=True)

    # --- formatting
    def _decile(self) -> int:
        if not self.total or self.total <= 0:
            return -1
        return int(math.floor(10 * min(self.n, self.total) / self.total + 1e-9))

    def line(self, now: float | None = None, final: bool = False) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.start_t
        unit = self.unit if self.unit == "it" or self.unit.endswith("s") else self.unit + "s"
        parts = []
        if self.total:
            parts.append(f"{_fmt_count(self.n)}/{_fmt_count(self.total)} {unit} "
                         f"({100 * self.n / self.total:.0f}%)")
        else:
            parts.append(f"{_fmt_count(self.n)} {unit}")
        parts.append(f"{_fmt_time(elapsed)} elapsed")
        done = self.n - self.initial
        if not final and self.total and done > 0 and self.n < self.total and elapsed > 0:
            parts.append(f"ETA {_fmt_time((self.total - self.n) * elapsed / done)}")
        if self.postfix:
            parts.append(self.postfix)
        text = ", ".join(parts)
        text = f"{self.desc}: {text}" if self.desc else text
        return " ".join(text.replace("\r", " ").splitlines())

    def _write(self, now: float, final: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed or broken stream must not stop the work
            self.stream.write(self.line(now, final) + "\n")
            self.stream.flush()
        self._last_t = now
        self._last_decile = self._decile()
        self._last_state = (self.n, self.postfix)

    def __repr__(self) -> str:
        return f"PlainProgress({self.line()!r})"


def _fmt_time(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt_count(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _every() -> float:
    raw = os.environ.get(EVERY_ENV)
    if raw:
        with contextlib.suppress(ValueError):
            v = float(raw)
            if v >= 0 and math.isfinite(v):
                return v
    return DEFAULT_EVERY


# ------------------------------------------------------------------------------------------- tqdm mode


class _TrackedStream:
    """Passes everything to ``stream``; remembers whether the last text written left a partial line."""

    def __init__(self, stream):
        object.__setattr__(self, "_stream", stream)

    def write(self, s: str):
        if s:
            _mid_line[id(self._stream)] = not s.endswith("\n")
        return self._stream.write(s)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def __eq__(self, other) -> bool:
        return self._stream == getattr(other, "_stream", other)

    def __hash__(self) -> int:
        return hash(id(self._stream))


def _tqdm_bar(iterable, stream, **kwargs):
    from tqdm.auto import tqdm

    if not (stream is sys.stderr and _in_notebook()):  # a notebook widget ignores the stream
        kwargs["file"] = _TrackedStream(stream)
    bar = tqdm(iterable, **kwargs)
    _open_tqdm.add(bar)
    return bar


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _in_notebook() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return False
    return any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)
