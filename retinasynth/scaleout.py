"""Scale-out helpers shared by `synthesize` and `benchmark-downstream`: torchrun ranks and ``i/N`` shares.

Under ``torchrun`` (WORLD_SIZE > 1) these commands only need barriers and tiny exchanges between
processes, so they always use the gloo backend (CPU tensors), whatever device renders or trains; the
process group is created only when WORLD_SIZE > 1, as in `fit`.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from retinasynth.errors import ConfigError, RetinaSynthError


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def agree(self, failed: bool, what: str) -> None:
        """Collective: every rank learns whether any rank failed ``what``. A rank that failed raises its
        own error itself (call this from its except block first); the others stop here with one line,
        before writing anything."""
        if self.distributed and self.sum([int(failed)])[0] and not failed:
            raise RetinaSynthError(f"rank {self.rank}: stopped because another rank failed {what} (its error "
                                   "is printed above).")

    def finish(self) -> None:
        """The last collective of a command: every rank leaves together (see :func:`shutdown`). A rank
        whose peer died gets one line instead of a gloo traceback."""
        if not self.distributed:
            return
        try:
            dist.barrier()
        except RuntimeError:
            raise RetinaSynthError(f"rank {self.rank}: another rank failed before the end (its error is "
                                   "printed above); rerun the same command to resume.") from None

    def sum(self, values: list[int]) -> list[int]:
        """Element-wise sum of small integer counters over all ranks."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64)
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]


def init_ranks() -> Ranks:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; a plain run is rank 0 of 1 and creates no process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    if not dist.is_initialized():
        # Ranks wait at the final barrier for the slowest one, which may be hours behind on an unevenly
        # split benchmark: far beyond the default 30-minute collective timeout.
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
        atexit.register(shutdown)
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    """Destroy the process group at exit: a live gloo group torn down by static destructors can abort
    the process ('terminate called without an active exception'). Commands end with
    :meth:`Ranks.finish` first, so no rank tears its group down while another still uses it."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: str | None, ranks: Ranks) -> str | None:
    """One GPU per local rank when CUDA is used under torchrun; otherwise the device as given."""
    if ranks.distributed and torch.cuda.is_available() and device in (None, "auto", "cuda"):
        return f"cuda:{ranks.local_rank}"
    return device


def parse_share(spec: str, flag: str) -> tuple[int, int]:
    """``i/N`` -> (i, N) with N >= 1 and 0 <= i < N; a one-line ConfigError otherwise."""
    try:
        i, k = (int(x) for x in str(spec).split("/"))
    except ValueError:
        raise ConfigError(f"{flag} must look like i/N (e.g. 0/4), got {spec!r}.") from None
    if k < 1 or not 0 <= i < k:
        raise ConfigError(f"{flag} {spec}: need N >= 1 and 0 <= i < N.")
    return i, k
