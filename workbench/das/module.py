"""DAS as one ``nn.Module``: the frozen model and the interventions trained at one site, for DDP/FSDP.

``AlignmentModel`` holds the base model in its module tree (frozen, kept in eval mode) and one
intervention per task (the only trainable parameters); its forward is one task's intervened
next-token loss on a batch of example indices. ``train_distributed`` trains it under ``torchrun``
(or alone): every step draws the same global batch as ``train_multitask`` (same generator, same
slots), each rank takes its share (``workbench.distributed.rank_share``), losses are weighted by
each rank's share of the examples, so DDP's averaged gradient is the global batch's and a run on N
ranks equals ``train_multitask`` in one process. Epoch checkpoints (``workbench.das.resume``) are
written by rank 0 and resume at any number of ranks: the interventions and Adam's state are the
same on every rank. It trains for ``epochs`` epochs (no validation or early stopping: evaluate
afterwards with ``evaluate``).

>>> module = AlignmentModel(hm, "L1.resid_post", {"task": LowRankRotatedSpaceIntervention(32, 2)})  # doctest: +SKIP
>>> result = train_distributed(module, {"task": train}, TrainConfig(epochs=2))                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import distributed
from ..errors import check_finite_loss
from ..hooked import HookedModel
from ..interventions import Intervention
from ..sites import Site
from .data import CounterfactualData
from .interventions import BoundlessRotatedSpaceIntervention
from .resume import Progress, load_progress, save_progress
from .train import TrainConfig, TrainResult, _check_tasks, _temperature, intervened_logits, source_states


class AlignmentModel(nn.Module):
    """The frozen model (``base_model``, a submodule) and one DAS intervention per task at ``site``."""

    def __init__(self, hm: HookedModel, site: Site | str, interventions: Mapping[str, Intervention]) -> None:
        super().__init__()
        self.hm, self.site = hm, Site.parse(site)
        self.base_model = hm.model
        for p in self.base_model.parameters():
            p.requires_grad_(False)  # activation-only backward: no weight gradients for the model
        self.interventions = nn.ModuleDict({name: hm.place(m, self.site) for name, m in interventions.items()})

    def train(self, mode: bool = True) -> "AlignmentModel":
        """Train mode for the interventions; the frozen model stays in eval mode (no dropout)."""
        super().train(mode)
        self.base_model.eval()
        return self

    def forward(self, data: Mapping[str, CounterfactualData], index: Mapping[str, torch.Tensor],
                states: Mapping[str, torch.Tensor | None] | None = None) -> dict[str, torch.Tensor]:
        """Each task's mean cross-entropy of the counterfactual labels of ``data[task][index[task]]``
        ((b,) indices) with its intervention; ``states[task]`` (N, k, d): cached source states (None:
        run the sources). All tasks in one forward: DDP reduces once per forward and backward."""
        losses = {}
        for name, rows in index.items():
            cached = None if states is None else states[name]
            logits = intervened_logits(self.hm, self.site, self.interventions[name], data[name], rows, cached)  # (b, V)
            losses[name] = F.cross_entropy(logits.float(), data[name].labels[rows].to(logits.device))
        return losses


def _global_batch(order: torch.Tensor, step: int, batch_size: int) -> torch.Tensor:
    """``train_multitask``'s batch ``step`` of a task: slots wrap around a task smaller than the largest."""
    n = len(order)
    slot = (step * batch_size + torch.arange(batch_size)) % n
    return order[slot[: min(batch_size, n)]]  # (b,)


