"""Interventions: what happens to the gathered hidden states at a site.

Every intervention is an ``nn.Module`` with ``forward(base, source=None) -> Tensor`` on gathered
slices of shape ``(B, k, d)`` (batch, positions, hidden size). It never sees hooks, positions or
the model; the hooked model gathers, calls it and scatters the result back.

>>> patch = Patch()
>>> base, source = torch.zeros(1, 2, 4), torch.ones(1, 2, 4)
>>> patch(base, source).sum().item()
8.0
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Intervention(nn.Module):
    """Base class. Subclasses set ``needs_source`` and implement ``forward``.

    ``hidden_size`` (or None for "any") is checked against the site's size when installed.
    ``is_identity`` marks interventions that only read (the hook then skips the scatter).
    """

    needs_source: bool = False
    is_identity: bool = False
    hidden_size: int | None = None

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def _dims_mask(dims: Sequence[int] | torch.Tensor | None) -> torch.Tensor | None:
    """A boolean mask over the last dimension (or a broadcastable (B, k, d) mask), or None."""
    if dims is None:
        return None
    if isinstance(dims, torch.Tensor) and dims.dtype == torch.bool:
        return dims
    index = torch.as_tensor(list(dims), dtype=torch.long)
    if index.numel() == 0:
        raise ValueError("dims is empty: pass None for all dimensions or at least one index")
    if bool((index < 0).any()):
        raise ValueError(f"dims {index.tolist()}: channel indices must be >= 0 (0..d-1); give non-negative indices "
                         f"or a boolean mask")
    mask = torch.zeros(int(index.max()) + 1, dtype=torch.bool)
    mask[index] = True
    return mask


class _DimsMixin:
    """Shared handling of a ``dims`` restriction: the new value only on the chosen channels."""

    def _init_dims(self, dims) -> None:
        mask = _dims_mask(dims)
        self.register_buffer("dims_mask", mask, persistent=False)

    def _apply_dims(self, base: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        mask = self.dims_mask
        if mask is None:
            return new
        if mask.dim() == 1 and mask.shape[0] < base.shape[-1]:  # indices below d: pad with False
            mask = torch.cat([mask, mask.new_zeros(base.shape[-1] - mask.shape[0])])
        if mask.shape[-1] != base.shape[-1]:
            raise ValueError(f"dims reach channel {mask.shape[-1] - 1}, but the site has {base.shape[-1]} channels "
                             f"(0..{base.shape[-1] - 1}); use indices below {base.shape[-1]}")
        return torch.where(mask, new, base)  # (B, k, d)


class Patch(_DimsMixin, Intervention):
    """Interchange: ``out = s`` (whole vector), or ``out[dims] = s[dims]`` with the rest from ``b``.

    ``dims`` may be a list of channel indices or a boolean mask broadcastable to (B, k, d).
    """

    needs_source = True

    def __init__(self, dims: Sequence[int] | torch.Tensor | None = None) -> None:
        super().__init__()
        self._init_dims(dims)

    def forward(self, base, source=None):
        if source is None:
            raise ValueError("Patch needs a source: pass sources= to intervene/run")
        return self._apply_dims(base, source.to(base.dtype))


class ZeroAblation(_DimsMixin, Intervention):
    """Zero ablation: ``out = 0`` (or 0 on ``dims`` only)."""

    def __init__(self, dims: Sequence[int] | torch.Tensor | None = None) -> None:
        super().__init__()
        self._init_dims(dims)

    def forward(self, base, source=None):
        return self._apply_dims(base, torch.zeros_like(base))


class MeanAblation(_DimsMixin, Intervention):
    """Mean ablation: ``out = μ`` (or μ on ``dims`` only), μ a (d,) mean over a reference set."""

    def __init__(self, mean: torch.Tensor, dims: Sequence[int] | torch.Tensor | None = None) -> None:
        super().__init__()
        if mean.dim() != 1:
            raise ValueError(f"mean must be a (d,) vector, got shape {tuple(mean.shape)}; e.g. pass acts.mean(0)")
        self.register_buffer("mean", mean.detach().clone())
        self.hidden_size = mean.shape[0]
        self._init_dims(dims)

    def forward(self, base, source=None):
        return self._apply_dims(base, self.mean.to(base.dtype).expand_as(base))


class AddVector(Intervention):
    """Steering: ``out = b + α v`` with a fixed (d,) vector v and scale α."""

    def __init__(self, vector: torch.Tensor, scale: float = 1.0) -> None:
        super().__init__()
        if vector.dim() != 1:
            raise ValueError(f"vector must be a (d,) vector, got shape {tuple(vector.shape)}; pass one direction, "
                             f"e.g. vector[0]")
        self.register_buffer("vector", vector.detach().clone())
        self.scale = float(scale)
        self.hidden_size = vector.shape[0]

    def forward(self, base, source=None):
        return base + self.scale * self.vector.to(base.dtype)  # (B, k, d)


class Collect(Intervention):
    """Reads the gathered states (detached) into ``self.values`` and leaves them unchanged.

    ``out = b``. Each forward appends one ``(B, k, d)`` tensor.
    """

    is_identity = True

    def __init__(self) -> None:
        super().__init__()
        self.values: list[torch.Tensor] = []

    def forward(self, base, source=None):
        self.values.append(base.detach())
        return base
