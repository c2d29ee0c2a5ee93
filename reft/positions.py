"""Prompt positions: ReFT intervenes on the first/last tokens of the *prompt*, not of the sequence.

During training a sequence is prompt + response, so ``l1`` must mean the prompt's last token.
``PromptFirstLast`` resolves ``f<first>+l<last>`` against per-example prompt lengths; during
generation the model is called on the prompt alone and the plain ``FirstLast`` says the same.

>>> ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 7, 8, 9]]); mask = (ids != 0).long()
>>> PromptFirstLast(1, 1, torch.tensor([3, 2])).resolve(ids, mask).index
tensor([[0, 2],
        [0, 1]])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.positions import PositionSelector, Positions


@dataclass(frozen=True, eq=False)
class PromptFirstLast(PositionSelector):
    """The first ``first`` and last ``last`` tokens of each example's prompt (``prompt_lengths`` (B,))."""

    first: int
    last: int
    prompt_lengths: torch.Tensor  # (B,) real prompt tokens per example

    def resolve(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer=None) -> Positions:
        batch, device = input_ids.shape[0], input_ids.device
        plen = self.prompt_lengths.to(device)  # (B,)
        if plen.shape != (batch,):
            raise ValueError(f"prompt_lengths has shape {tuple(plen.shape)}, expected ({batch},): one per example")
        starts = (attention_mask.cumsum(1) == 0).sum(1)  # (B,) leading pads (left padding)
        first = torch.arange(self.first, device=device).expand(batch, -1)  # (B, f)
        last = plen[:, None] - self.last + torch.arange(self.last, device=device)  # (B, l)
        rel = torch.cat([first, last], dim=1)  # (B, f + l)
        too_short = plen < max(self.first, self.last)  # (B,)
        if bool(too_short.any()):
            example = int(too_short.nonzero()[0])
            raise IndexError(
                f"positions f{self.first}+l{self.last}: example {example} has a {int(plen[example])}-token "
                f"prompt, shorter than {max(self.first, self.last)}; use fewer positions or longer prompts"
            )
        return Positions(starts[:, None] + rel, torch.ones_like(rel, dtype=torch.bool))
