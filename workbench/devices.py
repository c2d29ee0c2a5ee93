"""Devices: move an intervention to where its site runs, once, keeping its dtype.

>>> from workbench.interventions import AddVector
>>> steer = place(AddVector(torch.ones(4)), torch.device("meta"))
>>> steer.vector.device.type
'meta'
"""

from __future__ import annotations

import torch
from torch import nn


def place(module: nn.Module, device: torch.device | str) -> nn.Module:
    """Move ``module``'s parameters and buffers to ``device`` (dtypes unchanged); a no-op when they
    are there already. Parameters keep their identity, so an optimizer built before still holds them.
    """
    device = torch.device(device)
    tensors = list(module.parameters()) + list(module.buffers())
    if any(t.device != device for t in tensors):
        module.to(device)
    return module


def module_device(module: nn.Module, default: torch.device) -> torch.device:
    """The device of a module's first parameter (or buffer); ``default`` for a module with neither.

    >>> module_device(nn.Linear(2, 2), torch.device("meta"))
    device(type='cpu')
    """
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return default


def parse_device(text: str | torch.device | None) -> torch.device | None:
    """``"cuda"``, ``"cuda:1"``, ``"cpu"``, ``"mps"`` -> a torch.device, with a clear error otherwise.

    >>> parse_device("cpu")
    device(type='cpu')
    """
    if text is None or isinstance(text, torch.device):
        return text
    try:
        device = torch.device(text)
    except RuntimeError as error:
        raise ValueError(f"device {text!r} is not a torch device ({error}); use e.g. cpu, cuda, cuda:1, mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {text!r}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                         f"(cuda:0-cuda:{torch.cuda.device_count() - 1})")
    return device
