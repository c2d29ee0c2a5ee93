"""Processes working together: rank and world size over ``torch.distributed``, and sweeps whose
cells are shared out across processes, written part by part, merged and resumed.

Launchers (``torchrun``, ``accelerate launch``) set ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; these
helpers read the process group when one is initialized and those variables otherwise, so the same
code runs alone (rank 0 of 1), under a launcher, or as ``--shard RANK/WORLD`` processes started by
hand (no process group: the shards meet only through their part files).

>>> Shard.parse("1/3").take(["a", "b", "c", "d", "e"])
['b', 'e']
>>> Shard().is_main, Shard.parse("2/3").is_main
(True, False)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, Sequence

import torch
import torch.distributed as dist

from .runs import atomic_write


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank: the process group's, else ``RANK`` (a launcher's), else 0."""
    return dist.get_rank() if is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """The number of processes: the process group's, else ``WORLD_SIZE``, else 1."""
    return dist.get_world_size() if is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """Rank 0: the process that logs, shows progress and writes checkpoints."""
    return rank() == 0


def local_device() -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA is there, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    return torch.device("cpu")


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group a launcher describes (``WORLD_SIZE`` > 1); nothing to do alone.
    Backend: nccl on CUDA, gloo on the CPU. Returns whether a group is (now) initialized.

    >>> init_from_env() if "WORLD_SIZE" not in os.environ else True
    False
    """
    if is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        _check_accelerate_cpu_launch()
        return False
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return True


_MPI_SIZES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_USE_TORCHRUN = ("launch with `accelerate launch --multi_gpu --num_processes N` (Accelerate's torchrun path; "
                 "gloo on the CPU, no GPU needed) or `torchrun --nproc_per_node N`")


def _check_accelerate_cpu_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` runs N processes only through mpirun, whose
    ranks are MPI's, not torchrun's ``RANK``/``WORLD_SIZE``: without mpirun it starts this one
    process (a warning: the run is correct, just alone); with it, N processes that would each train
    alone and write the same output (an error)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true" or "MASTER_ADDR" not in os.environ:
        return  # not a multi-process accelerate --cpu launch (MASTER_ADDR is set for N > 1 only)
    mpi = next((int(os.environ[k]) for k in _MPI_SIZES if k in os.environ), 1)
    if mpi > 1:
        raise RuntimeError(f"accelerate launch --cpu started {mpi} MPI processes, but workbench reads torchrun's "
                           f"RANK/WORLD_SIZE, not MPI's ranks; {_USE_TORCHRUN}")
    warnings.warn(f"accelerate launch --cpu --num_processes N started this process alone (multi-CPU needs "
                  f"mpirun); {_USE_TORCHRUN}", RuntimeWarning, stacklevel=3)


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if is_initialized():
        dist.barrier()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of ``value`` over ranks, in place (itself alone).

    >>> all_reduce_sum(torch.tensor([2.0]))
    tensor([2.])
    """
    if is_initialized():
        # NCCL reduces CUDA tensors only; gloo reduces them where they are
        work = value.to(local_device()) if dist.get_backend() == "nccl" else value
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        if work is not value:
            value.copy_(work)
    return value


PARALLEL = ("ddp", "fsdp")


def check_parallel(parallel: str) -> None:
    """``parallel`` must name one of `PARALLEL`."""
    if parallel not in PARALLEL:
        raise ValueError(f"parallel {parallel!r}: expected one of {PARALLEL}; use 'ddp' (the default: a frozen "
                         f"copy per rank) unless the frozen model does not fit one device, then 'fsdp'")