def train_distributed(module: AlignmentModel, train: Mapping[str, CounterfactualData],
                      config: TrainConfig = TrainConfig(), checkpoint: str | Path | None = None,
                      parallel: str = "ddp") -> TrainResult:
    """Train ``module``'s interventions, under DDP when a process group is up (``torchrun``).

    ``parallel="fsdp"`` shards the frozen model instead of copying it to every rank (FSDP2,
    `workbench.distributed.shard_frozen`); the interventions stay replicated and their gradients
    are summed over ranks, so the run equals the DDP one. ``config.batch_size`` is the global
    batch. With ``checkpoint`` (a folder), each epoch ends with a checkpoint there that a re-run
    (at any world size, either parallel mode) resumes.

    >>> train_distributed(AlignmentModel(hm, "L1.resid_post", {"task": das}), {"task": data})  # doctest: +SKIP
    """
    distributed.check_parallel(parallel)
    distributed.init_from_env()
    _check_tasks(module.interventions, train)
    world, main = distributed.world_size(), distributed.is_main()
    grouped = distributed.is_initialized() and world > 1
    fsdp = grouped and parallel == "fsdp"
    if fsdp:
        runner = distributed.shard_frozen(module, module.hm)
    else:
        runner = DistributedDataParallel(module, device_ids=None) if grouped else module
    hm, site = module.hm, module.site
    params = [p for p in module.interventions.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the interventions have no trainable parameters; use evaluate() for fixed bases")
    started = time.time()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(params, lr=config.lr)  # the parameter order of train_multitask
    scaler = torch.amp.GradScaler(hm.device_of(site).type) if hm.dtype == torch.float16 else None
    states = {name: source_states(hm, site, d, config.eval_batch_size) if config.cache_sources else None
              for name, d in train.items()}
    steps_per_epoch = max(math.ceil(len(d) / config.batch_size) for d in train.values())
    total = config.epochs * steps_per_epoch
    distributed.barrier()  # every rank reads the checkpoint before rank 0 may replace it
    progress = (load_progress(checkpoint, module.interventions, optimizer, generator) if checkpoint else None) \
        or Progress()
    distributed.barrier()
    bar = tqdm(total=total, initial=progress.epoch * steps_per_epoch, desc=f"align {site}",
               disable=not config.progress or not main, leave=False)
    runner.train()
    for epoch in range(progress.epoch, config.epochs):
        orders = {name: torch.randperm(len(d), generator=generator) for name, d in train.items()}
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            index, shares = {}, {}
            for name in train:
                m = module.interventions[name]
                if isinstance(m, BoundlessRotatedSpaceIntervention):
                    m.set_temperature(_temperature(config, global_step, total))
                index[name] = _global_batch(orders[name], step, config.batch_size)
                shares[name] = torch.tensor(distributed.rank_share(index[name].tolist()), dtype=torch.long)
            # an empty share runs one example at weight 0: every rank joins every all-reduce
            losses = runner(train, {n: s if len(s) else index[n][:1] for n, s in shares.items()}, states)
            parts, loss = {}, 0.0
            for name, task_loss in losses.items():
                m = module.interventions[name]
                if isinstance(m, BoundlessRotatedSpaceIntervention) and config.size_penalty:
                    task_loss = task_loss + config.size_penalty * m.boundary() / m.max_rank
                weight = len(shares[name]) / len(index[name])  # this rank's part of the global batch's mean
                loss = loss + task_loss * weight
                parts[name] = float(distributed.all_reduce_sum(torch.tensor([float(task_loss.detach()) * weight]))[0])
            check_finite_loss(sum(parts.values()), global_step, f"alignment training at {site}", config.lr)
            optimizer.zero_grad(set_to_none=True)
            # DDP averages the ranks' gradients (x world undoes that; the weights already sum to
            # 1); under FSDP the replicated interventions' gradients are summed below
            scaled = loss * (1 if fsdp else world)
            (scaled if scaler is None else scaler.scale(scaled)).backward()
            if fsdp:
                distributed.all_reduce_grads(params)
            if scaler is None:
                optimizer.step()
            else:
                scaler.step(optimizer)
                scaler.update()
            progress.rows += [{"epoch": epoch, "step": global_step, "task": n, "loss": v} for n, v in parts.items()]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(parts.values()):.3f}")
        progress.epoch = epoch + 1
        progress.done = progress.epoch >= config.epochs
        if checkpoint and main:
            save_progress(checkpoint, progress, module.interventions, optimizer, generator)
        distributed.barrier()
    bar.close()
    module.eval()
    return TrainResult(pd.DataFrame(progress.rows), seconds=time.time() - started)
