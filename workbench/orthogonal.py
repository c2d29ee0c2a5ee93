"""A matrix with orthonormal rows, kept orthonormal by construction: a product of r Householder
reflectors, with no d x d buffer.

Householder reflectors ``H(a)_i = I − τ_i v_i v_iᵀ`` with ``v_i = e_i + a_i`` (``a_i`` zero at
positions ≤ i) and ``τ_i = 2 / (1 + |a_i|²)``. ``weight`` R (r, d) is ``(B · Y)ᵀ``: ``Y`` is minus
the first r columns of the product of r trained reflectors X (``reflectors``, r x d; Y = E_r at
X = 0), and B, a fixed orthogonal map whose first r columns are the initial (or ``set_``) rows, is
itself r reflectors (``base_reflectors``, r x d) and r signs. This is torch's trivialization
(``parametrizations.orthogonal``, used before) without its d x d ``base`` buffer (64 MiB at
d = 4096): evaluating R is one ``householder_product`` and one ``ormqr`` (LAPACK/cuSOLVER), O(d r²)
time and memory, and a checkpoint holds 2·r·d + r values.

Storage is float32 for half-precision models: ``orgqr`` has no bf16/fp16 kernels, and the
optimizer state of R should not be half precision either. Callers cast R to the activations'
dtype when they apply it.

>>> R = OrthonormalRows(8, 2)
>>> w = R.weight                                   # (2, 8)
>>> bool(torch.allclose(w @ w.T, torch.eye(2), atol=1e-6))
True
>>> bool(torch.equal(OrthonormalRows(4, 4).set_(torch.eye(4)).weight, torch.eye(4)))   # exact identity
True
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

HALF = (torch.bfloat16, torch.float16)
_CACHE: dict[int, torch.Tensor] | None = None  # id(module) -> weight, inside `cached()`


def master_dtype(dtype: torch.dtype | None) -> torch.dtype | None:
    """Storage dtype of trained intervention values for a model in ``dtype``: float32 for half
    precision (optimizer state and grad-scaler unscaling need fp32 master values; the forward casts
    to the activations' dtype), the model's dtype otherwise.

    >>> master_dtype(torch.bfloat16), master_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.float32 if dtype in HALF else dtype


LOOP_MAX_RANK = 32  # up to this rank, reflectors are applied as batched rank-1 updates; above, LAPACK


@contextmanager
def cached(modules: nn.Module | Iterable[nn.Module] | None = None) -> Iterator[None]:
    """Evaluate each ``OrthonormalRows.weight`` once inside the block (e.g. one training step or one
    generation), as ``torch.nn.utils.parametrize.cached`` does for parametrizations.

    With ``modules``, every ``OrthonormalRows`` inside them is evaluated up front, those of the same
    shape, dtype and device together in one batched computation: one orthogonalization for all of
    a ReFT model's interventions per step, a few kernels instead of a few per intervention.

    >>> R = OrthonormalRows(6, 2)
    >>> with cached():
    ...     R.weight is R.weight
    True
    """
    global _CACHE
    outer = _CACHE
    _CACHE = {} if outer is None else outer
    try:
        if modules is not None:
            _fill_batched(_CACHE, modules)
        yield
    finally:
        _CACHE = outer


def _fill_batched(cache: dict, modules: nn.Module | Iterable[nn.Module]) -> None:
    found = modules.modules() if isinstance(modules, nn.Module) else (m for x in modules for m in x.modules())
    groups: dict[tuple, list[OrthonormalRows]] = {}
    for m in found:
        if isinstance(m, OrthonormalRows) and id(m) not in cache and m.r <= LOOP_MAX_RANK:
            groups.setdefault((m.d, m.r, m.reflectors.dtype, m.reflectors.device), []).append(m)
    for members in groups.values():
        stacked = [torch.stack([getattr(m, name) for m in members])
                   for name in ("reflectors", "base_reflectors", "base_signs")]  # (n, r, d), (n, r, d), (n, r)
        for m, weight in zip(members, rows_of(*stacked).unbind(0)):
            cache[id(m)] = weight


def _reflect(a: torch.Tensor, Y: torch.Tensor, reverse: bool) -> torch.Tensor:
    """``H_1 ⋯ H_r Y`` for reflectors ``a`` (n, r, d) (a_i zero at positions ≤ i) and Y (n, d, m),
    as 2 small batched products per reflector: O(d r m) and no LAPACK call, on any device."""
    n, r, d = a.shape
    tau = 2.0 / (1.0 + (a * a).sum(-1))  # (n, r)
    for i in (reversed(range(r)) if reverse else range(r)):
        v = a[:, i].clone()  # (n, d)
        v[:, i] = 1.0  # v_i = e_i + a_i
        w = (v.unsqueeze(1) @ Y).squeeze(1)  # vᵀY (n, m)
        Y = Y - (tau[:, i, None] * v).unsqueeze(-1) * w.unsqueeze(1)  # (n, d, m)
    return Y


def rows_of(reflectors: torch.Tensor, base_reflectors: torch.Tensor, base_signs: torch.Tensor) -> torch.Tensor:
    """R (n, r, d) of n stacked ``OrthonormalRows`` states ((n, r, d), (n, r, d), (n, r)).

    >>> R = OrthonormalRows(8, 3)
    >>> batch = rows_of(R.reflectors[None], R.base_reflectors[None], R.base_signs[None])
    >>> bool(torch.allclose(batch[0], R.weight, atol=1e-6))
    True
    """
    n, r, d = reflectors.shape
    X, B = reflectors.triu(1), base_reflectors.triu(1)  # a_i: entries at positions <= i do not count
    E = torch.eye(d, r, dtype=reflectors.dtype, device=reflectors.device).expand(n, d, r)
    if r <= LOOP_MAX_RANK:
        Y = -_reflect(X, E, reverse=True)  # −H(X) E_r: E_r at X = 0
        Y = torch.cat([Y[:, :r] * base_signs[:, :, None], Y[:, r:]], dim=1)  # D · Y
        return _reflect(B, Y, reverse=True).mT  # (n, r, d)
    A = X.mT  # (n, d, r), LAPACK's layout
    Y = -torch.linalg.householder_product(A, 2.0 / (1.0 + (A * A).sum(-2)))  # (n, d, r)
    Y = torch.cat([Y[:, :r] * base_signs[:, :, None], Y[:, r:]], dim=1)
    A = B.mT
    return torch.ormqr(A, 2.0 / (1.0 + (A * A).sum(-2)), Y).mT  # (n, r, d)


class OrthonormalRows(nn.Module):
    """``weight``: an (r, d) matrix with orthonormal rows (1 <= r <= d); trainable, always orthonormal.

    Initialized uniformly at random (Haar, from torch's global RNG). ``set_`` puts any given
    orthonormal rows: exactly for signed coordinate rows such as the identity, to fp32 rounding
    (< 1e-6) otherwise.
    """

    def __init__(self, d: int, r: int, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if not 0 < r <= d:
            raise ValueError(f"rank {r} out of range: it must be between 1 and the hidden size {d}; choose r in 1-{d}")
        self.d, self.r = d, r
        dtype = master_dtype(dtype) or torch.get_default_dtype()
        self.reflectors = nn.Parameter(torch.zeros(r, d, dtype=dtype, device=device))  # X: a_i as rows (r, d)
        self.register_buffer("base_reflectors", torch.zeros(r, d, dtype=dtype, device=device))  # B's a_i (r, d)
        self.register_buffer("base_signs", torch.ones(r, dtype=dtype, device=device))  # (r,) ±1
        with torch.no_grad():
            self._set_base(torch.randn(d, r, dtype=torch.float64))  # Haar-random frame

    # ---- evaluation --------------------------------------------------------------------------
    def _compute(self) -> torch.Tensor:
        # Trivialized: R = (B · Y)ᵀ with Y = −H(X)[:, :r] (E_r at X = 0) and B = H(A_B)·D fixed. X
        # starts at 0 after every set_, where the Householder map is best conditioned (as in
        # torch's `orthogonal`), but B is r reflectors, not a stored d x d matrix.
        return rows_of(self.reflectors[None], self.base_reflectors[None], self.base_signs[None])[0]  # (r, d)

    @property
    def weight(self) -> torch.Tensor:
        """R, (r, d), in the storage dtype (float32 for half-precision models)."""
        if _CACHE is None:
            return self._compute()
        key = id(self)
        if key not in _CACHE:
            _CACHE[key] = self._compute()
        return _CACHE[key]

    # ---- setting -----------------------------------------------------------------------------
    @torch.no_grad()
    def _set_base(self, columns: torch.Tensor) -> None:
        """B's reflectors and signs from the (d, r) ``columns`` (orthonormalized, in float64); X = 0."""
        A, tau = torch.geqrf(columns.to(device="cpu", dtype=torch.float64))  # columns = H_1..H_r [T; 0]
        # T is upper triangular; for orthonormal columns it is diagonal with entries ±1. LAPACK's
        # tau_i = 0 means "no reflection", whereas this parametrization always reflects (which
        # flips coordinate i), so that sign goes into `base_signs` too.
        signs = A.diagonal().sign() * torch.where(tau == 0, -1.0, 1.0).to(A)  # (r,)
        self.base_reflectors.copy_(A.tril(-1).T)  # (r, d)
        self.base_signs.copy_(signs)
        self.reflectors.zero_()

    @torch.no_grad()
    def set_(self, matrix: torch.Tensor) -> "OrthonormalRows":
        """Set the rows to a given (r, d) matrix with orthonormal rows (e.g. the identity).

        >>> rows = torch.linalg.qr(torch.randn(5, 2))[0].T          # (2, 5) orthonormal rows
        >>> float((OrthonormalRows(5, 2).set_(rows).weight - rows).abs().max()) < 1e-6
        True
        """
        if tuple(matrix.shape) != (self.r, self.d):
            raise ValueError(f"matrix shape {tuple(matrix.shape)} != ({self.r}, {self.d}): give r x d rows")
        m = matrix.detach().to(device="cpu", dtype=torch.float64)
        error = float((m @ m.T - torch.eye(self.r, dtype=torch.float64)).abs().max())
        if error > 1e-4:
            raise ValueError(f"the rows are not orthonormal (max |M Mᵀ − I| = {error:.2e}, tolerance 1e-4); "
                             f"orthonormalize them first, e.g. workbench.das.orthonormal_rows(M)")
        self._set_base(m.T)
        return self

    def max_orthonormality_error(self) -> float:
        """max |R Rᵀ − I|: 0 up to rounding.

        >>> OrthonormalRows(16, 4).max_orthonormality_error() < 1e-5
        True
        """
        with torch.no_grad():
            w = self.weight.float()
            return float((w @ w.T - torch.eye(self.r, device=w.device)).abs().max())

    def extra_repr(self) -> str:
        return f"d={self.d}, r={self.r}"


def orthonormal_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in ``model.named_parameters()``) of every parameter inside an ``OrthonormalRows``,
    found by module type, not by attribute name: optimizers must not weight-decay them.

    >>> lin = nn.Sequential(nn.Linear(4, 4), OrthonormalRows(4, 2))
    >>> sorted(orthonormal_parameter_names(lin))
    ['1.reflectors']
    """
    return {f"{prefix}.{name}" if prefix else name
            for prefix, module in model.named_modules() if isinstance(module, OrthonormalRows)
            for name, _ in module.named_parameters(recurse=False)}


# ---- checkpoints written with torch's parametrization (format 1) -------------------------------
_LEGACY_ORIGINAL = "linear.parametrizations.weight.original"
_LEGACY_BASE = "linear.parametrizations.weight.0.base"


def has_legacy_rows(state: dict) -> bool:
    """Whether a state dict holds rows saved by the torch-parametrization version (d x d base)."""
    return any(key.endswith(_LEGACY_ORIGINAL) for key in state)


@torch.no_grad()
def migrate_legacy_rows(state: dict, renames: dict[str, str] | None = None) -> dict:
    """Convert each legacy ``<prefix>linear.parametrizations.weight.{original,0.base}`` pair into
    this module's ``reflectors``/``signs`` (same R to fp32 rounding), renaming key parts by
    ``renames`` (e.g. ``{".rotate.": ".rotation."}``). Other keys pass through (renamed).

    >>> from torch.nn.utils.parametrizations import orthogonal
    >>> old = orthogonal(nn.Linear(6, 2, bias=False), orthogonal_map="householder")
    >>> new = migrate_legacy_rows({f"R.linear.{k}": v for k, v in old.state_dict().items()})
    >>> rows = OrthonormalRows(6, 2); _ = rows.load_state_dict({k[2:]: v for k, v in new.items()})
    >>> float((rows.weight - old.weight).abs().max()) < 1e-6
    True
    """
    from torch.nn.utils.parametrizations import orthogonal

    def rename(key: str) -> str:
        for old, new in (renames or {}).items():
            key = f".{key}".replace(old, new)[1:]
        return key

    out = {}
    for key, value in state.items():
        if key.endswith(_LEGACY_BASE):
            continue
        if not key.endswith(_LEGACY_ORIGINAL):
            out[rename(key)] = value
            continue
        prefix = key[: -len(_LEGACY_ORIGINAL)]
        r, d = value.shape
        legacy = orthogonal(nn.Linear(d, r, bias=False, dtype=value.dtype), orthogonal_map="householder")
        legacy.load_state_dict({"parametrizations.weight.original": value.cpu(),
                                "parametrizations.weight.0.base": state[prefix + _LEGACY_BASE].cpu()})
        rows = OrthonormalRows(d, r, dtype=value.dtype).set_(legacy.weight)
        for name, tensor in rows.state_dict().items():
            out[rename(prefix + name)] = tensor.to(value.device)
    return out