def shard_frozen(module: torch.nn.Module, hm) -> torch.nn.Module:
    """FSDP2 over the frozen model ``hm.model`` inside ``module``, in place: ``fully_shard`` each
    decoder block, then the model's root (embeddings, final norm, head). The trained parts
    (interventions) stay whole and replicated; `all_reduce_grads` sums their gradients.

    Sharding only the frozen model is the point: a block all-gathers its weights for its forward
    and backward, so hooks inside it see whole activations and plain tensors (sharding the
    interventions would hand the hooks DTensors). Rank 0's weights and buffers are broadcast
    first, as DDP does, so ranks that built different random models agree.

    >>> shard_frozen(reft_model, reft_model.hm)   # in a process group (torchrun)   # doctest: +SKIP
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(hm.model, FSDPModule):
        return module  # sharded by an earlier run
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor, src=0)
    for block in hm.layout.blocks:
        fully_shard(block)
    fully_shard(hm.model)
    return module


def all_reduce_grads(params: Sequence[torch.Tensor]) -> None:
    """Sum replicated parameters' gradients over ranks in one flat all-reduce (a missing gradient
    counts as zeros, so every rank reduces the same buffer).

    >>> all_reduce_grads([])   # alone, or in a process group                       # doctest: +SKIP
    """
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    if not grads:
        return
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    for p, piece in zip(params, flat.split([g.numel() for g in grads])):
        p.grad = piece.view_as(p).clone()


def rank_share(batch: Sequence, rank_: int | None = None, world: int | None = None) -> list:
    """This rank's rows of one global batch: ``batch[rank::world]`` (every rank's shares together
    are the batch, so a step at any world size sees the same examples).

    >>> rank_share([10, 11, 12, 13, 14], 1, 2)
    [11, 13]
    """
    rank_, world = rank() if rank_ is None else rank_, world_size() if world is None else world
    return list(batch[rank_::world])


# ---- sharded sweeps -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """Which share of a sweep's cells this process computes: cells ``rank``, ``rank + world``, ..."""

    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"shard {self.rank}/{self.world}: expected RANK/WORLD with 0 <= RANK < WORLD, "
                             f"e.g. --shard 0/2 and --shard 1/2 for two processes")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"RANK/WORLD"`` (``--shard 1/4``)."""
        try:
            r, w = (int(part) for part in str(text).split("/"))
        except ValueError:
            raise ValueError(f"shard {text!r}: expected RANK/WORLD such as 0/2 (this process's rank, then "
                             f"the number of processes)") from None
        return cls(r, w)

    @classmethod
    def from_env(cls, text: str | None = None) -> "Shard":
        """``text`` when given, else the launcher's ``RANK``/``WORLD_SIZE`` (one process: 0/1)."""
        return cls.parse(text) if text else cls(rank(), world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, cells: Sequence) -> list:
        """This shard's cells, every ``world``-th from ``rank``."""
        return list(cells[self.rank::self.world])

    def __str__(self) -> str:
        return f"{self.rank}/{self.world}"


def part_name(cell: Hashable) -> str:
    """A file-name-safe name of one cell (its JSON, with path characters replaced).

    >>> part_name((3, "resid_pre"))
    '3_resid_pre'
    """
    text = json.dumps(cell if not isinstance(cell, tuple) else list(cell))
    keep = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in text)
    return "_".join(filter(None, keep.split("_")))


def run_parts(cells: Sequence, compute: Callable, folder: str | os.PathLike, shard: Shard = Shard(),
              progress: bool = True, desc: str = "cells") -> list[Path]:
    """Compute this shard's cells that have no part yet: ``compute(cell) -> DataFrame``, each written
    atomically as ``folder/<part_name(cell)>.parquet``. Parts are per cell, so a re-run at any
    world size skips what any shard finished. Returns the parts this call wrote.

    >>> run_parts([0, 1], lambda c: pd.DataFrame({"x": [c]}), "runs/demo/parts", Shard(0, 2))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    todo = [c for c in shard.take(cells) if not (folder / f"{part_name(c)}.parquet").exists()]
    written = []
    for cell in tqdm(todo, desc=f"{desc} (shard {shard})", disable=not progress or not todo, leave=False):
        frame = compute(cell)
        path = folder / f"{part_name(cell)}.parquet"
        atomic_write(path, lambda tmp, f=frame: f.to_parquet(tmp, index=False))
        written.append(path)
    return written


def missing_parts(cells: Sequence, folder: str | os.PathLike) -> list:
    """The cells whose part is not written yet."""
    return [c for c in cells if not (Path(folder) / f"{part_name(c)}.parquet").exists()]


def merge_parts(cells: Sequence, folder: str | os.PathLike):
    """Every cell's part concatenated in cell order, or None while some part is missing.

    >>> merge_parts([0, 1], "runs/demo/parts")                                      # doctest: +SKIP
    """
    import pandas as pd

    if missing_parts(cells, folder):
        return None
    frames = [pd.read_parquet(Path(folder) / f"{part_name(c)}.parquet") for c in cells]
    return pd.concat(frames, ignore_index=True)

