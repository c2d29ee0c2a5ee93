"""RAVEL counterfactuals from attribute queries: Cause and Isolate examples for a target attribute.

For a target attribute A, every example intervenes on the base's entity token with the state of
a source entity read from a prompt about A (the model knows both entities' answers):

- **Cause**: the base prompt asks for A; the label is the *source's* value of A (the two differ).
- **Isolate**: the base prompt asks for another attribute B; the label is the *base's* value of B,
  and the source's value of B differs (so a whole-entity patch would change the answer).

>>> cause = ravel_counterfactuals(tok, data, kept, "Country", "cause", n=200)    # doctest: +SKIP
>>> cause.meta[["base_entity", "source_entity"]].head(2)                         # doctest: +SKIP
"""

from __future__ import annotations

import random

import pandas as pd
import torch

from ..das.data import CounterfactualData
from .queries import answer_token
from .ravel import RavelData

KINDS = ("cause", "isolate")


def ravel_counterfactuals(tokenizer, data: RavelData, queries: pd.DataFrame, target: str, kind: str,
                          n: int, seed: int = 0, max_tries: int = 100) -> CounterfactualData:
    """``n`` examples of ``kind`` (cause / isolate) for attribute ``target`` from kept ``queries``.

    ``queries`` (from ``filter_correct``, usually one split) supplies base prompts (attribute A for
    cause, the other attributes for isolate) and source prompts (attribute A). Fewer than ``n``
    come back when the queries do not allow more distinct pairs.
    """
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    sources = queries[queries["attribute"] == target].reset_index(drop=True)
    bases = sources if kind == "cause" else queries[queries["attribute"] != target].reset_index(drop=True)
    if sources.empty or bases.empty:
        return _empty(target, kind)
    rng = random.Random(f"{seed}-{target}-{kind}")
    rows, seen, tries = [], set(), 0
    label_cache: dict[tuple[str, str], int] = {}

    def label_of(template: str, value: str) -> int:
        if (template, value) not in label_cache:
            label_cache[(template, value)] = answer_token(tokenizer, template, value)
        return label_cache[(template, value)]

    while len(rows) < n and tries < max_tries * n:
        tries += 1
        b = bases.iloc[rng.randrange(len(bases))]
        s = sources.iloc[rng.randrange(len(sources))]
        if b.entity == s.entity or (b.name, s.name) in seen:
            continue
        queried = b.attribute  # A for cause, B for isolate
        source_value = data.attributes[s.entity].get(queried)
        if source_value is None or label_of(b.template, source_value) == b.label:
            continue  # the source would give the same answer: the example tests nothing
        seen.add((b.name, s.name))
        label = label_of(b.template, source_value) if kind == "cause" else int(b.label)
        rows.append({"kind": kind, "target": target, "attribute": queried, "base_entity": b.entity,
                     "source_entity": s.entity, "base_template": b.template, "source_template": s.template,
                     "base_value": b.value, "source_value": source_value, "split": b.split,
                     "base_ids": b.ids, "base_position": b.position, "source_ids": s.ids,
                     "source_position": s.position, "label": label})
    if not rows:
        return _empty(target, kind)
    table = pd.DataFrame(rows)
    meta = table.drop(columns=["base_ids", "source_ids", "base_position", "source_position", "label"])
    return CounterfactualData([list(x) for x in table.base_ids], [[int(p)] for p in table.base_position],
                              [list(x) for x in table.source_ids], [[int(p)] for p in table.source_position],
                              torch.as_tensor(table.label.tolist()), meta)


def _empty(target: str, kind: str) -> CounterfactualData:
    return CounterfactualData([], [], [], [], torch.zeros(0, dtype=torch.long),
                              pd.DataFrame(columns=["kind", "target", "attribute"]))
