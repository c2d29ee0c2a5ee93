"""Counterfactual data: (base, source, label) examples with the positions to intervene on.

Token ids are kept unpadded per example; each batch is left-padded on the fly so that every
example's next-token prediction sits at the last column (one logit row per example).

>>> data = CounterfactualData([[5, 6]], [[1]], [[7, 8]], [[1]], torch.tensor([9]))
>>> len(data), data.k
(1, 1)
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch



@dataclass
class CounterfactualData:
    """N counterfactual examples.

    ``base_positions``/``source_positions``: per example, the same number k of real-token
    indices (negative counts from the end) where the site is read and written. ``labels`` (N,)
    is the next-token id expected after the intervention. ``meta`` (N rows) is carried into
    per-example results (attribute, kind, entities, ...).
    """

    base_ids: list[list[int]]
    base_positions: list[list[int]]
    source_ids: list[list[int]]
    source_positions: list[list[int]]
    labels: torch.Tensor
    meta: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        n = len(self.base_ids)
        self.labels = torch.as_tensor(self.labels, dtype=torch.long).reshape(-1)  # (N,)
        sizes = {"base_positions": len(self.base_positions), "source_ids": len(self.source_ids),
                 "source_positions": len(self.source_positions), "labels": len(self.labels)}
        for name, size in sizes.items():
            if size != n:
                raise ValueError(f"{name} has {size} entries for {n} base inputs; give one per example")
        if len(self.meta) not in (0, n):
            raise ValueError(f"meta has {len(self.meta)} rows for {n} examples; give one row per example or none")
        if len(self.meta) == 0:
            self.meta = pd.DataFrame(index=range(n))
        self.meta = self.meta.reset_index(drop=True)
        counts = {len(p) for p in self.base_positions} | {len(p) for p in self.source_positions}
        if len(counts) > 1:
            raise ValueError(
                f"every example needs the same number of base and source positions, got counts {sorted(counts)}; "
                f"choose one position spec (e.g. the last entity token) for all"
            )
        for i, (ids, pos) in enumerate(zip(self.base_ids + self.source_ids, self.base_positions + self.source_positions)):
            if any(not -len(ids) <= p < len(ids) for p in pos):
                which = "base" if i < n else "source"
                raise IndexError(f"{which} example {i % max(n, 1)}: positions {pos} outside its {len(ids)} tokens")

    def __len__(self) -> int:
        return len(self.base_ids)

    @property
    def k(self) -> int:
        """Positions per example."""
        return len(self.base_positions[0]) if self.base_positions else 0

    def subset(self, index: Sequence[int] | torch.Tensor) -> "CounterfactualData":
        """The examples at ``index``, in that order."""
        index = [int(i) for i in index]
        pick = lambda rows: [rows[i] for i in index]  # noqa: E731
        return CounterfactualData(pick(self.base_ids), pick(self.base_positions), pick(self.source_ids),
                                  pick(self.source_positions), self.labels[index], self.meta.iloc[index])

    @staticmethod
    def concat(parts: Sequence["CounterfactualData"]) -> "CounterfactualData":
        """One dataset from several, in order."""
        if not parts:
            raise ValueError("nothing to concatenate: give at least one dataset")
        parts = [p for p in parts if len(p)] or list(parts[:1])
        join = lambda name: [row for p in parts for row in getattr(p, name)]  # noqa: E731
        return CounterfactualData(join("base_ids"), join("base_positions"), join("source_ids"),
                                  join("source_positions"), torch.cat([p.labels for p in parts]),
                                  pd.concat([p.meta for p in parts], ignore_index=True))

    @classmethod
    def from_texts(cls, tokenizer, bases: Sequence[str], sources: Sequence[str], labels: Sequence[int],
                   base_positions: Sequence[Sequence[int]], source_positions: Sequence[Sequence[int]],
                   meta: pd.DataFrame | None = None) -> "CounterfactualData":
        """Tokenize texts (with the tokenizer's special tokens) into a dataset.

        >>> CounterfactualData.from_texts(tok, ["Paris is in"], ["Rome is in"], [tok.encode(" Italy")[0]],
        ...                               [[0]], [[0]])                                  # doctest: +SKIP
        """
        encode = lambda texts: [tokenizer(t)["input_ids"] for t in texts]  # noqa: E731
        return cls(encode(bases), [list(p) for p in base_positions], encode(sources),
                   [list(p) for p in source_positions], torch.as_tensor(list(labels)),
                   meta if meta is not None else pd.DataFrame())


def last_logits_kwargs(hm) -> dict:
    """Ask the model for the last position's logits only when it can (saves the vocab matmul)."""
    takes = "logits_to_keep" in inspect.signature(hm.model.forward).parameters
    return {"logits_to_keep": 1} if takes else {}
