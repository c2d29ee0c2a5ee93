"""K independent memorization runs trained in one batched forward: one intervention per batch row.

Runs that share the layer, the edited position and the key length (they may differ in N, seed,
rank, kind, variant and pairs) stack their key + target rows along the batch: row group j holds
run j's K_j pairs. ``RowGroups`` applies run j's intervention to its own rows only, so one frozen
forward (``CachedForward`` or ``NaiveForward``, unchanged) serves every run. Shorter targets are
right-padded to the longest N: attention is causal, so the padding sits after every position a
shorter run reads, and its loss takes only its own N positions. The summed loss gives each run
exactly its own gradient (the parameters are disjoint), and each run keeps its own Adam and its
own stopping rule (``RunTracker``): a run that stops takes no more updates (its rows still ride
along until all stop). The runs equal K sequential ``memorize`` calls to float rounding
(tests/test_memorization_batched.py).

>>> rows = memorize_batched(hm, "alice", [MemorizeConfig(n_tokens=n, seed=s) for n in (32, 64) for s in (0, 1)])  # doctest: +SKIP
>>> [r["exact"] for r in rows]                                                       # doctest: +SKIP
[True, True, True, False]
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn

from workbench.hooked import HookedModel
from workbench.interventions import Intervention
from workbench.sites import Site

from ..interventions import build_intervention
from .experiment import MemorizeConfig, RunTracker, _frozen, _optimizer, _residual_norm
from .paths import make_forward, memorization_loss
from .targets import MemorizationTask, task_for


class RowGroups(Intervention):
    """Run j's intervention on its ``sizes[j]`` consecutive rows of a gathered batch (B, k, d).

    >>> from reft.interventions import ConsReFT
    >>> RowGroups([ConsReFT(8, 1), ConsReFT(8, 1)], sizes=(1, 2))(torch.zeros(3, 1, 8)).shape
    torch.Size([3, 1, 8])
    """

    def __init__(self, interventions: Sequence[nn.Module], sizes: Sequence[int]) -> None:
        super().__init__()
        self.groups = nn.ModuleList(interventions)
        self.sizes = tuple(int(s) for s in sizes)
        self.hidden_size = getattr(self.groups[0], "hidden_size", None) if len(self.groups) else None
        if len(self.sizes) != len(self.groups) or min(self.sizes, default=0) < 1:
            raise ValueError(f"give one positive row count per intervention, got sizes {self.sizes} for "
                             f"{len(self.groups)} interventions")

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        if base.shape[0] != sum(self.sizes):
            raise ValueError(f"batch of {base.shape[0]} rows for row groups of {self.sizes} (sum {sum(self.sizes)})")
        parts = torch.split(base, self.sizes)  # each (K_j, k, d)
        return torch.cat([m(part) for m, part in zip(self.groups, parts)])  # (B, k, d)


def stack_tasks(tasks: Sequence[MemorizationTask]) -> MemorizationTask:
    """One task whose rows are every task's pairs, targets right-padded to the longest N.

    >>> from reft.memorize import build_task
    >>> t = [build_task(list(range(5, 40)), lambda k: [1, 2], n) for n in (3, 5)]
    >>> stack_tasks(t).target_ids.tolist()
    [[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]
    """
    lengths = {t.prompt_length for t in tasks}
    if len(lengths) != 1:
        raise ValueError(f"batched runs need keys of one token count, got {sorted(lengths)}; "
                         f"run keys of other lengths in another batch")
    width = max(t.n_tokens for t in tasks)
    pad = lambda ids: torch.nn.functional.pad(ids, (0, width - ids.shape[1]))  # noqa: E731  (K_j, N_max)
    return MemorizationTask(torch.cat([t.prompt_ids for t in tasks]), torch.cat([pad(t.target_ids) for t in tasks]),
                            "stacked", tuple(k for t in tasks for k in t.keys))


def _check_shared(configs: Sequence[MemorizeConfig]) -> None:
    shared = {(c.layer, c.position, c.path) for c in configs}
    if len(shared) != 1:
        raise ValueError(f"batched runs share one layer, position and path, got (layer, position, path) "
                         f"{sorted(shared)}; group the runs by layer and batch each group")


def memorize_batched(hm: HookedModel, text: str | Sequence[int], configs: Sequence[MemorizeConfig],
                     progress: bool = True, return_interventions: bool = False):
    """Train the runs ``configs`` together; returns one result row per run, as ``memorize`` does.

    ``text``: a registry text name, a path, or the tokenized text. Rows add ``batched_runs`` (K)
    and ``batch_seconds`` (the shared loop); ``seconds`` and ``ms_per_step`` are each run's share
    of the batched loop. With ``return_interventions``, returns ``(rows, interventions)``.
    """
    from tqdm.auto import tqdm

    if not configs:
        raise ValueError("no runs to batch: give at least one MemorizeConfig")
    _check_shared(configs)
    if isinstance(text, str):
        from workbench.data.texts import load_text
        ids = hm.tokenizer(load_text(text), add_special_tokens=False)["input_ids"]
    else:
        ids = list(text)
    vocab = min(len(hm.tokenizer), int(hm.model.config.vocab_size))
    tasks = [task_for(hm.tokenizer, "", c.n_tokens, variant=c.variant, n_pairs=c.n_pairs, key=c.key, seed=c.seed,
                      vocab_size=vocab, text_ids=ids) for c in configs]
    first = configs[0]
    restore = _frozen(hm.model)
    try:
        started = time.perf_counter()
        stacked = stack_tasks(tasks)
        forward = make_forward(hm, stacked, first.layer, first.position, first.path)  # checks layer and position
        site = Site(first.layer, "resid_post")
        interventions, optimizers, trackers = [], [], []
        edited, row = getattr(forward, "edited", None), 0  # (B, 1, d): h_q of every row (fast path)
        for config, task in zip(configs, tasks):
            torch.manual_seed(config.seed)  # as memorize(): each run's init from its own seed
            m = build_intervention(config.kind, hm.site_size(site), config.rank, dtype=hm.dtype,
                                   device=hm.device_of(site))
            if edited is not None:  # _residual_norm's formula on this run's rows
                scale = float(edited[row:row + task.n_pairs].float().norm(dim=-1).mean())
            else:
                scale = _residual_norm(hm, None, task, config)
            row += task.n_pairs
            interventions.append(m)
            optimizers.append(_optimizer(m, config, scale))
            trackers.append(RunTracker(hm, task, config, m))
        setup = time.perf_counter() - started
        rows = _train_batched(hm, tasks, configs, forward, RowGroups(interventions, [t.n_pairs for t in tasks]),
                              optimizers, trackers, progress, tqdm)
        loop = time.perf_counter() - started - setup
        out = []
        for config, task, row, opt in zip(configs, tasks, rows, optimizers):
            row.update(setup_seconds=round(setup, 3), path_used=forward.name, threads=torch.get_num_threads(),
                       value_lr=opt.param_groups[-1]["lr"] if config.value_lr_scale else config.lr,
                       batched_runs=len(configs), batch_seconds=round(loop, 3))
            out.append({**config.to_dict(), "total_tokens": task.n_tokens * task.n_pairs, **row})
        return (out, interventions) if return_interventions else out
    finally:
        restore()


def _train_batched(hm, tasks, configs, forward, groups: RowGroups, optimizers, trackers, progress, tqdm) -> list[dict]:
    """The shared loop: one forward for all rows, each active run's loss, summed; one backward."""
    offsets = [0]
    for task in tasks:
        offsets.append(offsets[-1] + task.n_pairs)
    targets = [task.target_ids.to(hm.device) for task in tasks]  # (K_j, N_j) each
    scaler = torch.amp.GradScaler(hm.device.type) if hm.dtype == torch.float16 else None
    bar = tqdm(total=max(c.max_steps for c in configs), disable=not progress, leave=False,
               desc=f"memorize x{len(tasks)} batched at L{configs[0].layer}")
    groups.train()
    while True:
        logits = forward.logits(groups)  # (B, N_max, V)
        total, active = 0.0, []
        for j, (task, tracker) in enumerate(zip(tasks, trackers)):
            if tracker.done:
                continue
            own = logits[offsets[j]:offsets[j + 1], :task.n_tokens]  # (K_j, N_j, V)
            loss = memorization_loss(own, targets[j])
            if not tracker.observe(own, loss):
                total, active = total + loss, active + [j]
        if not active:
            break
        for j in active:
            optimizers[j].zero_grad(set_to_none=True)
        if scaler is None:
            total.backward()
            for j in active:
                optimizers[j].step()
        else:  # fp16: one scale for the summed loss (runs then differ from sequential ones by the scale's path)
            scaler.scale(total).backward()
            for j in active:
                scaler.step(optimizers[j])
            scaler.update()
        for j in active:
            trackers[j].step += 1
        bar.update(1)
        bar.set_postfix(active=len(active))
    bar.close()
    return [tracker.outcome() for tracker in trackers]
