"""Data-parallel training of one trial by the processes of a ``torchrun`` job (torch.distributed, DDP).

Every rank trains the same trial. The global batch is ``train.batch_size``; every rank draws the whole
batch's indices, label drops, times and noise from the same seeded streams, exactly as one process would,
and keeps its own contiguous slice (``batch / world size`` examples, ``shard``): the ranks together see
exactly the single process's batch. DDP averages the gradients over the ranks, so each step descends the
gradient of the mean loss over the global batch, as one process does; the logged loss is averaged over the
ranks the same way (``mean``), and a non-finite loss is seen by every rank at once, so all of them stop
together. What is not the same number for number (docs/scale.md): the gradient is summed in another
order (per rank, then the all-reduce), and dropout masks are drawn per rank (a process has its own torch
generator, seeded per rank).

Rank 0 talks to Optuna and the database, picks the trial and sends it to the other ranks over a control
group (gloo, with a long timeout: the other ranks wait there while rank 0 evaluates, which can take far
longer than a collective's usual timeout). Only rank 0 writes checkpoints and evaluates; every rank loads
the checkpoint (they must see the same folder: a shared file system across machines).

A failure that only some ranks see (a crash in rank 0's checkpoint write, one rank out of memory) leaves
the others waiting in a collective: it cannot be survived within the job. ``together`` marks it
(``broken``); rank 0 records the trial failed and the job ends, ``torchrun`` stops the other ranks, and a
rerun resumes. A divergence is seen by all ranks at once and fails only the trial.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from torch import Tensor, nn

from harness.errors import Diverged, TrialFailed, UsageError, one_line

CONTROL_TIMEOUT = timedelta(days=7)  # the other ranks wait this long for rank 0's next trial (its evaluation)


def torchrun_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) when this process is one of several started by ``torchrun``, else None.
    Read from the environment torchrun sets; nothing is initialised."""
    raw = {key: os.environ.get(key) for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    if raw["WORLD_SIZE"] is None:
        return None
    try:
        rank, world, local = int(raw["RANK"] or 0), int(raw["WORLD_SIZE"]), int(raw["LOCAL_RANK"] or 0)
    except ValueError:
        raise UsageError(f"torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK must be integers, got {raw}") from None
    return (rank, world, local) if world > 1 else None


@dataclass
class Parallel:
    """Which rank of how many this process is, and the collectives the training loop uses; the default is a
    single process, for which every method is the identity."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    control: Any = None  # the process group of rank 0's messages (gloo, CONTROL_TIMEOUT)
    broken: str | None = None  # why the ranks are out of step (a failure only some of them saw)
    _in_step: bool = False  # inside ``together``, before ``out_of_step``

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def per_device_batch(self, batch: int) -> int:
        """Examples per rank; the global batch must divide evenly (every rank computes the same answer)."""
        if batch % self.world_size:
            raise TrialFailed(
                f"train.batch_size {batch} does not divide over {self.world_size} processes "
                f"(per-device batch {batch / self.world_size:g}); use a multiple of {self.world_size}"
            )
        return batch // self.world_size

    def shard(self, batch: Tensor) -> Tensor:
        """This rank's contiguous slice of a global batch (dim 0), a tensor of its own (the rest is freed)."""
        if not self.distributed:
            return batch
        size = self.per_device_batch(batch.shape[0])
        return batch[self.rank * size : (self.rank + 1) * size].clone()

    def mean(self, value: Tensor) -> Tensor:
        """The mean of a scalar over the ranks (every rank gets it)."""
        if not self.distributed:
            return value
        value = value.detach().float().clone()
        torch.distributed.all_reduce(value)
        return value / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def rank_seed(self, seed: int) -> int:
        """The seed of this rank's own torch generator (dropout): rank 0 keeps the trial's, as one process does."""
        return seed + 7919 * self.rank

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` under DDP (gradients averaged over the ranks in backward), or as it is."""
        if not self.distributed:
            return module
        ids = [torch.cuda.current_device()] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def send(self, message: Any) -> None:
        """Rank 0: send a message (any picklable object) to every other rank."""
        torch.distributed.broadcast_object_list([message], src=0, group=self.control)

    def receive(self) -> Any:
        """Ranks > 0: wait for rank 0's next message."""
        box: list[Any] = [None]
        torch.distributed.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """A trial that every rank runs in step until ``out_of_step`` (the end of training). A failure in step
        other than a divergence (which every rank sees at the same step) may leave other ranks waiting in a
        collective: it marks the job ``broken``. A failure after ``out_of_step`` (rank 0's evaluation) is
        the trial's alone."""
        self._in_step = True
        try:
            yield
        except Diverged:
            raise
        except BaseException as err:
            if self.distributed and self._in_step:
                self.broken = f"rank {self.rank}: {type(err).__name__}: {one_line(str(err))}"
            raise
        finally:
            self._in_step = False

    def out_of_step(self) -> None:
        """The ranks are done with collectives for this trial (training ended on every rank)."""
        self._in_step = False

    def close(self) -> None:
        if self.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_parallel(rank: int, world_size: int, local_rank: int, device_type: str) -> Parallel:
    """Join the torchrun job: NCCL on CUDA (one GPU per local rank), gloo on CPU, and a gloo control group."""
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world_size)
    control = torch.distributed.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    return Parallel(rank=rank, world_size=world_size, local_rank=local_rank, control=control)
