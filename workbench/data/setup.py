"""From RAVEL-style data to counterfactual splits: pick entities, build and filter queries, then
Cause and Isolate examples per attribute and split.

>>> setup = prepare_ravel(hm, data, ["Country", "Continent"], {"train": 128, "val": 32, "test": 64})  # doctest: +SKIP
>>> setup.summary                                 # kept share per split and attribute     # doctest: +SKIP
>>> setup.examples["train"]["Country"]["cause"]   # a CounterfactualData                   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import pandas as pd
import torch

from ..das.data import CounterfactualData
from .counterfactuals import KINDS, ravel_counterfactuals
from .queries import build_queries, filter_correct
from .ravel import SPLITS, RavelData
from .report import DataReport, combine


@dataclass
class RavelSetup:
    """Filtered queries and counterfactuals: ``examples[split][attribute][kind]``."""

    kept: dict[str, pd.DataFrame]  # per split: the queries the model answers correctly
    summary: pd.DataFrame  # per split and attribute: queries, correct, kept_share
    examples: dict[str, dict[str, dict[str, CounterfactualData]]]
    data: RavelData  # attribute values (e.g. labels for featurizers)
    report: pd.DataFrame = field(default_factory=DataReport().frame)  # kept / dropped: load, queries, filter


def pick_entities(names: Sequence[str], n: int | None, seed: int) -> list[str]:
    """``n`` of ``names`` chosen with ``seed`` (all when n is None or larger), sorted.

    >>> pick_entities(["a", "b", "c"], 2, seed=0)
    ['a', 'c']
    """
    names = sorted(names)
    if n is None or n >= len(names):
        return names
    generator = torch.Generator().manual_seed(seed)
    return sorted(names[int(i)] for i in torch.randperm(len(names), generator=generator)[:n])


def prepare_ravel(hm, data: RavelData, attributes: Sequence[str], examples_per_split: Mapping[str, int],
                  entities_per_split: Mapping[str, int | None] | None = None, max_templates: int | None = None,
                  seed: int = 0, batch_size: int = 32, progress: bool = False,
                  max_entity_tokens: int | None = None) -> RavelSetup:
    """Queries per split, filtered to the ones the model answers, then Cause/Isolate examples
    (``examples_per_split[split]`` of each kind per attribute). See `build_queries` for
    ``max_templates`` and ``max_entity_tokens``."""
    for split in examples_per_split:
        if split not in SPLITS:
            raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    for attribute in attributes:
        data.templates(attribute)  # a KeyError naming the available attributes
    kept, summaries, examples, report = {}, [], {}, DataReport()
    for split, n in examples_per_split.items():
        queries = build_queries(hm.tokenizer, data, attributes, split, None, max_templates, seed, max_entity_tokens,
                                report)
        entities = pick_entities(set(queries.entity), (entities_per_split or {}).get(split), seed)  # among usable
        picked = queries.entity.isin(entities)
        report.kept(f"sample:{split}", "queries", int(picked.sum()))
        if not picked.all():
            report.drop(f"sample:{split}", "queries", "entity_not_sampled", n=int((~picked).sum()))
        queries = queries[picked].reset_index(drop=True)
        kept[split], summary = filter_correct(hm, queries, batch_size, progress, report, f"filter:{split}")
        summaries.append(summary.assign(split=split))
        examples[split] = {a: {kind: ravel_counterfactuals(hm.tokenizer, data, kept[split], a, kind, n, seed)
                               for kind in KINDS} for a in attributes}
        for a in attributes:
            for kind in KINDS:
                report.kept(f"examples:{split}", f"{a}.{kind}", len(examples[split][a][kind]))
    return RavelSetup(kept, pd.concat(summaries, ignore_index=True), examples, data,
                      combine(data.report, report.frame()))
