"""Metrics: plain functions of ``(logits, batch)`` returning one value per example.

>>> metric = logit_difference(target_id=5, foil_id=7)
>>> logits = torch.zeros(1, 3, 10); logits[0, -1, 5] = 2.0
>>> metric(logits, {"attention_mask": torch.ones(1, 3)}).tolist()
[2.0]
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from .padding import last_real_index

Metric = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


def last_token_logits(logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits (B, V) at each example's last real token, under left or right padding."""
    mask = batch["attention_mask"]  # (B, T)
    last = last_real_index(mask)  # (B,)
    return logits[torch.arange(logits.shape[0], device=logits.device), last]  # (B, V)


def logit_difference(target_id: int, foil_id: int) -> Metric:
    """``logit[target] - logit[foil]`` at the last real token."""
    def metric(logits, batch):
        last = last_token_logits(logits, batch)  # (B, V)
        return last[:, target_id] - last[:, foil_id]  # (B,)
    return metric


def target_probability(target_id: int) -> Metric:
    """Probability of ``target_id`` as the next token after the last real token."""
    def metric(logits, batch):
        return last_token_logits(logits, batch).float().softmax(-1)[:, target_id]  # (B,)
    return metric


def kl_from(reference_logits: torch.Tensor) -> Metric:
    """KL(reference || run) of the next-token distributions at the last real token.

    ``reference_logits`` is (B, V) or (1, V) at the last token of the reference run.
    """
    def metric(logits, batch):
        log_p = reference_logits.float().log_softmax(-1)  # (B, V)
        log_q = last_token_logits(logits, batch).float().log_softmax(-1)  # (B, V)
        return (log_p.exp() * (log_p - log_q)).sum(-1)  # (B,)
    return metric


def interchange_accuracy(labels: torch.Tensor) -> Metric:
    """1.0 where the argmax next token equals the counterfactual label (B,), else 0.0 (IIA)."""
    def metric(logits, batch):
        return (last_token_logits(logits, batch).argmax(-1) == labels.to(logits.device)).float()
    return metric


def exact_match_prefix_length(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Number of leading tokens where ``predicted`` equals ``target``; both (B, N) -> (B,).

    >>> exact_match_prefix_length(torch.tensor([[1, 2, 9, 4]]), torch.tensor([[1, 2, 3, 4]])).tolist()
    [2]
    """
    n = min(predicted.shape[1], target.shape[1])
    same = (predicted[:, :n] == target[:, :n]).long()  # (B, n)
    return same.cumprod(1).sum(1)  # (B,)
