"""Positions: *which tokens* an intervention acts on, resolved once per batch to index tensors.

A selector turns a tokenized batch into `Positions`: an index tensor ``(B, k)`` of absolute
positions in the padded sequence, and a mask ``(B, k)`` that is False for slots an example does
not have (e.g. fewer commas than another example). Indices given by the user count real tokens
only (0 = first real token, -1 = last), so left and right padding give the same result.

>>> ids = torch.tensor([[0, 0, 5, 6, 7], [5, 6, 7, 8, 9]]); mask = (ids != 0).long()
>>> parse_positions("f1+l1").resolve(ids, mask).index
tensor([[2, 4],
        [0, 4]])
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import torch

from .padding import leading_pads


@dataclass(frozen=True)
class Positions:
    """Resolved positions: ``index`` (B, k) absolute token indices, ``mask`` (B, k) valid slots."""

    index: torch.Tensor
    mask: torch.Tensor

    @property
    def all_valid(self) -> bool:
        """Whether every slot is valid; computed once (on CUDA reading it synchronizes the host)."""
        cached = self.__dict__.get("_all_valid")
        if cached is None:
            cached = bool(self.mask.all())
            object.__setattr__(self, "_all_valid", cached)
        return cached


def _starts_and_lengths(attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of each example's first real token and its number of real tokens, both (B,)."""
    lengths = attention_mask.sum(1)  # (B,)
    starts = leading_pads(attention_mask)  # (B,) leading pads; 0 when right-padded
    return starts, lengths


def _check_in_range(rel: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, what: str) -> None:
    bad = mask & ((rel < 0) | (rel >= lengths[:, None]))  # (B, k)
    if bad.any():
        example, slot = (int(i) for i in bad.nonzero()[0])
        length = int(lengths[example])
        raise IndexError(
            f"position {what} is beyond the sequence: example {example} has {length} tokens "
            f"(valid indices 0..{length - 1} or -{length}..-1); use a shorter position spec or "
            f"longer inputs"
        )


class PositionSelector(ABC):
    """Chooses token positions per example; `resolve` runs once per batch."""

    @abstractmethod
    def resolve(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer=None) -> Positions:
        """Return Positions for a batch ``input_ids`` (B, T) with ``attention_mask`` (B, T)."""


@dataclass(frozen=True)
class Indices(PositionSelector):
    """Explicit token indices counted over real tokens; negative ones count from the end.

    One list applies to every example; a list of lists gives each example its own (ragged lists
    are padded and masked). ``Indices([0, -1])`` is the first and last token.
    """

    indices: tuple

    def __init__(self, indices: Sequence[int] | Sequence[Sequence[int]]) -> None:
        rows = [tuple(int(i) for i in row) for row in indices] if indices and not isinstance(
            indices[0], int) else tuple(int(i) for i in indices)
        object.__setattr__(self, "indices", tuple(rows))

    def resolve(self, input_ids, attention_mask, tokenizer=None) -> Positions:
        starts, lengths = _starts_and_lengths(attention_mask)
        batch = input_ids.shape[0]
        if self.indices and isinstance(self.indices[0], tuple):
            if len(self.indices) != batch:
                raise ValueError(f"Indices gives {len(self.indices)} rows for a batch of {batch} examples; "
                             f"give one row per example (or one flat list for all)")
            rel, mask = _pad_rows([list(r) for r in self.indices], input_ids.device)
        else:
            rel = torch.tensor(self.indices, dtype=torch.long, device=input_ids.device).expand(batch, -1)
            mask = torch.ones_like(rel, dtype=torch.bool)
        rel = torch.where(rel < 0, rel + lengths[:, None], rel)  # (B, k)
        _check_in_range(rel, mask, lengths, f"{list(self.indices)}")
        return Positions(starts[:, None] + rel, mask)


