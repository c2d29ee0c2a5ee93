"""A plain training loop for ReFT models: AdamW, linear warm-up/decay, gradient accumulation,
mixed precision on devices that support it, a progress bar, periodic evaluation and checkpoints
that resume (safetensors + JSON, never pickle).

Works for any model whose ``forward(**batch)`` returns ``.loss`` and whose trainable parameters
are the ones to train (ReftModel, ReftForClassification).

Under ``torchrun`` (a process group initialized, see ``workbench.distributed.init_from_env``) the
model is wrapped in DDP and ``batch_size`` stays the *global* batch: every step draws the same
global batch at any world size and each rank takes its share (``rank_share``). Each rank's mean
loss is weighted by its share of the step's labelled items (an all-reduced count), so the
averaged gradient is the global batch's, and a DDP run equals a one-process run with the same
config. Rank 0 alone shows progress and writes checkpoints; the weights and the AdamW state are
the same on every rank (DDP replicates them), so a checkpoint resumes at any number of ranks.
``TrainConfig(parallel="fsdp")`` shards the frozen model instead of copying it (FSDP2, see
``shard_frozen_model``); the interventions stay replicated, so all of the above holds.

>>> rows = tokenize_pairs(reft.tokenizer, persona_pairs())                       # doctest: +SKIP
>>> result = train(reft, rows, TrainConfig(epochs=20, lr=4e-3, output_dir="runs/persona"))  # doctest: +SKIP
>>> result.history[-1]["loss"]                                                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from workbench import distributed
from workbench.errors import check_finite_loss
from workbench.checkpoints import (atomic_dir, complete_dir, load_optimizer, load_rng, remove_stale_temps,
                                   save_optimizer, save_rng)
from workbench.orthogonal import orthonormal_parameter_names
from workbench.padding import pad_id_of
from workbench.runs import atomic_write

from .data import Collator
from .saving import load_weights_into, remember_fingerprint, save_reft

MIXED = ("auto", "no", "bf16", "fp16")
PARALLEL = distributed.PARALLEL


@dataclass
class TrainConfig:
    """How to train (saved as ``train_config.json`` beside the results)."""

    epochs: int = 10
    batch_size: int = 8               # global: all ranks of a distributed run together
    lr: float = 4e-3                  # ReFT tolerates (and needs) larger rates than full finetuning
    weight_decay: float = 0.0         # never applied to R or biases (see no_decay_names)
    warmup_ratio: float = 0.1         # share of optimizer steps with a linearly rising rate
    grad_accum: int = 1               # micro-batches per optimizer step
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "auto"     # auto: bf16 autocast on CUDA when supported, else fp32
    eval_every: int = 0               # optimizer steps between evaluations (0: only at the end)
    save_every: int = 0               # optimizer steps between checkpoints (0: only at the end)
    output_dir: str | None = None     # checkpoints, final weights, config and history go here
    seed: int = 0                     # data order (per epoch) and dropout
    max_steps: int | None = None      # stop early after this many optimizer steps
    progress: bool = True             # tqdm bar
    parallel: str = "ddp"             # in a process group: ddp (a frozen copy per rank) or fsdp (frozen blocks sharded)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}; e.g. {name}=1")
        if self.mixed_precision not in MIXED:
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: expected one of {MIXED}; use 'auto' (the default)")
        distributed.check_parallel(self.parallel)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}; e.g. lr=4e-3")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio {self.warmup_ratio}: expected 0 <= warmup_ratio < 1; e.g. warmup_ratio=0.1")


@dataclass
class TrainResult:
    steps: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``.

    >>> [round(lr_at(s, 10, 2, 1.0), 2) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, (total - step) / max(1, total - warmup))


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP/FSDP/Accelerate wrapper (``.module``), else ``model`` itself."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def count_items(batch: dict) -> int:
    """What a batch's loss averages over: labelled next tokens for (B, T) labels (as the forward
    shifts them), examples for (B,) class labels."""
    labels = batch["labels"]
    return int((labels[:, 1:] != -100).sum()) if labels.dim() == 2 else int(labels.shape[0])


def model_device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a ReFT model's inputs go and its base model's dtype (a classifier wraps ``.reft``)."""
    model = unwrap(model)
    hm = getattr(model, "hm", None) or getattr(getattr(model, "reft", None), "hm", None)
    if hm is not None:
        return hm.device, hm.dtype
    param = next(model.parameters())
    return param.device, param.dtype


def autocast_for(device: torch.device, mode: str, model_dtype: torch.dtype = torch.float32):
    """The autocast context for ``mode`` on ``device`` (a no-op for fp32) and the grad scaler: for
    fp16 autocast and for fp16 models, whose small gradients would underflow unscaled (the fp32
    master values of the interventions are what the scaler unscales)."""
    if mode == "auto":
        mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if mode == "fp16" or model_dtype == torch.float16 else None
    if mode == "no":
        return nullcontext(), scaler
    return torch.autocast(device.type, dtype=dtype), scaler


