"""ReFT-r1 (AxBench): one rank-1 intervention that both detects a concept and steers toward it.

Built on the reft package's `DiReFT` with rank 1 and a ReLU: ``h + w₂ relu(w₁·h + b)``. The
pre-activation ``w₁·h + b``, max-pooled over a text's tokens, is the detection score; ``w₂`` is
the steering direction. Training joins the two roles, as AxBench does:

- detection: binary cross-entropy of the max-pooled score against the concept label (on cached
  site states: no model forward needed);
- steering: the language-modelling loss of concept texts with the intervention installed at
  every position, so that what ``w₂`` writes makes concept text likely.

(AxBench trains on instruction/response pairs with an LM judge; here the texts are the offline
templates of `analyses.concept_data`, and the loss weights are this module's defaults.)

>>> r1 = train_reft_r1(hm, "L6.resid_post", states, mask, labels, texts)   # doctest: +SKIP
>>> r1.direction().shape                                                    # doctest: +SKIP
torch.Size([576])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.nn import functional as F

from reft.interventions import DiReFT
from workbench import HookedModel, PlanItem, Site


@dataclass
class ReftR1:
    """A trained rank-1 detector + steerer at ``site``, with its training losses."""

    site: Site
    intervention: DiReFT
    losses: list[float]

    def scores(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Max-pooled pre-activation latents (n,) of token states (n, T, d) with mask (n, T)."""
        w = self.intervention.learned_source.weight[0].detach().float().cpu()  # (d,)
        b = float(self.intervention.learned_source.bias[0].detach())
        latent = states.float() @ w + b  # (n, T)
        return latent.masked_fill(~mask, float("-inf")).max(-1).values  # (n,)

    def direction(self) -> torch.Tensor:
        """The unit steering direction w₂ (d,)."""
        w2 = self.intervention.proj.weight[:, 0].detach().float().cpu()  # (d,)
        return w2 / w2.norm().clamp_min(1e-12)


def _lm_loss(hm: HookedModel, texts: Sequence[str], plan) -> torch.Tensor:
    batch = hm.tokenize(list(texts))
    with hm.intervene(plan):
        logits = hm.forward(batch, use_cache=False).logits[:, :-1]  # (B, T-1, V)
    labels = batch["input_ids"][:, 1:].masked_fill(batch["attention_mask"][:, 1:] == 0, -100)  # (B, T-1)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def train_reft_r1(hm: HookedModel, site: Site | str, states: torch.Tensor, mask: torch.Tensor,
                  labels: torch.Tensor, concept_texts: Sequence[str], steps: int = 30, lr: float = 1e-2,
                  batch_size: int = 8, lm_weight: float = 1.0, seed: int = 0) -> ReftR1:
    """Train ReFT-r1 on the train split: ``states`` (n, T, d) and ``mask`` (n, T) of all train
    texts (cached), ``labels`` (n,) in {0, 1}, ``concept_texts`` for the steering loss."""
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise ValueError(f"steps={steps}, lr={lr}, batch_size={batch_size}: give steps >= 1, lr > 0, batch_size >= 1")
    if not concept_texts:
        raise ValueError("no concept texts to train the steering direction on: give at least one")
    site = Site.parse(site)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    edit = DiReFT(hm.site_size(site), rank=1, activation="relu", dtype=hm.dtype, device=hm.device_of(site))
    optimizer = torch.optim.Adam(edit.parameters(), lr=lr)  # fp32 master parameters (DiReFT keeps them so)
    plan = [PlanItem(site, "all", edit)]
    y = labels.float()
    losses = []
    for _ in range(steps):
        rows = torch.randperm(states.shape[0], generator=generator)[:batch_size * 4]
        W1, b = edit.learned_source.weight[0], edit.learned_source.bias[0]  # (d,), ()
        latent = states[rows].to(W1.device).float() @ W1 + b  # (m, T)
        pooled = latent.masked_fill(~mask[rows].to(W1.device), float("-inf")).max(-1).values  # (m,)
        loss = F.binary_cross_entropy_with_logits(pooled, y[rows].to(W1.device))
        picks = torch.randperm(len(concept_texts), generator=generator)[:batch_size].tolist()
        with torch.enable_grad():
            loss = loss + lm_weight * _lm_loss(hm, [concept_texts[i] for i in picks], plan)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ReFT-r1 loss is {loss.item()} at step {len(losses)}: lower lr (now {lr})")
        params = list(edit.parameters())
        # gradients of the edit only: the frozen model's parameters get none (and keep no .grad)
        for p, g in zip(params, torch.autograd.grad(loss, params)):
            p.grad = g
        optimizer.step()
        losses.append(float(loss.detach()))
    return ReftR1(site, edit.eval(), losses)
