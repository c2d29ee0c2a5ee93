"""Alignment training: learn an intervention's subspace so that interchanges match counterfactuals.

The model is frozen; only the interventions' parameters train, with cross-entropy on the
counterfactual next token. Source states at the site never change during training, so they are
read once (``hm.cache``) and handed to every step as ``PlanItem(..., source_values=...)``; the
base run then is the only forward per step. Multi-task training (MDAS) trains one intervention
per task jointly: each step sums the tasks' losses.

>>> das = LowRankRotatedSpaceIntervention(d=576, k=8)                            # doctest: +SKIP
>>> result = train_alignment(hm, "L12.resid_post", das, train, val, TrainConfig(epochs=2))  # doctest: +SKIP
>>> evaluate(hm, "L12.resid_post", das, test).iia                                # doctest: +SKIP
0.81
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import check_finite_loss
from ..hooked import HookedModel
from ..interventions import Intervention
from ..plan import PlanItem
from ..positions import Indices
from ..sites import Site
from ..padding import left_pad, pad_id_of
from .cached import BaseStates, cached_base_unsupported, cached_logits
from .data import CounterfactualData, last_logits_kwargs
from .interventions import BoundlessRotatedSpaceIntervention
from .resume import Progress, load_progress, save_progress


@dataclass
class TrainConfig:
    """Alignment-training settings (every field is saved with a run's results)."""

    epochs: int = 5  # passes over the largest task; early stopping may end sooner
    batch_size: int = 32
    lr: float = 1e-2  # Adam; Householder rotations move well at this rate (pyvene tutorials: 1e-3..1e-2)
    seed: int = 0  # shuffling and intervention initialization
    patience: int = 2  # epochs without a better validation IIA before stopping
    cache_sources: bool = True  # read source states at the site once instead of a source forward per step
    cache_base: bool = True  # with cached sources: run the layers below the site once per base input (workbench.das.cached)
    eval_batch_size: int = 64
    temperature: tuple[float, float] = (1.0, 0.01)  # Boundless DAS: annealed geometrically start -> end
    size_penalty: float = 0.0  # Boundless DAS: loss weight of the soft subspace size / max_rank
    progress: bool = True  # tqdm bar over steps

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; e.g. {name}=1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}; e.g. lr=1e-2")
        if min(self.temperature) <= 0 or self.size_penalty < 0:
            raise ValueError(f"temperature {self.temperature} must be > 0 and size_penalty {self.size_penalty} >= 0; "
                             f"e.g. temperature=(1.0, 0.01)")


@dataclass
class Evaluation:
    """IIA (share of examples whose argmax next token is the counterfactual label) and per-example rows."""

    iia: float
    examples: pd.DataFrame


@dataclass
class TrainResult:
    history: pd.DataFrame  # one row per step and task: epoch, step, task, loss
    val_iia: list[float] = field(default_factory=list)  # mean validation IIA after each epoch
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0


@torch.no_grad()
def source_states(hm: HookedModel, site: Site | str, data: CounterfactualData, batch_size: int = 64) -> torch.Tensor:
    """The sources' states at ``site`` and their positions, (N, k, d), read once.

    >>> states = source_states(hm, "L1.resid_post", data)                        # doctest: +SKIP
    """
    site, pad, parts = Site.parse(site), pad_id_of(hm, default=0), []
    if len(data) == 0:
        return torch.zeros(0, data.k, hm.site_size(site), device=hm.device)  # (0, k, d)
    for start in range(0, len(data), batch_size):
        stop = start + batch_size
        batch = left_pad(data.source_ids[start:stop], pad)
        acts = hm.cache(batch, [site], positions=Indices(data.source_positions[start:stop]))
        parts.append(acts[site])  # (b, k, d)
    return torch.cat(parts)  # (N, k, d)


def base_states(hm: HookedModel, site: Site | str, data: CounterfactualData, config: "TrainConfig",
                batch_size: int = 64) -> BaseStates | None:
    """``BaseStates`` of ``data`` when ``config`` asks for them and the model and site allow it, else None.

    >>> base = base_states(hm, "L1.resid_post", data, TrainConfig())             # doctest: +SKIP
    """
    if not (config.cache_base and config.cache_sources) or len(data) == 0 or cached_base_unsupported(hm, site):
        return None
    return BaseStates(hm, site, data, batch_size)


