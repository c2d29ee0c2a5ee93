"""ReftModel: a frozen Hugging Face model with trainable ReFT interventions at chosen sites.

``get_reft_model`` is the peft-style entry point: it freezes the base model, builds one
intervention per layer (two when first/last positions are untied) in the model's dtype and on its
device, and returns an ``nn.Module`` whose parameters are the interventions only. The forward
computes logits only where labels are given (response tokens), which is most of the saving over
a full-vocabulary forward on instruction data.

>>> hm = tiny_model("llama")                                                  # doctest: +SKIP
>>> reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2, positions="f1+l1"))  # doctest: +SKIP
>>> reft.print_trainable_parameters()                                         # doctest: +SKIP
trainable params: 260 || all params: 27,620 || trainable%: 0.9503
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn.functional import cross_entropy
from transformers.utils import ModelOutput

from workbench import orthogonal
from workbench.hooked import HookedModel
from workbench.linear_cross_entropy import fusable_head, head_inputs, linear_cross_entropy, loss_dtype
from workbench.orthogonal import master_dtype
from workbench.plan import PlanItem

from .config import ReftConfig
from .generate import generate
from .interventions import PerPositionGroups, ReftIntervention, build_intervention
from .positions import PromptFirstLast
from .saving import save_reft

try:  # transformers >= 5.x: a boolean (B, T) logits_to_keep returns only those rows' logits
    from transformers.modeling_utils import slice_logits_to_keep as _slice_logits_to_keep  # noqa: F401
    _MASK_LOGITS = True
except ImportError:  # pragma: no cover - older transformers: compute all logits, then select
    _MASK_LOGITS = False

IGNORE = -100  # label of tokens without a loss (prompt, padding)


@dataclass
class ReftOutput(ModelOutput):
    """``loss`` (scalar) and ``logits``: (N, V) at the N labelled positions, or (B, T, V) without labels."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def _site_key(site) -> str:
    return str(site).replace(".", "_")  # ModuleDict keys cannot contain dots


class ReftModel(nn.Module):
    """Interventions (the only trainable parameters) plus the frozen model they edit.

    The frozen model is a submodule (``base_model``), so DDP broadcasts it, FSDP can shard it and
    ``.to()`` moves it; ``hm`` is the HookedModel view of it (not a module). Saving writes the
    interventions only (``reft.saving.trainable_state``); ``train()`` leaves the frozen model in
    eval mode, so its dropout never fires while the interventions train.
    """

    def __init__(self, hm: HookedModel, config: ReftConfig, interventions: nn.ModuleDict) -> None:
        super().__init__()
        self.hm = hm
        self.reft_config = config
        self.base_model = hm.model  # registered: the module tree holds the frozen model
        self.interventions = interventions

    # ---- structure ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> "ReftModel":
        """Train mode for the interventions; the frozen model stays in eval mode (no dropout)."""
        super().train(mode)
        self.base_model.eval()
        return self

    @property
    def tokenizer(self):
        return self.hm.tokenizer

    def intervention_at(self, layer: int) -> nn.Module:
        return self.interventions[_site_key(self.reft_config.sites()[self.reft_config.layers.index(layer)])]

    def plan(self, prompt_lengths: torch.Tensor | None = None) -> list[PlanItem]:
        """Plan items for one batch: positions on the prompt (``prompt_lengths`` (B,)) or on the whole input."""
        sel = self.reft_config.selector()
        positions = PromptFirstLast(sel.first, sel.last, prompt_lengths)
        return [PlanItem(site, positions, self.interventions[_site_key(site)]) for site in self.reft_config.sites()]

    @contextmanager
    def intervening(self, prompt_lengths: torch.Tensor | None = None, mode: str = "prompt") -> Iterator[None]:
        """Hooks installed and every R evaluated once for every model call inside the block (all
        interventions of one shape in one batched orthogonalization).

        >>> with reft.intervening():                                          # doctest: +SKIP
        ...     logits = reft.hm.forward("I loved it").logits
        """
        with orthogonal.cached(self.interventions), self.hm.intervene(self.plan(prompt_lengths), mode=mode):
            yield

    def to(self, *args, **kwargs) -> "ReftModel":
        """Move the base model and the interventions together. A half-precision dtype applies to
        the base model; the interventions keep fp32 master values (see ``reft.interventions``)."""
        self.base_model.to(*args, **kwargs)
        device, dtype, _, _ = torch._C._nn._parse_to(*args, **kwargs)
        self.interventions.to(device=device, dtype=master_dtype(dtype))
        return self

    # ---- counting -----------------------------------------------------------------------
    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def num_base_parameters(self) -> int:
        return sum(p.numel() for p in self.base_model.parameters())

    def print_trainable_parameters(self) -> None:
        """Print trainable intervention parameters and their share of the base model's."""
        trainable, base = self.num_trainable_parameters(), self.num_base_parameters()
        print(f"trainable params: {trainable:,} || all params: {base + trainable:,} || "
              f"trainable%: {100 * trainable / base:.4f}")

    # ---- forward ------------------------------------------------------------------------
    accepts_loss_kwargs = True  # HF Trainer: pass num_items_in_batch (the count over all ranks)
    # With labels and gradients on, fuse the frozen head with the loss (workbench.linear_cross_entropy):
    # one pass less over the (N, V) logits and none of them kept, so ``logits`` is None then.
    # False keeps the logits (e.g. to log token accuracy while training).
    fused_loss: bool = True

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, prompt_lengths: torch.Tensor | None = None,
                num_items_in_batch: int | torch.Tensor | None = None) -> ReftOutput:
        """Intervened forward. ``labels`` (B, T) use -100 for tokens without loss; the loss is the mean
        next-token cross-entropy over labelled tokens, and logits are computed only for those.
        While gradients are on, a plain head (``workbench.linear_cross_entropy.PLAIN_HEADS``) is fused
        with the loss and ``logits`` is None (set ``fused_loss = False`` to keep them).

        ``prompt_lengths`` (B,): real prompt tokens per example (positions count from them);
        None intervenes on the first/last tokens of the whole input. ``num_items_in_batch``: divide
        the summed loss by this count instead (HF Trainer's count over accumulated micro-batches and
        ranks, so that a distributed step's loss is the global batch's mean).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        with self.intervening(prompt_lengths):
            if labels is None:
                return ReftOutput(logits=self.hm.forward(batch, use_cache=False).logits)
            keep = torch.zeros_like(labels, dtype=torch.bool)  # (B, T): position t predicts label t+1
            keep[:, :-1] = labels[:, 1:] != IGNORE
            targets = labels[:, 1:][keep[:, :-1]].to(input_ids.device)  # (N,)
            if targets.numel() == 0:
                raise ValueError("the batch has no labelled tokens (all labels are -100): give response tokens")
            head = self._fused_head()
            if head is not None:  # training: the loss without materializing the (N, V) logits
                with head_inputs(head) as seen:
                    self.hm.forward(batch, use_cache=False, logits_to_keep=keep.to(input_ids.device))
                loss = linear_cross_entropy(seen[0], head.weight, head.bias, targets, divisor=num_items_in_batch)
                return ReftOutput(loss=loss)
            if _MASK_LOGITS:
                logits = self.hm.forward(batch, use_cache=False, logits_to_keep=keep.to(input_ids.device)).logits
            else:  # pragma: no cover
                logits = self.hm.forward(batch, use_cache=False).logits[keep]
        wide = logits.to(loss_dtype(logits.dtype))  # (N, V): half precision upcast, fp64 kept; the head's device
        if num_items_in_batch is None:
            loss = cross_entropy(wide, targets.to(logits.device))
        else:
            loss = cross_entropy(wide, targets.to(logits.device), reduction="sum") / num_items_in_batch
        return ReftOutput(loss=loss, logits=logits)

    def _fused_head(self) -> nn.Module | None:
        """The head to fuse with the loss: only while gradients are on (evaluation keeps its
        logits), with the boolean ``logits_to_keep`` of transformers 5, and not under FSDP, whose
        root unshards the head's weight only for the duration of its own forward."""
        if not (torch.is_grad_enabled() and _MASK_LOGITS and self.fused_loss):
            return None
        return fusable_head(self.base_model)

    # ---- conveniences (defined in their own modules) ------------------------------------
    def generate(self, prompts, max_new_tokens: int = 32, chat_template: bool | None = None,
                 system_prompt: str | None = None, do_sample: bool = False) -> list[str]:
        """Generate responses with the interventions on the prompt (see ``reft.generate``)."""
        return generate(self, prompts, max_new_tokens=max_new_tokens, chat_template=chat_template,
                        system_prompt=system_prompt, do_sample=do_sample)

    def save(self, folder) -> None:
        """Write ``reft_config.json`` and ``interventions.safetensors`` (see ``reft.saving``)."""
        save_reft(self, folder)


