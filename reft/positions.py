"""Prompt positions: ReFT intervenes on the first/last tokens of the *prompt*, not of the sequence.

During training a sequence is prompt + response, so ``l1`` must mean the prompt's last token.
``PromptFirstLast`` resolves ``f<first>+l<last>`` against per-example prompt lengths (or, when
none are given, the whole input: the prompt during generation).

Short prompts: slots past the prompt are masked (never written), and a token that is both among
the first and the last ones gets the *last* positions' edit only (one write per token, the same
in training and generation, on every device).

>>> ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 7, 8, 9]]); mask = (ids != 0).long()
>>> PromptFirstLast(1, 1, torch.tensor([3, 2])).resolve(ids, mask).index
tensor([[0, 2],
        [0, 1]])
>>> PromptFirstLast(2, 2, torch.tensor([3, 4])).resolve(ids, mask).mask   # 3 tokens: token 1 is first and last
tensor([[ True, False,  True,  True],
        [ True,  True,  True,  True]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.padding import leading_pads
from workbench.positions import PositionSelector, Positions


@dataclass(frozen=True, eq=False)
class PromptFirstLast(PositionSelector):
    """The first ``first`` and last ``last`` tokens of each prompt; ``prompt_lengths`` (B,) real prompt
    tokens per example, or None for the whole (unpadded part of the) input."""

    first: int
    last: int
    prompt_lengths: torch.Tensor | None = None

    def resolve(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer=None) -> Positions:
        batch, device = input_ids.shape[0], input_ids.device
        lengths = attention_mask.sum(1)  # (B,)
        plen = lengths if self.prompt_lengths is None else self.prompt_lengths.to(device)  # (B,)
        if plen.shape != (batch,):
            raise ValueError(f"prompt_lengths has shape {tuple(plen.shape)}, expected ({batch},): one per example")
        starts = leading_pads(attention_mask)  # (B,) leading pads (left padding)
        first = torch.arange(self.first, device=device).expand(batch, -1)  # (B, f)
        last = plen[:, None] - self.last + torch.arange(self.last, device=device)  # (B, l)
        rel = torch.cat([first, last], dim=1)  # (B, f + l)
        valid = (rel >= 0) & (rel < plen[:, None])  # (B, f + l)
        valid[:, :self.first] &= first < (plen - self.last)[:, None]  # also a last token: the last edit wins
        rel = torch.minimum(rel.clamp(min=0), (plen - 1).clamp(min=0)[:, None])  # masked slots read a real token
        return Positions(starts[:, None] + rel, valid)
