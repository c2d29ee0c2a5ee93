"""Resumable alignment training: an epoch-end checkpoint that survives ``kill -9``.

Holds everything the next epoch depends on: the interventions' states, the best epoch's states,
Adam's state, the data-order generator, the loss rows, the validation curve and the early-stopping
counters, swapped in as one folder (``workbench.checkpoints.atomic_dir``). A resumed run then
computes exactly what the uninterrupted one would have.

>>> result = train_alignment(hm, site, das, train, val, config, checkpoint="runs/das/checkpoint")  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..checkpoints import atomic_dir, complete_dir, load_optimizer, load_rng, save_optimizer, save_rng
from ..runs import atomic_write

STATE, TENSORS = "trainer_state.json", "interventions.safetensors"


@dataclass
class Progress:
    """The training loop's state between epochs."""

    epoch: int = 0  # next epoch to run
    rows: list = field(default_factory=list)
    val_iia: list = field(default_factory=list)
    best: float = -1.0
    best_epoch: int = -1
    waited: int = 0
    stopped_early: bool = False
    done: bool = False
    best_state: dict | None = None  # task -> state dict


def _flat(prefix: str, states: Mapping[str, dict]) -> dict[str, torch.Tensor]:
    return {f"{prefix}/{task}/{key}": v.detach().contiguous().cpu() for task, s in states.items() for key, v in s.items()}


def save_progress(folder: str | Path, progress: Progress, interventions: Mapping[str, nn.Module],
                  optimizer: torch.optim.Optimizer, generator: torch.Generator) -> None:
    """Write the checkpoint folder (atomically replacing the previous one)."""
    tensors = _flat("now", {n: m.state_dict() for n, m in interventions.items()})
    tensors.update(_flat("best", progress.best_state or {}))
    meta = {k: v for k, v in progress.__dict__.items() if k != "best_state"}
    meta["has_best"] = progress.best_state is not None
    with atomic_dir(folder) as tmp:
        atomic_write(tmp / TENSORS, lambda path: save_file(tensors, path))  # umask mode, not save_file's 0600
        save_optimizer(optimizer, tmp / "optimizer")
        save_rng(tmp / "rng.safetensors", {"order": generator})
        (tmp / STATE).write_text(json.dumps(meta))


def load_progress(folder: str | Path, interventions: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
                  generator: torch.Generator) -> Progress | None:
    """Restore a checkpoint into the interventions, optimizer and generator; None if there is none."""
    found = complete_dir(folder)
    if found is None or not (found / STATE).exists():
        return None
    meta = json.loads((found / STATE).read_text())
    tensors = load_file(str(found / TENSORS))
    states: dict[str, dict[str, dict]] = {"now": {}, "best": {}}
    for key, value in tensors.items():
        kind, task, name = key.split("/", 2)
        states[kind].setdefault(task, {})[name] = value
    if set(states["now"]) != set(interventions):
        raise ValueError(f"{found}: a checkpoint for tasks {sorted(states['now'])}, not {sorted(interventions)}; "
                         f"use another checkpoint folder")
    for task, m in interventions.items():
        own = m.state_dict()
        m.load_state_dict({k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in states["now"][task].items()})
    load_optimizer(optimizer, found / "optimizer")
    load_rng(found / "rng.safetensors", {"order": generator})
    has_best = meta.pop("has_best")
    return Progress(**meta, best_state=states["best"] if has_best else None)
