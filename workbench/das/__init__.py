"""Distributed alignment search: subspace interchange interventions and their training.

>>> from workbench.das import LowRankRotatedSpaceIntervention, train_alignment, evaluate
"""

import torch

from .cached import BaseStates, cached_base_unsupported
from .data import CounterfactualData
from .interventions import (BoundlessRotatedSpaceIntervention, LowRankRotatedSpaceIntervention,
                            RotatedSpaceIntervention, SubspaceInterchange, orthonormal_rows)
from .train import (Evaluation, TrainConfig, TrainResult, base_states, evaluate, intervened_logits, source_states,
                    train_alignment, train_multitask)

METHODS = ("das", "rotated", "boundless")


def build_intervention(method: str, d: int, k: int, max_rank: int | None = None,
                       dtype: torch.dtype | None = None, device: torch.device | str | None = None):
    """A trainable DAS intervention by name: ``das`` (low rank), ``rotated`` (full d x d) or ``boundless``.

    Pass the model's ``dtype`` and the site's ``device`` (``hm.dtype``, ``hm.device_of(site)``);
    R is stored in float32 for half-precision models and cast when applied.

    >>> build_intervention("das", 8, 2).k
    2
    """
    if method == "das":
        return LowRankRotatedSpaceIntervention(d, k, dtype=dtype, device=device)
    if method == "rotated":
        return RotatedSpaceIntervention(d, k, dtype=dtype, device=device)
    if method == "boundless":
        return BoundlessRotatedSpaceIntervention(d, max_rank=max_rank, init_size=max(1, k), dtype=dtype,
                                                 device=device)
    raise ValueError(f"unknown DAS method {method!r}: choose one of {METHODS}")


__all__ = [
    "BaseStates", "BoundlessRotatedSpaceIntervention", "CounterfactualData", "Evaluation", "LowRankRotatedSpaceIntervention",
    "METHODS", "RotatedSpaceIntervention", "SubspaceInterchange", "TrainConfig", "TrainResult",
    "base_states", "build_intervention", "cached_base_unsupported", "evaluate", "intervened_logits", "orthonormal_rows", "source_states",
    "train_alignment", "train_multitask",
]