@dataclass(frozen=True)
class FirstLast(PositionSelector):
    """The first ``first`` and the last ``last`` real tokens (pyreft's ``f1+l1`` specs).

    When an example is shorter than ``first + last``, a token that is both among the first and
    the last ones keeps only its last slot (the first slot is masked).

    >>> FirstLast(2, 2).resolve(torch.tensor([[5, 6, 7]]), torch.ones(1, 3, dtype=torch.long)).mask
    tensor([[ True, False,  True,  True]])
    """

    first: int = 0
    last: int = 0

    def resolve(self, input_ids, attention_mask, tokenizer=None) -> Positions:
        if self.first < 0 or self.last < 0 or self.first + self.last == 0:
            raise ValueError(f"position spec {self}: needs first >= 0, last >= 0 and at least one token")
        starts, lengths = _starts_and_lengths(attention_mask)
        device = input_ids.device
        first = torch.arange(self.first, device=device).expand(len(lengths), -1)  # (B, f)
        last = lengths[:, None] - self.last + torch.arange(self.last, device=device)  # (B, l)
        rel = torch.cat([first, last], dim=1)  # (B, f + l)
        mask = torch.ones_like(rel, dtype=torch.bool)
        _check_in_range(rel, mask, lengths, str(self))
        # A token among both the first and the last ones is written once, by its last slot: a
        # duplicate index would be written in undefined order on CUDA and get doubled gradients.
        mask[:, :self.first] = first < (lengths - self.last)[:, None]
        return Positions(starts[:, None] + rel, mask)

    def __str__(self) -> str:
        parts = ([f"f{self.first}"] if self.first else []) + ([f"l{self.last}"] if self.last else [])
        return "+".join(parts)


@dataclass(frozen=True)
class AllTokens(PositionSelector):
    """Every real token of each example (padding slots masked)."""

    def resolve(self, input_ids, attention_mask, tokenizer=None) -> Positions:
        starts, lengths = _starts_and_lengths(attention_mask)
        rel = torch.arange(input_ids.shape[1], device=input_ids.device).expand(len(lengths), -1)
        mask = rel < lengths[:, None]  # (B, T)
        index = torch.where(mask, starts[:, None] + rel, starts[:, None])  # pads point at a real token
        return Positions(index, mask)


@dataclass(frozen=True)
class TokenMatch(PositionSelector):
    """Every token whose text (decoded, surrounding whitespace stripped) fully matches a regex.

    ``TokenMatch(",")`` selects every comma; ``TokenMatch(r"[,.;:!?]")`` every punctuation token.
    """

    pattern: str

    def resolve(self, input_ids, attention_mask, tokenizer=None) -> Positions:
        if tokenizer is None:
            raise ValueError(f"{self} needs the tokenizer to read token texts; pass tokenizer=")
        regex = re.compile(self.pattern)
        rows = []
        for ids, keep in zip(input_ids.tolist(), attention_mask.bool().tolist()):
            texts = [tokenizer.decode([i]).strip() if k else None for i, k in zip(ids, keep)]
            rows.append([t for t, text in enumerate(texts) if text is not None and regex.fullmatch(text)])
        index, mask = _pad_rows(rows, input_ids.device)
        return Positions(index, mask)


def _pad_rows(rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged rows -> (index, mask); a padded slot repeats its row's last index (or 0)."""
    width = max(1, max((len(r) for r in rows), default=0))
    index = [r + [r[-1] if r else 0] * (width - len(r)) for r in rows]
    mask = [[True] * len(r) + [False] * (width - len(r)) for r in rows]
    return torch.tensor(index, dtype=torch.long, device=device), torch.tensor(mask, device=device)


_SPEC_RE = re.compile(r"^(?:f(?P<f>\d+))?\+?(?:l(?P<l>\d+))?$")


def parse_positions(spec: "str | int | Sequence[int] | PositionSelector") -> PositionSelector:
    """Coerce a spec to a selector: ``"f1+l1"``, ``"l1"``, ``"all"``, ``"match:,"``, ints.

    >>> parse_positions("f7+l7")
    FirstLast(first=7, last=7)
    >>> parse_positions([0, -1])
    Indices(indices=(0, -1))
    """
    if isinstance(spec, PositionSelector):
        return spec
    if isinstance(spec, int):
        return Indices([spec])
    if not isinstance(spec, str):
        return Indices(list(spec))
    text = spec.strip()
    if text == "all":
        return AllTokens()
    if text.startswith("match:"):
        return TokenMatch(text[len("match:"):])
    if re.fullmatch(r"-?\d+(,-?\d+)*", text):
        return Indices([int(i) for i in text.split(",")])
    match = _SPEC_RE.match(text)
    if match is not None and text and int(match.group("f") or 0) + int(match.group("l") or 0) == 0 and \
            (match.group("f") or match.group("l")):
        raise ValueError(f"position spec {spec!r} would select no tokens (first + last must be at least 1); "
                         f"use e.g. 'l1' or 'f1+l1'")
    if not text or match is None or not (match.group("f") or match.group("l")):
        raise ValueError(
            f"cannot parse position spec {spec!r}: expected e.g. 'l1', 'f1+l1', 'f7+l7', 'all', "
            f"'match:,' (a regex over token texts) or indices like '0,-1'; "
            f"use one of these forms"
        )
    return FirstLast(int(match.group("f") or 0), int(match.group("l") or 0))