def no_decay_names(model: nn.Module) -> set[str]:
    """Parameters AdamW must not decay: every orthonormal parametrization (found by module type,
    whatever its attribute is called; decaying Householder reflectors would move R off what the
    gradient wants and, with torch's parametrization, zeroed R outright) and every bias.

    >>> from reft.interventions import build_intervention
    >>> sorted(no_decay_names(build_intervention("loreft", 8, 2)))
    ['learned_source.bias', 'rotation.reflectors']
    """
    names = orthonormal_parameter_names(model)
    return names | {n for n, _ in model.named_parameters() if n.endswith("bias")}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: ``weight_decay`` on weights, none on R's parametrization and biases."""
    skip = no_decay_names(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if n not in skip], "weight_decay": weight_decay},
            {"params": [p for n, p in named if n in skip], "weight_decay": 0.0}]


# ---- the loop --------------------------------------------------------------------------------
def _batches(n: int, batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def evaluate_loss(model: nn.Module, rows: Sequence[dict], collate_fn: Callable, batch_size: int) -> float:
    """Mean loss over ``rows`` (weighted by batch size)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    device, _ = model_device_and_dtype(model)
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate_fn(rows[i:i + batch_size]).items()}
        total += float(model(**batch).loss) * len(rows[i:i + batch_size])
        count += len(rows[i:i + batch_size])
    model.train(was)
    return total / max(1, count)


def _wrap(model: nn.Module, parallel: str = "ddp") -> nn.Module:
    """The module the loop calls: DDP around ``model`` in a process group (unless it comes wrapped,
    e.g. by Accelerate), the same model with its frozen blocks sharded for ``parallel="fsdp"``
    (see ``shard_frozen_model``), else ``model``. device_ids=None: the module says where it runs
    (one device, or several under a device_map)."""
    if not distributed.is_initialized() or model is not unwrap(model) or distributed.world_size() == 1:
        return model
    if parallel == "fsdp":
        return shard_frozen_model(model)
    return DistributedDataParallel(model, device_ids=None)


def frozen_hooked_model(model: nn.Module):
    """The HookedModel inside a ReftModel (``.hm``) or a classifier (which wraps it as ``.reft``)."""
    return getattr(model, "hm", None) or model.reft.hm


def shard_frozen_model(model: nn.Module) -> nn.Module:
    """FSDP2 for a ReFT model (`workbench.distributed.shard_frozen`): each frozen decoder block,
    then the frozen model's root, sharded in place; the interventions (and a classifier's head)
    stay whole and replicated, their gradients summed over ranks by ``all_reduce_grads``.

    >>> shard_frozen_model(reft)   # in a process group (torchrun)              # doctest: +SKIP
    """
    from torch.distributed.fsdp import FSDPModule

    hm = frozen_hooked_model(model)
    if not isinstance(hm.model, FSDPModule):
        # checkpoints name the base model by fingerprint: take it while the weights are whole
        # (rank 0's, which the sharding broadcasts and which rank 0 saves)
        remember_fingerprint(hm.model)
    return distributed.shard_frozen(model, hm)


all_reduce_grads = distributed.all_reduce_grads


def train(model: nn.Module, rows: Sequence[dict], config: TrainConfig, eval_rows: Sequence[dict] | None = None,
          eval_fn: Callable[[nn.Module], dict] | None = None, collate_fn: Callable | None = None,
          resume: bool = True) -> TrainResult:
    """Train ``model``'s trainable parameters on tokenized ``rows`` (see ``tokenize_pairs``).

    With ``output_dir``, a checkpoint in ``output_dir/checkpoint`` is resumed (same data order),
    and the final weights, ``train_config.json`` and ``history.json`` are written there.
    ``eval_fn(model) -> dict`` (or the mean loss on ``eval_rows``) runs every ``eval_every`` steps
    and at the end. In a process group every rank calls this with the same rows and config
    (``torchrun --nproc_per_node N script.py``); see the module docstring.
    """
    if not rows:
        raise ValueError("no training rows: give at least one example")
    from tqdm.auto import tqdm

    distributed.init_from_env()  # under torchrun: join the group, or the ranks would never sync
    runner, model = _wrap(model, config.parallel), unwrap(model)
    world, main = distributed.world_size(), distributed.is_main()
    fsdp = world > 1 and config.parallel == "fsdp"
    collate_fn = collate_fn or Collator(pad_id_of(model.tokenizer))
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    device, model_dtype = model_device_and_dtype(model)
    # built on the unwrapped module: the same parameter objects DDP reduces (FSDP leaves the
    # replicated interventions as they are)
    optimizer = torch.optim.AdamW(parameter_groups(model, config.weight_decay), lr=config.lr)
    per_epoch = math.ceil(math.ceil(len(rows) / config.batch_size) / config.grad_accum)
    total = per_epoch * config.epochs if config.max_steps is None else min(config.max_steps, per_epoch * config.epochs)
    warmup = int(config.warmup_ratio * total)
    autocast, scaler = autocast_for(device, config.mixed_precision, model_dtype)
    out = Path(config.output_dir) if config.output_dir else None
    ckpt = out / "checkpoint" if out else None
    result, start_step, finished = TrainResult(steps=0), 0, False
    if out is not None and resume and main:
        remove_stale_temps(out, recursive=True)  # what a killed run was writing
    distributed.barrier()  # no rank reads the checkpoint while rank 0 tidies it
    found = complete_dir(ckpt) if ckpt is not None and resume else None  # survives a kill at any point
    torch.manual_seed(config.seed)  # dropout stream; a resumed run restores it from the checkpoint
    if found is not None and (found / "trainer_state.json").exists():
        state = json.loads((found / "trainer_state.json").read_text())
        load_weights_into(model, found)
        load_optimizer(optimizer, found / "optimizer")  # replicated state: rank 0's fits any world size
        if (found / "rng.safetensors").exists():
            load_rng(found / "rng.safetensors")
        start_step, result.history, finished = state["step"], state["history"], state.get("finished", False)
    distributed.barrier()  # every rank has read it before rank 0 may replace it

    def checkpoint(step: int, done: bool = False) -> None:
        if ckpt is None:
            return
        if main:
            state = {"step": step, "history": result.history, "train_config": asdict(config), "finished": done,
                     "world_size": world}
            with atomic_dir(ckpt) as folder:  # weights, optimizer, RNG and state swap in together
                save_reft(model, folder)
                save_optimizer(optimizer, folder / "optimizer")
                save_rng(folder / "rng.safetensors")
                (folder / "trainer_state.json").write_text(json.dumps(state, indent=1))
        distributed.barrier()

    def run_eval(step: int) -> dict:
        metrics = eval_fn(model) if eval_fn else {}
        if eval_rows:
            metrics["eval_loss"] = evaluate_loss(model, eval_rows, collate_fn, config.batch_size)
        if metrics:
            result.history.append({"step": step, **metrics})
        return metrics

    model.train()
    started, step = time.time(), start_step
    bar = tqdm(total=total, initial=start_step, disable=not config.progress or not main, desc="reft train")
    running = 0.0
    for epoch in range(config.epochs):
        batches = _batches(len(rows), config.batch_size, epoch, config.seed)
        groups = [batches[i:i + config.grad_accum] for i in range(0, len(batches), config.grad_accum)]
        for index, group in enumerate(groups):
            if step >= total:
                break
            if epoch * per_epoch + index < start_step:
                continue  # already done before the resume
            for g in optimizer.param_groups:
                g["lr"] = lr_at(step, total, warmup, config.lr)
            # this rank's rows of each micro-batch; an empty share runs one row at weight 0, so
            # that every rank joins every gradient all-reduce
            shares = [distributed.rank_share(indices) for indices in group]
            micro = [collate_fn([rows[i] for i in (share or indices[:1])]) for share, indices in zip(shares, group)]
            counts = [count_items(b) if share else 0 for b, share in zip(micro, shares)]
            step_items = float(distributed.all_reduce_sum(torch.tensor([float(sum(counts))]))[0])
            running = torch.zeros(1, dtype=torch.float64)
            # DDP averages the ranks' gradients (x world undoes that); FSDP's are summed here
            scale = 1 if fsdp else world
            for n, (batch, count) in enumerate(zip(micro, counts)):
                batch = {k: v.to(device) for k, v in batch.items()}
                sync = n == len(micro) - 1 or not isinstance(runner, DistributedDataParallel)
                with nullcontext() if sync else runner.no_sync():  # one all-reduce per step
                    with autocast:
                        # the rank's mean x its share of the step's items = its part of the global mean
                        loss = runner(**batch).loss * (count / step_items)
                    (scaler.scale(loss * scale) if scaler else loss * scale).backward()
                running += float(loss.detach())
            running = float(distributed.all_reduce_sum(running)[0])  # the global batch's mean loss
            check_finite_loss(running, step, "reft train", config.lr)  # NaN/inf: stop, never save it
            if fsdp:
                all_reduce_grads(params)  # FSDP: the replicated interventions' gradients
            if scaler:
                scaler.unscale_(optimizer)
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            (scaler.step(optimizer), scaler.update()) if scaler else optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            result.history.append({"step": step, "epoch": epoch, "loss": running,
                                   "lr": optimizer.param_groups[0]["lr"]})
            bar.update(1)
            bar.set_postfix(loss=f"{running:.4f}")
            if config.eval_every and step % config.eval_every == 0 and step < total:
                run_eval(step)
            if config.save_every and step % config.save_every == 0 and step < total:
                checkpoint(step)
    bar.close()
    if not finished:  # a resumed finished run has its final evaluation in the history already
        run_eval(step)
    result.steps, result.seconds = step, round(time.time() - started, 2)
    model.eval()
    if out is not None:
        checkpoint(step, done=True)
        if main:
            save_reft(model, out)
            atomic_write(out / "train_config.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(asdict(config), indent=2)))
            atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(result.history, indent=1)))
        distributed.barrier()
    return result
