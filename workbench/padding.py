"""Padding helpers, one set for the whole project: left padding, the pad id, real-token offsets.

Batches are ``input_ids``/``attention_mask`` (B, T). Left padding puts pads first; every helper
that reads positions counts real tokens, so either padding side works.

>>> batch = left_pad([[5, 6], [7]], pad_id=0)
>>> batch["input_ids"].tolist(), leading_pads(batch["attention_mask"]).tolist()
([[5, 6], [0, 7]], [0, 1])
>>> last_real_index(batch["attention_mask"]).tolist()
[1, 1]
"""

from __future__ import annotations

from typing import Sequence

import torch


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad token id lists into ``input_ids``/``attention_mask`` (B, T).

    >>> left_pad([[1], [2, 3]], pad_id=9)["attention_mask"].tolist()
    [[0, 1], [1, 1]]
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        if len(row):
            ids[i, width - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pad_id_of(tokenizer, default: int | None = None) -> int:
    """The tokenizer's pad id, else its eos id, else ``default`` (an error when that is None).

    Accepts a tokenizer or anything holding one as ``.tokenizer`` (a HookedModel).

    >>> class Tok: pad_token_id, eos_token_id = None, 2
    >>> pad_id_of(Tok()), pad_id_of(None, default=0)
    (2, 0)
    """
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    pad = None if tok is None else (tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    if pad is None:
        if default is None:
            raise ValueError("the tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
        return int(default)
    return int(pad)


def leading_pads(attention_mask: torch.Tensor) -> torch.Tensor:
    """Pads before each example's first real token, (B,): the first real index; 0 when right-padded."""
    return (attention_mask.cumsum(1) == 0).sum(1)


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each example's last real token, (B,), under left or right padding."""
    return leading_pads(attention_mask) + attention_mask.sum(1).long() - 1
