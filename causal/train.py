"""Training a mask featurizer (DBM) at a language-model site, beside the DAS loop.

`workbench.das.train_alignment` trains DAS and Boundless DAS; it anneals only Boundless DAS and
knows no sparsity term, so DBM gets this loop. It reuses the DAS loop's pieces: source states
read once (`source_states`) and the intervened forward (`intervened_logits`, a workbench plan).

>>> result = train_mask(hm, "L3.resid_post", DifferentiableMask(576), train, MaskConfig())   # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from workbench.das import CounterfactualData, intervened_logits, source_states
from workbench.errors import check_finite_loss
from workbench.hooked import HookedModel
from workbench.sites import Site

from .featurizers import DifferentiableMask, anneal


@dataclass(frozen=True)
class MaskConfig:
    """DBM training settings (saved with a run)."""

    epochs: int = 2
    batch_size: int = 16
    lr: float = 1e-1  # mask logits start at 1 and must cross 0: large steps (MIB trains masks at 1e-2..1e-1)
    sparsity: float = 0.05  # weight of the mean mask; higher keeps fewer dims
    temperature: tuple[float, float] = (1.0, 0.01)
    seed: int = 0
    progress: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.sparsity < 0:
            raise ValueError(f"MaskConfig: epochs {self.epochs} and batch_size {self.batch_size} must be >= 1, "
                             f"lr {self.lr} > 0, sparsity {self.sparsity} >= 0; e.g. MaskConfig(epochs=2)")


def train_mask(hm: HookedModel, site: Site | str, mask: DifferentiableMask, train: CounterfactualData,
               config: MaskConfig = MaskConfig()) -> list[float]:
    """Fit ``mask`` on ``train`` (cross-entropy on the counterfactual token + sparsity); returns
    the loss per step. The model is frozen; only the mask logits move."""
    site = Site.parse(site)
    if len(train) == 0:
        raise ValueError("no training examples for the mask; check the task's filtering")
    hm.place(mask, site)
    optimizer = torch.optim.Adam([mask.logits], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    states = source_states(hm, site, train)  # (N, k, d): read once
    frozen = [(p, p.requires_grad) for p in hm.model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    steps = config.epochs * math.ceil(len(train) / config.batch_size)
    losses = []
    mask.train()
    try:
        for step in tqdm(range(steps), desc=f"dbm {site}", disable=not config.progress, leave=False):
            anneal(mask, step, steps, config.temperature)
            index = torch.randperm(len(train), generator=generator)[: config.batch_size]
            logits = intervened_logits(hm, site, mask, train, index, states)  # (b, V)
            loss = F.cross_entropy(logits.float(), train.labels[index].to(logits.device))
            loss = loss + config.sparsity * mask.penalty()
            check_finite_loss(float(loss.detach()), step, f"DBM training at {site}", config.lr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        mask.eval()
    return losses


__all__ = ["MaskConfig", "train_mask"]
