"""One process or many: the ``torchrun`` environment turned into a small context object.

``torchrun --nproc_per_node N basira train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; without them training runs as a single process. The backend is ``nccl`` on CUDA
and ``gloo`` on CPU. Only the main process (rank 0) validates, logs and writes files; the others
wait at a barrier and receive its early-stopping decision.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipelines.errors import DeviceUnavailableError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: its rank among ``world_size`` and its compute device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True for the one process that validates, logs and saves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True under ``torchrun`` with more than one process."""
        return self.world_size > 1


def setup_distributed(device: str) -> DistContext:
    """Pick the device and, under ``torchrun``, join the process group.

    Raises:
        DeviceUnavailableError: ``device`` is ``cuda`` but no CUDA device is available.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "CUDA was requested but no CUDA device is available; use --device cpu.",
            device=device,
        )
    if device.startswith("cuda"):
        torch_device = torch.device("cuda", local_rank if world_size > 1 else 0)
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world_size, device=torch_device)


def teardown(context: DistContext) -> None:
    """Leave the process group (no-op for a single process)."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    """Wait until every process reaches this point."""
    if context.distributed:
        dist.barrier()


def broadcast_flag(context: DistContext, flag: bool) -> bool:
    """Rank 0's ``flag`` on every process (e.g. the early-stopping decision)."""
    if not context.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=_comm_device(context))
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def broadcast_object(context: DistContext, value: Any) -> Any:
    """Rank 0's picklable ``value`` on every process (e.g. the mined patch centres)."""
    if not context.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def mean_across(context: DistContext, value: float) -> float:
    """The mean of ``value`` over all processes (e.g. the epoch loss)."""
    if not context.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_comm_device(context))
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def _comm_device(context: DistContext) -> torch.device:
    return context.device if context.device.type == "cuda" else torch.device("cpu")
