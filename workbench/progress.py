"""Progress for work that runs inside a library call (Hugging Face ``generate``).

``generate`` has no progress bar of its own; a stopping criterion is called once per new token,
so one that never stops can tick a tqdm bar.

>>> bar = token_progress(3, disable=True)
>>> bool(bar(torch.zeros(2, 5, dtype=torch.long), None).any())
False
>>> bar.close()
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria


class TokenProgress(StoppingCriteria):
    """Ticks a bar once per generated token; never stops generation."""

    def __init__(self, total: int, desc: str = "generate", disable: bool = False):
        self.bar = tqdm(total=total, desc=desc, unit="tok", leave=False, disable=disable)

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        self.bar.update(1)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)  # (B,) no row done

    def close(self) -> None:
        self.bar.close()


def token_progress(total: int, desc: str = "generate", disable: bool = False) -> TokenProgress:
    """A stopping criterion for ``model.generate(stopping_criteria=[...])`` that shows progress."""
    return TokenProgress(total, desc, disable)


__all__ = ["TokenProgress", "token_progress"]
