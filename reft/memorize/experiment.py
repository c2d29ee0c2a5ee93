"""One memorization run: train one intervention until greedy decoding recites the target.

A frozen model reads a short key (``ALIC#ID1->``); one intervention (default: rank-1 ConsReFT at
the key's last token, after layer L) is trained with Adam on the next-token loss of the N target
tokens. Every step's teacher-forced logits give the exact-match prefix for free (greedy decoding
from the key reproduces the target exactly iff every teacher-forced argmax is right); when it
covers all N tokens, real greedy generation with the intervention confirms it and training stops
(before another update). Otherwise training runs until ``max_steps``/``max_seconds``/``patience``.

>>> result = memorize(hm, task_for(hm.tokenizer, load_text("alice"), 64), MemorizeConfig(layer=15))  # doctest: +SKIP
>>> result["exact"], result["exact_prefix"], result["steps"]                                    # doctest: +SKIP
(True, 64, 131)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from workbench import orthogonal
from workbench.errors import check_finite_loss
from workbench.hooked import HookedModel
from workbench.plan import PlanItem
from workbench.positions import Indices
from workbench.sites import Site

from ..interventions import KINDS, build_intervention
from .metric import prefix_lengths
from .paths import PATHS, make_forward, memorization_loss
from .targets import DEFAULT_KEY, VARIANTS, MemorizationTask

VALUE_PARAMS = ("learned_source", "learned_source.bias")  # b: the value written into the subspace


@dataclass(frozen=True)
class MemorizeConfig:
    """One run's settings (saved with every result row)."""

    n_tokens: int = 64               # N: target tokens per key
    layer: int = 15                  # the edit is at the output of this block (resid_post)
    rank: int = 1                    # r: dimension of the edited subspace
    kind: str = "consreft"           # consreft (input-free, the paper's) | loreft | direft
    position: int = -1               # key token edited (-1: the last, as in the paper)
    variant: str = "natural"         # natural | shuffled | random tokens
    n_pairs: int = 1                 # K key -> value pairs stored in the one intervention
    key: str = DEFAULT_KEY           # key prompt; {i} numbers the pairs
    lr: float = 1e-2                 # Adam step for R (and W); see value_lr_scale for b
    value_lr_scale: bool = True      # b's step x |h_q|: b lives on the residual stream's scale (~180 in SmolLM2)
    max_steps: int = 1000            # optimizer-step budget
    max_seconds: float | None = None  # wall-clock budget for the training loop (None: unlimited)
    patience: int = 0                # stop after this many steps without a better loss or prefix (0: never)
    seed: int = 0                    # intervention init, shuffling and random tokens
    path: str = "auto"               # auto | fast (cached) | naive (full forward each step)
    verify: bool = True              # confirm a full teacher-forced match by greedy generation

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown intervention kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; expected one of {VARIANTS}")
        if self.path not in PATHS:
            raise ValueError(f"path {self.path!r}: expected one of {PATHS}")
        for name in ("n_tokens", "rank", "n_pairs", "max_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; e.g. {name}=1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}; e.g. lr=1e-2")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MemorizeConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown MemorizeConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)


def _plan(config: MemorizeConfig, task: MemorizationTask, intervention: nn.Module) -> list[PlanItem]:
    return [PlanItem(Site(config.layer, "resid_post"), Indices([config.position % task.prompt_length]), intervention)]


@torch.no_grad()
def greedy_prefix(hm: HookedModel, task: MemorizationTask, config: MemorizeConfig,
                  intervention: nn.Module) -> torch.Tensor:
    """Exact-match prefix (K,) of real greedy generation from each key, edited in the prefill."""
    batch = {"input_ids": task.prompt_ids.to(hm.device)}
    with orthogonal.cached():
        new = hm.generate(batch, _plan(config, task, intervention), max_new_tokens=task.n_tokens)["ids"]  # (K, <=N)
    return prefix_lengths(new.cpu(), task.target_ids)  # (K,)


def _optimizer(intervention: nn.Module, config: MemorizeConfig, value_scale: float) -> torch.optim.Optimizer:
    named = [(n, p) for n, p in intervention.named_parameters() if p.requires_grad]
    value = [p for n, p in named if n in VALUE_PARAMS]
    other = [p for n, p in named if n not in VALUE_PARAMS]
    groups = [{"params": other, "lr": config.lr}]
    if value:
        groups.append({"params": value, "lr": config.lr * (value_scale if config.value_lr_scale else 1.0)})
    return torch.optim.Adam([g for g in groups if g["params"]])


