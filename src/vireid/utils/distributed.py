"""Process-group helpers for `torchrun` (PyTorch DDP); single-process runs need no setup."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..core import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank and whether a group is initialised."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that writes files)."""
        return self.rank == 0


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU, nccl on CUDA."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_pref != "cpu"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, initialized=True)


def resolve_device(pref: str, dist_info: DistInfo, key: str = "train.device") -> torch.device:
    """`auto` picks cuda:local_rank when CUDA exists, else the CPU; a CUDA device this machine lacks is a
    ConfigError naming `key` (the config key or command-line option the preference came from)."""
    if pref == "auto":
        return torch.device(f"cuda:{dist_info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if pref == "cuda" and dist_info.initialized:
        pref = f"cuda:{dist_info.local_rank}"
    try:
        device = torch.device(pref)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key}={pref!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{key}={pref}: no CUDA GPU is usable here (torch.cuda.is_available() is False); "
                              f"use {key}=cpu, or {key}=auto to take a GPU when there is one")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{key}={pref}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
                              f"use one of them, or {key}=auto")
    return device


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    import torch.distributed as dist

    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def average_buffers(module: torch.nn.Module) -> None:
    """Average floating buffers (BN running statistics) across ranks so all ranks hold identical state.

    SyncBatchNorm layers (`train.sync_bn`) are skipped: they update their statistics from the statistics of the
    whole global batch, so every rank holds the same values already.
    """
    import torch.distributed as dist

    world = dist.get_world_size()
    synced = {id(b) for m in module.modules() if isinstance(m, torch.nn.SyncBatchNorm) for b in m.buffers()}
    for b in module.buffers():
        if id(b) in synced:
            continue
        if b.dtype.is_floating_point:
            dist.all_reduce(b.data)
            b.data /= world
        else:
            dist.broadcast(b.data, src=0)


def use_sync_batchnorm(module: torch.nn.Module, device: torch.device, key: str = "train.sync_bn") -> None:
    """Replace every BatchNorm layer of `module` (not itself one) by a SyncBatchNorm in place, keeping its
    parameters and buffers (same objects, so state_dict keys and optimizers are unchanged); CUDA only."""
    if device.type != "cuda":
        raise ConfigError(f"{key}=true needs CUDA devices (PyTorch's SyncBatchNorm does not run on the "
                          f"{device.type}); set {key}=false, or train on GPUs")
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    assert converted is module  # a non-BN root is converted in place


def barrier(info: DistInfo) -> None:
    """Synchronise ranks (no-op when single-process)."""
    if info.initialized:
        import torch.distributed as dist

        dist.barrier()


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if this code created one."""
    if info.initialized:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
