"""ReFT interventions: low-rank edits of hidden states on the workbench ``Intervention`` contract.

Each class is an ``nn.Module`` with ``forward(base, source=None)`` on gathered ``(B, k, d)``
slices (batch, positions, hidden size); the hooked model gathers, calls and scatters. They hold
only their own parameters, created on the device you pass and for the model dtype you pass (there
is no hidden bfloat16 default). For bf16/fp16 models the parameters are stored in float32 (master
values: Householder QR has no half-precision kernels, AdamW state and the fp16 grad scaler need
fp32) and cast to the activations' dtype when applied, so the edit computes in the model's dtype.

Dropout and the activation act on the rank-r edit coefficients, never on the hidden state itself:
dropping channels of the residual stream would perturb the frozen model, not the edit.

>>> edit = LoReFT(hidden_size=8, rank=2)
>>> base = torch.randn(3, 2, 8)                    # (B, k, d)
>>> edit(base).shape
torch.Size([3, 2, 8])
>>> _ = edit.set_identity(); bool(torch.equal(edit(base), base))
True
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from workbench.interventions import Intervention
from workbench.orthogonal import OrthonormalRows, master_dtype

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _check(hidden_size: int, rank: int, dropout: float) -> None:
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    if not 1 <= rank <= hidden_size:
        raise ValueError(
            f"rank {rank} out of range: it must be between 1 and the site's hidden size {hidden_size}; "
            f"choose a smaller rank"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout {dropout} out of range: expected 0 <= dropout < 1")


class ReftIntervention(Intervention):
    """Base of the ReFT family: records the shape arguments so that save/load can rebuild it."""

    kind: str = ""

    def spec(self) -> dict:
        """Constructor arguments as JSON-able values (saved beside the weights)."""
        return {"kind": self.kind, "hidden_size": self.hidden_size, "rank": self.rank,
                "dropout": self.dropout.p, "activation": self.activation_name}


class LoReFT(ReftIntervention):
    """LoReFT: ``h + Rᵀ(act(W h + b) − R h)``, R (r × d) with orthonormal rows, W (r × d), b (r,).

    With the linear activation the edit is computed as ``((W − R) h + b)`` in one product, so
    ``W = R, b = 0`` (see ``set_identity``) leaves ``h`` bit-identical.

    >>> LoReFT(hidden_size=16, rank=4)(torch.zeros(1, 1, 16)).shape
    torch.Size([1, 1, 16])
    """

    kind = "loreft"

    def __init__(self, hidden_size: int, rank: int, dropout: float = 0.0, activation: str = "linear",
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        _check(hidden_size, rank, dropout)
        self.hidden_size, self.rank, self.activation_name = hidden_size, rank, activation
        self.rotation = OrthonormalRows(hidden_size, rank, dtype=dtype, device=device)  # R (r, d)
        self.learned_source = nn.Linear(hidden_size, rank, dtype=master_dtype(dtype), device=device)  # W, b
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        R = self.rotation.weight  # (r, d), master dtype
        W, b = self.learned_source.weight, self.learned_source.bias  # (r, d), (r,)
        if self.activation_name == "linear":  # W − R in the master dtype: exactly 0 when W = R
            coef = F.linear(base, (W - R).to(base.dtype), b.to(base.dtype))  # (B, k, r)
        else:
            R_ = R.to(base.dtype)
            coef = self.act(F.linear(base, W.to(base.dtype), b.to(base.dtype))) - base @ R_.T  # (B, k, r)
        return base + self.dropout(coef) @ R.to(base.dtype)  # (B, k, d)

    @torch.no_grad()
    def set_identity(self) -> "LoReFT":
        """Set W = R and b = 0: the edit vanishes (exactly, with the linear activation)."""
        self.learned_source.weight.copy_(self.rotation.weight.to(self.learned_source.weight.dtype))
        self.learned_source.bias.zero_()
        return self


class DiReFT(ReftIntervention):
    """DiReFT: ``h + W2ᵀ act(W1 h + b)``, W1, W2 (r × d) unconstrained, b (r,) — no orthogonality.

    >>> DiReFT(hidden_size=16, rank=4)(torch.zeros(2, 3, 16)).shape
    torch.Size([2, 3, 16])
    """

    kind = "direft"

    def __init__(self, hidden_size: int, rank: int, dropout: float = 0.0, activation: str = "linear",
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        _check(hidden_size, rank, dropout)
        self.hidden_size, self.rank, self.activation_name = hidden_size, rank, activation
        dtype = master_dtype(dtype)
        self.learned_source = nn.Linear(hidden_size, rank, dtype=dtype, device=device)  # W1 (r, d), b (r,)
        self.proj = nn.Linear(rank, hidden_size, bias=False, dtype=dtype, device=device)  # W2ᵀ (d, r)
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        W1, b = self.learned_source.weight.to(base.dtype), self.learned_source.bias.to(base.dtype)
        coef = self.dropout(self.act(F.linear(base, W1, b)))  # (B, k, r)
        return base + F.linear(coef, self.proj.weight.to(base.dtype))  # (B, k, d)


class ConsReFT(ReftIntervention):
    """ConsReFT: ``h + Rᵀ(b − R h)``: sets the r-dim subspace of R to a constant b (input-free).

    Used for memorization: the edit does not depend on what ``h`` was in that subspace.

    >>> ConsReFT(hidden_size=16, rank=1)(torch.zeros(1, 2, 16)).shape
    torch.Size([1, 2, 16])
    """

    kind = "consreft"

    def __init__(self, hidden_size: int, rank: int, dropout: float = 0.0, activation: str = "linear",
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        super().__init__()
        _check(hidden_size, rank, dropout)
        if activation != "linear":
            raise ValueError(f"ConsReFT has no input-dependent term to activate; got activation={activation!r}, "
                             f"use 'linear'")
        self.hidden_size, self.rank, self.activation_name = hidden_size, rank, activation
        self.rotation = OrthonormalRows(hidden_size, rank, dtype=dtype, device=device)  # R (r, d)
        self.learned_source = nn.Parameter(torch.zeros(rank, dtype=master_dtype(dtype), device=device))  # b (r,)
        self.dropout = nn.Dropout(dropout)

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        R = self.rotation.weight.to(base.dtype)  # (r, d)
        coef = self.learned_source.to(base.dtype) - base @ R.T  # (B, k, r)
        return base + self.dropout(coef) @ R  # (B, k, d)


KINDS: dict[str, type[ReftIntervention]] = {"loreft": LoReFT, "direft": DiReFT, "consreft": ConsReFT}


def build_intervention(kind: str, hidden_size: int, rank: int, dropout: float = 0.0,
                       activation: str = "linear", dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> ReftIntervention:
    """One intervention of ``kind`` (``loreft``, ``direft``, ``consreft``).

    >>> build_intervention("direft", 16, 2).kind
    'direft'
    """
    if kind not in KINDS:
        raise ValueError(f"unknown intervention kind {kind!r}; expected one of {sorted(KINDS)}")
    return KINDS[kind](hidden_size, rank, dropout=dropout, activation=activation, dtype=dtype, device=device)


class PerPositionGroups(Intervention):
    """Untied weights: slot groups of the gathered positions each get their own intervention.

    ``sizes`` splits the k gathered slots in order, e.g. ``(7, 7)`` for ``f7+l7``: the first 7
    slots use ``groups[0]``, the last 7 ``groups[1]``. One gather/scatter serves all groups.

    >>> untied = PerPositionGroups([LoReFT(8, 2), LoReFT(8, 2)], sizes=(1, 1))
    >>> untied(torch.zeros(4, 2, 8)).shape
    torch.Size([4, 2, 8])
    """

    def __init__(self, groups: list[ReftIntervention], sizes: tuple[int, ...]) -> None:
        super().__init__()
        if len(groups) != len(sizes) or not groups:
            raise ValueError(f"{len(groups)} interventions for {len(sizes)} slot groups {sizes}: give one each")
        self.groups = nn.ModuleList(groups)
        self.sizes = tuple(int(s) for s in sizes)
        self.hidden_size = groups[0].hidden_size

    def forward(self, base: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        if base.shape[1] != sum(self.sizes):
            raise ValueError(f"{base.shape[1]} gathered positions, but the slot groups {self.sizes} "
                             f"need {sum(self.sizes)}")
        parts = torch.split(base, self.sizes, dim=1)  # each (B, k_g, d)
        return torch.cat([g(p) for g, p in zip(self.groups, parts)], dim=1)  # (B, k, d)
