"""Scoped hooks: gather -> intervene -> scatter at resolved positions, removed in ``finally``.

Nothing here knows about plans or models beyond a module and a hook kind; `HookedModel` builds
on these pieces.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from .adapters import HookPoint
from .positions import Positions


class StopForward(Exception):
    """Raised by a hook to end a forward pass early, once everything needed has been read."""


def gather(hidden: torch.Tensor, point: HookPoint, positions: Positions) -> torch.Tensor:
    """``hidden`` (B, T, W) -> the site's slices (B, k, d) at ``positions`` (a copy)."""
    view = hidden if point.head_slice is None else hidden[..., point.head_slice]  # (B, T, d)
    rows = torch.arange(view.shape[0], device=view.device)[:, None]  # (B, 1)
    return view[rows, positions.index]  # (B, k, d)


def scatter_(hidden: torch.Tensor, point: HookPoint, positions: Positions, new: torch.Tensor) -> None:
    """Write ``new`` (B, k, d) into ``hidden`` (B, T, W) in place at the valid ``positions``.

    Valid slots must name distinct tokens (selectors mask duplicates): on CUDA, duplicate indices
    in one ``index_put_`` are written in an undefined order and their gradients add up.
    """
    view = hidden if point.head_slice is None else hidden[..., point.head_slice]  # (B, T, d)
    rows = torch.arange(view.shape[0], device=view.device)[:, None].expand_as(positions.index)
    new = new.to(view.dtype)
    if positions.all_valid:
        view[rows, positions.index] = new  # one index_put_, no clone of the hidden states
    else:
        mask = positions.mask
        view[rows[mask], positions.index[mask]] = new[mask]  # skip padded slots


def _hidden_of_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


def add_hook(module: nn.Module, kind: str, fn: Callable[[torch.Tensor], torch.Tensor | None]):
    """Register ``fn(hidden)`` on a module's input or output; returns the removable handle.

    ``fn`` edits ``hidden`` in place (or only reads it) and returns None, or returns a new tensor
    that replaces it (used where the hooked tensor may be saved for backward).
    """
    if kind == "input":
        def pre_hook(_module, args, kwargs):
            new = fn(_hidden_of_input(args, kwargs))
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}
        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(_module, _args, output):
        new = fn(output if isinstance(output, torch.Tensor) else output[0])
        if new is None:
            return None
        return new if isinstance(output, torch.Tensor) else (new, *output[1:])
    return module.register_forward_hook(post_hook)


@contextmanager
def hooks_installed(installers: list[Callable[[], object]]) -> Iterator[None]:
    """Install hooks (each installer returns a handle) and remove them all on exit or error."""
    handles = []
    try:
        for install in installers:
            handles.append(install())
        yield
    finally:
        for handle in handles:
            handle.remove()
