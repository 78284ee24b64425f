"""Data-parallel meta-training with PyTorch DDP under torchrun (gloo on CPU)."""

from __future__ import annotations

import atexit
import gc
import os

import torch


def distributed() -> tuple[int, int]:
    """(rank, world size): (0, 1) unless a process group is initialised (e.g. under torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment (gloo on CPU); no-op alone.

    The group is left at exit by :func:`leave_distributed`, registered here, while the interpreter
    is still whole: a gloo group torn down during the interpreter's finalisation can abort the
    process (SIGABRT, "terminate called without an active exception") after the work succeeded,
    and torchrun then reports the whole job as failed."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        atexit.register(leave_distributed)
    return distributed()


def leave_distributed() -> None:
    """Destroy the process group this process joined, if any (idempotent). Whatever still holds the
    group (a DistributedDataParallel wrapper in a reference cycle) is collected first, so its
    threads stop now rather than during the interpreter's finalisation."""
    import torch.distributed as dist

    gc.collect()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit_distributed(code: int) -> None:
    """End a torchrun worker whose work is done, with exit status ``code``: the group left, logs and
    output flushed, then ``os._exit``, skipping the C++ static destructors that can still abort a
    finished process (gloo's); a no-op when this process joined no group."""
    import logging
    import sys

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    leave_distributed()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def data_parallel(step: torch.nn.Module, find_unused_parameters: bool) -> torch.nn.Module:
    """``step`` wrapped in DistributedDataParallel when there is more than one process, else itself."""
    if distributed()[1] == 1:
        return step
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(step, find_unused_parameters=find_unused_parameters)
