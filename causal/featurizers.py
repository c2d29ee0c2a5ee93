"""Featurizers of an alignment: which part of a site's vector carries a high-level variable.

| kind | swapped part | trained |
| --- | --- | --- |
| ``full`` | the whole vector (`workbench.interventions.Patch`) | no |
| ``dims`` | a fixed subset of dimensions (``Patch(dims=...)``; one dim: a single neuron) | no |
| ``das`` | a learned k-dim subspace (`LowRankRotatedSpaceIntervention`) | R |
| ``boundless`` | Boundless DAS: a learned rotation and size | R, boundary |
| ``dbm`` | a learned binary mask over the d dims (`DifferentiableMask`, MIB's neuron masks) | mask |
| ``localist`` | the best single neuron or dims subset, searched (the baseline) | searched |

>>> build("dbm", d=8).hidden_size
8
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from workbench.das import build_intervention
from workbench.interventions import Intervention, Patch

KINDS = ("full", "dims", "das", "boundless", "dbm", "localist")
TRAINED = ("das", "boundless", "dbm")


class DifferentiableMask(Intervention):
    """DBM: ``out = b ⊙ (1 − m) + s ⊙ m`` with a learned mask m over the d dimensions.

    ``m = sigmoid(logit / τ)`` in training, the temperature τ annealed towards 0 by the trainer
    (``set_temperature``) so the mask hardens; in eval mode m is the hard mask ``logit > 0``.
    A sparsity penalty on ``m.mean()`` (``penalty()``) keeps only the dimensions needed. Logits
    start at ``init`` (> 0: every dim swapped, so training starts from the full patch's IIA).

    >>> mask = DifferentiableMask(4).eval()
    >>> mask(torch.zeros(1, 1, 4), torch.ones(1, 1, 4)).tolist()
    [[[1.0, 1.0, 1.0, 1.0]]]
    """

    needs_source = True

    def __init__(self, d: int, init: float = 1.0, temperature: float = 1.0, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if d < 1:
            raise ValueError(f"d = {d}: the mask needs at least one dimension")
        self.hidden_size = d
        # fp32 logits for half-precision models: the optimizer's small steps would round away
        self.logits = nn.Parameter(torch.full((d,), float(init), dtype=torch.float32, device=device))
        self.register_buffer("temperature", torch.tensor(float(temperature), device=device))

    def set_temperature(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"temperature {value} must be > 0 (anneal e.g. from 1.0 to 0.01)")
        self.temperature.fill_(float(value))

    def mask(self) -> torch.Tensor:
        """(d,) mask: soft in training, hard 0/1 in eval."""
        if self.training:
            return torch.sigmoid(self.logits / self.temperature)  # (d,)
        return (self.logits > 0).float()  # (d,)

    def penalty(self) -> torch.Tensor:
        """The sparsity term: the mean soft mask (an L1 norm over d, as the mask is >= 0)."""
        return torch.sigmoid(self.logits / self.temperature).mean()

    def selected(self) -> list[int]:
        """The dimensions the hard mask swaps."""
        return torch.nonzero(self.logits.detach() > 0).flatten().tolist()

    def forward(self, base, source=None):
        if source is None:
            raise ValueError("DifferentiableMask swaps in a source: pass sources= (or source_values=) to the run")
        m = self.mask().to(base.dtype)  # (d,)
        return base * (1 - m) + source.to(base.dtype) * m  # (B, n, d)


@dataclass(frozen=True)
class Featurizer:
    """A featurizer by kind, with its size: ``k`` (DAS rank; Boundless initial size) or ``dims``.

    >>> Featurizer("das", k=2).label
    'das k=2'
    """

    kind: str
    k: int = 1
    dims: tuple[int, ...] = ()
    sparsity: float = 0.0  # DBM: loss weight of the mean mask (MIB's L1 penalty)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown featurizer {self.kind!r}: choose one of {KINDS}")
        if self.kind == "dims" and not self.dims:
            raise ValueError("featurizer 'dims' needs dims=(...): the dimensions to swap, e.g. dims=(0, 3)")
        if self.k < 0 or self.sparsity < 0:
            raise ValueError(f"k = {self.k} and sparsity = {self.sparsity} must be >= 0")

    @property
    def trained(self) -> bool:
        return self.kind in TRAINED

    @property
    def label(self) -> str:
        if self.kind in ("das", "boundless"):
            return f"{self.kind} k={self.k}"
        if self.kind == "dims":
            return f"dims {list(self.dims)}" if len(self.dims) <= 4 else f"dims ({len(self.dims)})"
        return self.kind


def build(kind: str | Featurizer, d: int, k: int = 1, dims: Sequence[int] = (), dtype: torch.dtype | None = None,
          device: torch.device | str | None = None) -> Intervention:
    """The intervention of a featurizer at a site of size ``d`` (on the site's device and dtype).

    >>> build("full", d=4)(torch.zeros(1, 1, 4), torch.ones(1, 1, 4)).sum().item()
    4.0
    """
    spec = kind if isinstance(kind, Featurizer) else Featurizer(kind, k=k, dims=tuple(dims))
    if spec.kind == "localist":
        raise ValueError("featurizer 'localist' is a search over dims subsets, not one intervention; "
                         "the alignment searches call localist_search for it")
    if spec.kind == "full":
        return Patch()
    if spec.kind == "dims":
        bad = [i for i in spec.dims if not 0 <= i < d]
        if bad:
            raise ValueError(f"dims {bad} out of range for a site of {d} dims (0-{d - 1}); choose dims below {d}")
        return Patch(dims=list(spec.dims))
    if spec.kind == "dbm":
        return DifferentiableMask(d, dtype=dtype, device=device)
    return build_intervention("das" if spec.kind == "das" else "boundless", d, spec.k, dtype=dtype, device=device)


def anneal(intervention: nn.Module, step: int, total: int, temperature: tuple[float, float] = (1.0, 0.01)) -> None:
    """Set a DBM / Boundless temperature for ``step`` of ``total`` (geometric from start to end)."""
    if hasattr(intervention, "set_temperature"):
        start, end = temperature
        intervention.set_temperature(start * (end / start) ** (step / max(1, total - 1)))


__all__ = ["DifferentiableMask", "Featurizer", "KINDS", "TRAINED", "anneal", "build"]