def intervened_logits(hm: HookedModel, site: Site, intervention: Intervention, data: CounterfactualData,
                      index: torch.Tensor, states: torch.Tensor | None, base: BaseStates | None = None) -> torch.Tensor:
    """Next-token logits (B, V) of the base inputs ``data[index]`` with the intervention at ``site``.

    ``states`` (N, k, d): cached source states; None runs the sources (the uncached path).
    ``base``: the base inputs' cached states below the site (needs ``states``): only the layers
    above the site run, and the LM head on the last position (``workbench.das.cached``).
    """
    if base is not None and (states is not None or not intervention.needs_source):
        return cached_logits(hm, site, intervention, data, index, base, states)
    rows = index.tolist()
    pad = pad_id_of(hm, default=0)
    batch = left_pad([data.base_ids[i] for i in rows], pad)
    item = PlanItem(site, Indices([data.base_positions[i] for i in rows]), intervention,
                    source_positions=Indices([data.source_positions[i] for i in rows]),
                    source_values=None if states is None else states[index])
    sources = None if states is not None else [left_pad([data.source_ids[i] for i in rows], pad)]
    with hm.intervene([item], sources=sources):
        out = hm.forward(batch, use_cache=False, **last_logits_kwargs(hm))
    return out.logits[:, -1]  # (B, V): left padding puts every last token in the last column


@torch.no_grad()
def evaluate(hm: HookedModel, site: Site | str, intervention: Intervention, data: CounterfactualData,
             batch_size: int = 64, states: torch.Tensor | None = None, cache_sources: bool = True,
             base: BaseStates | None = None) -> Evaluation:
    """IIA of ``intervention`` at ``site`` on ``data``, with per-example predictions.

    ``base``: cached base states (``base_states``), which validation reuses every epoch.

    >>> evaluate(hm, "L1.resid_post", das, test).iia                              # doctest: +SKIP
    """
    site = Site.parse(site)
    if states is None and cache_sources:
        states = source_states(hm, site, data, batch_size)
    was_training = intervention.training
    intervention.eval()
    predicted = []
    try:
        starts = range(0, len(data), batch_size)
        for start in tqdm(starts, desc=f"evaluate {site}", unit="batch", leave=False, disable=len(starts) < 4):
            index = torch.arange(start, min(start + batch_size, len(data)))
            predicted.append(intervened_logits(hm, site, intervention, data, index, states, base).argmax(-1).cpu())
    finally:
        intervention.train(was_training)
    predicted = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.long)
    examples = data.meta.copy()
    examples["label"] = data.labels.tolist()
    examples["predicted"] = predicted.tolist()
    examples["correct"] = (predicted == data.labels).tolist()
    return Evaluation(float(examples["correct"].mean()) if len(examples) else float("nan"), examples)


def _check_tasks(interventions: Mapping[str, Intervention], train: Mapping[str, CounterfactualData]) -> None:
    if set(interventions) != set(train):
        raise ValueError(f"tasks differ: interventions for {sorted(interventions)}, data for {sorted(train)}; "
                         f"give one training set per intervention")
    for name, data in train.items():
        if len(data) == 0:
            raise ValueError(f"task {name!r} has no training examples; check the filtering and splits")


def _temperature(config: TrainConfig, step: int, total: int) -> float:
    start, end = config.temperature
    return start * (end / start) ** (step / max(1, total - 1))