def _frozen(model: nn.Module):
    """Freeze the base model's parameters; returns a function that restores their flags."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    return lambda: [p.requires_grad_(flag) for p, flag in flags]


def memorize(hm: HookedModel, task: MemorizationTask, config: MemorizeConfig, progress: bool = True,
             return_intervention: bool = False) -> dict:
    """Train one intervention on ``task``; returns a result row (config fields + outcome).

    Outcome columns: ``steps``, ``seconds`` (training loop incl. verification), ``setup_seconds``
    (caching), ``ms_per_step``, ``loss_first``/``loss_final``, ``train_prefix`` (teacher-forced,
    smallest over pairs), ``exact_prefix`` (greedy generation, smallest over pairs),
    ``exact_tokens`` (greedy, summed over pairs), ``share`` (= exact_tokens / (K x N)), ``exact``.
    With ``return_intervention``, returns ``(row, intervention)``.
    """
    from tqdm.auto import tqdm

    if (task.n_tokens, task.n_pairs, task.variant) != (config.n_tokens, config.n_pairs, config.variant):
        raise ValueError(f"task (N={task.n_tokens}, K={task.n_pairs}, {task.variant}) does not match the config "
                         f"(N={config.n_tokens}, K={config.n_pairs}, {config.variant}); build it from the config")
    restore = _frozen(hm.model)
    try:
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        forward = make_forward(hm, task, config.layer, config.position, config.path)  # checks layer and position
        site = Site(config.layer, "resid_post")
        intervention = build_intervention(config.kind, hm.site_size(site), config.rank, dtype=hm.dtype,
                                          device=hm.device_of(site))
        value_scale = _residual_norm(hm, forward, task, config)
        optimizer = _optimizer(intervention, config, value_scale)
        targets = task.target_ids.to(hm.device)  # (K, N)
        setup = time.perf_counter() - started
        row = _train(hm, task, config, forward, intervention, optimizer, targets, progress, tqdm)
        row.update(setup_seconds=round(setup, 3), value_lr=value_scale * config.lr if config.value_lr_scale else config.lr,
                   path_used=forward.name, threads=torch.get_num_threads())
        row = {**config.to_dict(), "total_tokens": task.n_tokens * task.n_pairs, **row}
        return (row, intervention) if return_intervention else row
    finally:
        restore()


def _residual_norm(hm: HookedModel, forward, task: MemorizationTask, config: MemorizeConfig) -> float:
    """Mean norm of h_q, the state the edit writes into (the natural scale of b)."""
    edited = getattr(forward, "edited", None)
    if edited is None:
        q = config.position % task.prompt_length
        site = Site(config.layer, "resid_post")
        edited = hm.cache({"input_ids": task.prompt_ids}, [site])[site][:, q]  # (K, d)
    return float(edited.float().norm(dim=-1).mean())


class RunTracker:
    """One run's stopping rule and record, step by step (shared by ``memorize`` and batched runs).

    ``observe`` takes the step's teacher-forced logits (K, N, V) and loss; it returns True when
    the run stops before another update: greedy decoding recited the target (checked by real
    generation when every teacher-forced argmax is right, at most every 10 steps), or the step,
    time or patience budget ran out. ``outcome`` gives the result columns.
    """

    def __init__(self, hm: HookedModel, task: MemorizationTask, config: MemorizeConfig,
                 intervention: nn.Module) -> None:
        self.hm, self.task, self.config, self.intervention = hm, task, config, intervention
        self.history: list[float] = []
        self.best = (float("inf"), -1)  # (loss, prefix)
        self.since_best, self.step, self.last_verify = 0, 0, -10**9
        self.verified: torch.Tensor | None = None
        self.train_prefix = torch.zeros(task.n_pairs, dtype=torch.long)
        self.started = time.perf_counter()
        self.done = False

    def observe(self, logits: torch.Tensor, loss: torch.Tensor) -> bool:
        task, config = self.task, self.config
        self.train_prefix = prefix_lengths(logits.detach().argmax(-1).cpu(), task.target_ids)  # (K,)
        self.history.append(float(loss.detach()))
        check_finite_loss(self.history[-1], self.step, f"memorize N={task.n_tokens} at L{config.layer}", config.lr)
        if bool((self.train_prefix == task.n_tokens).all()) and self.step - self.last_verify >= 10:
            self.last_verify = self.step
            self.intervention.eval()
            self.verified = greedy_prefix(self.hm, task, config, self.intervention) if config.verify else self.train_prefix
            self.intervention.train()
            if bool((self.verified == task.n_tokens).all()):
                self.done = True  # recited exactly: stop before another update
                return True
        improved = self.history[-1] < self.best[0] * 0.99 or int(self.train_prefix.sum()) > self.best[1]
        self.best = (min(self.best[0], self.history[-1]), max(self.best[1], int(self.train_prefix.sum())))
        self.since_best = 0 if improved else self.since_best + 1
        out_of_budget = self.step >= config.max_steps or (
            config.max_seconds is not None and time.perf_counter() - self.started > config.max_seconds)
        if out_of_budget or (config.patience and self.since_best >= config.patience):
            self.verified, self.done = None, True
            return True
        return False

    def outcome(self) -> dict:
        """The result columns (after the last ``observe``); runs the final greedy check if needed."""
        task, config = self.task, self.config
        self.intervention.eval()
        verified = self.verified
        if verified is None or not config.verify:
            verified = greedy_prefix(self.hm, task, config, self.intervention) if config.verify else self.train_prefix
        seconds = time.perf_counter() - self.started
        exact_tokens = int(verified.sum())
        n_total = task.n_tokens * task.n_pairs
        return {"steps": self.step, "seconds": round(seconds, 3),
                "ms_per_step": round(1000 * seconds / max(self.step, 1), 1),
                "loss_first": round(self.history[0], 5), "loss_final": round(self.history[-1], 5),
                "train_prefix": int(self.train_prefix.min()), "exact_prefix": int(verified.min()),
                "exact_tokens": exact_tokens, "share": round(exact_tokens / n_total, 5),
                "exact": bool(exact_tokens == n_total)}


def _train(hm, task, config, forward, intervention, optimizer, targets, progress, tqdm) -> dict:
    tracker = RunTracker(hm, task, config, intervention)
    scaler = torch.amp.GradScaler(hm.device.type) if hm.dtype == torch.float16 else None
    bar = tqdm(total=config.max_steps, disable=not progress, leave=False,
               desc=f"memorize N={task.n_tokens} L{config.layer} r{config.rank} {config.variant}")
    intervention.train()
    while True:
        logits = forward.logits(intervention)  # (K, N, V)
        loss = memorization_loss(logits, targets)
        if tracker.observe(logits, loss):
            break
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:  # fp16 model: scale so small gradients survive; fp32 master values are unscaled
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        tracker.step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{tracker.history[-1]:.3f}", prefix=int(tracker.train_prefix.min()))
    bar.close()
    return tracker.outcome()