def _as_hooked(model, tokenizer) -> HookedModel:
    if isinstance(model, HookedModel):
        return model
    if isinstance(model, nn.Module) and hasattr(model, "config"):
        return HookedModel(model, tokenizer)
    raise TypeError(f"get_reft_model takes a workbench HookedModel or a Hugging Face model, got {type(model).__name__}; "
                    f"load one first, e.g. workbench.load_model(...)")


def build_interventions(hm: HookedModel, config: ReftConfig) -> nn.ModuleDict:
    """One intervention per site (a PerPositionGroups of them when untied), for the model's dtype, on
    the site's device (each layer's own device when the model is dispatched over several)."""
    built = {}
    for site in config.sites():
        size = hm.site_size(site)  # raises with the valid layer range
        if config.rank > size:
            raise ValueError(f"rank {config.rank} out of range at {site}: the site's hidden size is {size}; "
                             f"choose a rank between 1 and {size}")
        groups = [build_intervention(config.kind, size, config.rank, dropout=config.dropout,
                                     activation=config.activation, dtype=hm.dtype, device=hm.device_of(site))
                  for _ in config.position_groups()]
        built[_site_key(site)] = groups[0] if len(groups) == 1 else PerPositionGroups(groups, config.position_groups())
    return nn.ModuleDict(built)


def get_reft_model(model, config: ReftConfig, tokenizer=None) -> ReftModel:
    """Freeze ``model`` and attach the interventions ``config`` names. ``model``: a HookedModel or an
    HF model (with ``tokenizer`` for text in/out).

    >>> reft = get_reft_model(load_model(), ReftConfig(layers=(8, 16), rank=4, positions="f3+l3"))  # doctest: +SKIP
    """
    hm = _as_hooked(model, tokenizer)
    for p in hm.model.parameters():
        p.requires_grad_(False)
    return ReftModel(hm, config, build_interventions(hm, config))


def reft_interventions(model: nn.Module) -> list[ReftIntervention]:
    """Every ReFT intervention inside ``model`` (flattening untied groups)."""
    return [m for m in model.modules() if isinstance(m, ReftIntervention)]
