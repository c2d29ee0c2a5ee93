"""Clear errors for bad input: what was given, what is valid, and how to fix it.

Shared by the loaders (damaged or mismatched checkpoints), the training loops (a loss that stops
being finite) and the lookups by name. `docs/bad_inputs.md` lists every bad input the tests try.

>>> check_finite_loss(0.5, step=3, where="reft train", lr=1e-2)
>>> check_finite_loss(float("nan"), step=3, where="reft train", lr=1e30)
Traceback (most recent call last):
...
FloatingPointError: reft train: the loss is nan at step 3 (lr 1e+30); training stopped. Lower the learning rate ...
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


class UnknownName(KeyError, ValueError):
    """A name that is not among the known ones (a KeyError for lookups, a ValueError for callers
    that catch bad values); prints its message without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_finite_loss(loss: float, step: int, where: str, lr: float | None = None) -> None:
    """Stop a training loop whose loss became NaN or infinite, naming the step and the remedy."""
    if math.isfinite(loss):
        return
    rate = f" (lr {lr:g})" if lr is not None else ""
    raise FloatingPointError(
        f"{where}: the loss is {loss} at step {step}{rate}; training stopped. Lower the learning rate "
        f"(e.g. 10x smaller, --lr), or train in float32 (--dtype float32 / mixed_precision='no')")


def read_json(path: str | Path, what: str, fix: str) -> dict:
    """A JSON object from ``path``; a damaged file names the file, the parse error and ``fix``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: the {what} is damaged, not valid JSON ({error}); {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the {what} must be a JSON object, got {type(data).__name__}; {fix}")
    return data


def read_tensors(path: str | Path, what: str, fix: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (on the CPU); a truncated or damaged file names ``fix``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(str(path))
    except SafetensorError as error:
        size = Path(path).stat().st_size
        raise ValueError(f"{path}: the {what} is damaged or truncated ({size} bytes; safetensors: {error}); "
                         f"{fix}") from None


def check_shapes(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], path: str | Path, fix: str) -> None:
    """Every saved tensor has the shape the config's module expects."""
    wrong = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape}
    if wrong:
        listed = ", ".join(f"{k} is {got}, expected {want}" for k, (got, want) in sorted(wrong.items()))
        raise ValueError(f"{path}: tensors of the wrong shape for its config ({listed}); {fix}")
