"""The memorization metric: exact-match prefix of a continuation, in tokens and as a share of N.

A continuation shorter than the target (generation stopped at an end-of-sequence token) counts
only what it has; one wrong token ends the prefix, so a wrong first token scores 0.

>>> prefix_lengths(torch.tensor([[5, 6, 7], [9, 6, 7]]), torch.tensor([[5, 6, 8], [5, 6, 7]])).tolist()
[2, 0]
>>> prefix_share(torch.tensor([[5, 6]]), torch.tensor([[5, 6, 7, 8]])).tolist()
[0.5]
"""

from __future__ import annotations

import torch

from workbench.metrics import exact_match_prefix_length


def prefix_lengths(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Leading tokens of ``predicted`` (K, M) equal to ``target`` (K, N), per row: (K,) in 0..min(M, N)."""
    if predicted.shape[0] != target.shape[0]:
        raise ValueError(f"{predicted.shape[0]} predicted rows for {target.shape[0]} targets; give one per target")
    return exact_match_prefix_length(predicted.to(target.device), target)  # (K,)


def prefix_share(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``prefix_lengths`` as a share (K,) of the target length N."""
    return prefix_lengths(predicted, target).float() / target.shape[1]  # (K,)