def train_multitask(hm: HookedModel, site: Site | str, interventions: Mapping[str, Intervention],
                    train: Mapping[str, CounterfactualData], val: Mapping[str, CounterfactualData] | None = None,
                    config: TrainConfig = TrainConfig(), checkpoint: str | Path | None = None) -> TrainResult:
    """Train several interventions at ``site`` jointly (MDAS): each step sums one batch per task.

    Early stopping on the mean validation IIA; the best epoch's parameters are restored. With
    ``checkpoint`` (a folder), each epoch ends with a checkpoint there and a run finds and resumes
    it: killed at any point and run again, it gives what the uninterrupted run gives.

    >>> train_multitask(hm, "L12.resid_post", {"Country": das_c, "Continent": das_k},
    ...                 {"Country": cause_isolate_c, "Continent": cause_isolate_k})   # doctest: +SKIP
    """
    site = Site.parse(site)
    _check_tasks(interventions, train)
    val = {name: data for name, data in (val or {}).items() if len(data)}  # an empty val set cannot vote
    for m in interventions.values():
        hm.place(m, site)  # before the optimizer: its state then lives where the parameters do
    params = list({id(p): p for m in interventions.values() for p in m.parameters() if p.requires_grad}.values())
    if not params:
        raise ValueError("the interventions have no trainable parameters; use evaluate() for fixed bases")
    started = time.time()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    # fp16 activations: scale the loss so small gradients survive; the fp32 master values of R
    # (see workbench.orthogonal.master_dtype) are what the scaler unscales.
    scaler = torch.amp.GradScaler(hm.device_of(site).type) if hm.dtype == torch.float16 else None
    frozen = [(p, p.requires_grad) for p in hm.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)  # activation-only backward: no weight gradients for the model
    states = {name: source_states(hm, site, d, config.eval_batch_size) if config.cache_sources else None
              for name, d in train.items()}
    val_states = {name: source_states(hm, site, d, config.eval_batch_size) if config.cache_sources else None
                  for name, d in (val or {}).items()}
    bases = {name: base_states(hm, site, d, config, config.eval_batch_size) for name, d in train.items()}
    val_bases = {name: base_states(hm, site, d, config, config.eval_batch_size) for name, d in (val or {}).items()}
    steps_per_epoch = max(math.ceil(len(d) / config.batch_size) for d in train.values())
    total = config.epochs * steps_per_epoch
    result = TrainResult(pd.DataFrame())
    progress = (load_progress(checkpoint, interventions, optimizer, generator) if checkpoint else None) or Progress()
    bar = tqdm(total=total, initial=progress.epoch * steps_per_epoch, desc=f"align {site}",
               disable=not config.progress, leave=False)
    try:
        for epoch in range(progress.epoch, config.epochs):
            if progress.done:
                break
            for m in interventions.values():
                m.train()
            orders = {name: torch.randperm(len(d), generator=generator) for name, d in train.items()}
            for step in range(steps_per_epoch):
                global_step = epoch * steps_per_epoch + step
                loss, parts = 0.0, {}
                for name, data in train.items():
                    m = interventions[name]
                    if isinstance(m, BoundlessRotatedSpaceIntervention):
                        m.set_temperature(_temperature(config, global_step, total))
                    slot = (step * config.batch_size + torch.arange(config.batch_size)) % len(data)
                    index = orders[name][slot[: min(config.batch_size, len(data))]]  # (b,)
                    logits = intervened_logits(hm, site, m, data, index, states[name], bases[name])  # (b, V)
                    task_loss = F.cross_entropy(logits.float(), data.labels[index].to(logits.device))
                    if isinstance(m, BoundlessRotatedSpaceIntervention) and config.size_penalty:
                        task_loss = task_loss + config.size_penalty * m.boundary() / m.max_rank
                    loss = loss + task_loss
                    parts[name] = float(task_loss.detach())
                check_finite_loss(sum(parts.values()), global_step, f"alignment training at {site}", config.lr)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                progress.rows += [{"epoch": epoch, "step": global_step, "task": n, "loss": v} for n, v in parts.items()]
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
            progress.epoch = epoch + 1
            if val:
                scores = [evaluate(hm, site, interventions[n], d, config.eval_batch_size, val_states[n],
                                   base=val_bases[n]).iia
                          for n, d in val.items()]
                score = sum(scores) / len(scores)
                progress.val_iia.append(score)
                if score > progress.best:
                    progress.best, progress.waited, progress.best_epoch = score, 0, epoch
                    progress.best_state = {n: copy.deepcopy(m.state_dict()) for n, m in interventions.items()}
                else:
                    progress.waited += 1
                    if progress.waited >= config.patience:
                        progress.stopped_early = progress.done = True
            progress.done = progress.done or progress.epoch >= config.epochs
            if checkpoint:
                save_progress(checkpoint, progress, interventions, optimizer, generator)
    finally:
        bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
    if progress.best_state is not None:
        for name, m in interventions.items():
            own = m.state_dict()
            m.load_state_dict({k: v.to(device=own[k].device, dtype=own[k].dtype)
                               for k, v in progress.best_state[name].items()})
    for m in interventions.values():
        m.eval()
    rows = progress.rows
    result.val_iia, result.best_epoch, result.stopped_early = progress.val_iia, progress.best_epoch, progress.stopped_early
    result.history = pd.DataFrame(rows)
    result.seconds = time.time() - started
    return result


def train_alignment(hm: HookedModel, site: Site | str, intervention: Intervention, train: CounterfactualData,
                    val: CounterfactualData | None = None, config: TrainConfig = TrainConfig(),
                    checkpoint: str | Path | None = None) -> TrainResult:
    """Train one intervention (DAS, Boundless DAS) to maximize IIA on ``train``.

    >>> result = train_alignment(hm, "L1.resid_post", LowRankRotatedSpaceIntervention(32, 2), train, val)  # doctest: +SKIP
    >>> result.val_iia[-1]                                                        # doctest: +SKIP
    0.97
    """
    return train_multitask(hm, site, {"task": intervention}, {"task": train},
                           None if val is None else {"task": val}, config, checkpoint)
