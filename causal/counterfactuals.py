"""Counterfactual datasets derived from a causal model: (base, sources, counterfactual label).

For the chosen variables, each example draws a base input and a source input, sets the variables
in the base run to their values on the source (`CausalModel.interchange`) and records the output.
Balanced: half the examples change the output, half do not (an alignment that ignores the
variable then scores 50%, not the share of unchanged labels). `lm_data` tokenizes them for a
language model, at the positions the alignment names.

>>> from causal.tasks import hierarchical_equality
>>> table = counterfactual_examples(hierarchical_equality(10), ["WX"], n=8, seed=0)
>>> int(table["changed"].sum()), len(table)
(4, 8)
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from workbench.das import CounterfactualData
from workbench.runs import save_run

from .model import CausalModel
from .tasks import LMTask

COLUMNS = ["base", "sources", "variables", "base_output", "label", "changed"]


def counterfactual_examples(model: CausalModel, variables: Sequence[str], n: int, seed: int = 0,
                            balanced: bool = True, where: Callable[[dict], bool] | None = None,
                            shared_source: bool = True, output: str | None = None,
                            max_tries: int = 200) -> pd.DataFrame:
    """``n`` interchange examples for ``variables``; ``where(values)`` filters bases and sources.

    ``shared_source``: one source sets every variable (what a single-source language-model run
    needs); else each variable has its own. Columns: ``base``, ``sources`` (variable -> inputs),
    ``base_output``, ``label`` (the model's output after the interchange), ``changed``.
    """
    variables = list(variables)
    if not variables:
        raise ValueError("no variables given: name at least one variable to interchange, e.g. ['WX']")
    for name in variables:
        model._check_name(name)
    if n < 0:
        raise ValueError(f"n = {n}: the number of examples must be >= 0")
    output = output or model.output
    rng = random.Random(seed)
    quota = {True: n // 2, False: n - n // 2} if balanced else None
    rows, tries = [], 0
    while len(rows) < n:
        tries += 1
        if tries > max_tries * max(n, 1):
            kinds = "changed/unchanged " if balanced else ""
            raise ValueError(f"drew only {len(rows)} of {n} {kinds}examples for {variables} in {tries - 1} tries; "
                             f"loosen the filter, ask for fewer, or pass balanced=False")
        base = _draw(model, rng, where)
        if shared_source:
            source = _draw(model, rng, where)
            sources = {v: source for v in variables}
        else:
            sources = {v: _draw(model, rng, where) for v in variables}
        base_output = model.run(base)[output]
        label = model.interchange(base, sources)[output]
        changed = label != base_output
        if quota is not None:
            if quota[changed] == 0:
                continue
            quota[changed] -= 1
        rows.append({"base": base, "sources": sources, "variables": variables, "base_output": base_output,
                     "label": label, "changed": changed})
    return pd.DataFrame(rows, columns=COLUMNS)


def _draw(model: CausalModel, rng: random.Random, where) -> dict:
    for _ in range(1000):
        inputs = model.sample_input(rng)
        if where is None or where(model.run(inputs)):
            return inputs
    raise ValueError("the filter rejected 1000 inputs in a row; loosen it")


def save_counterfactuals(folder: str | Path, table: pd.DataFrame, config: dict) -> dict[str, Path]:
    """Save a derived dataset with the settings that made it (``config.json``); inputs as JSON text.

    >>> import tempfile; from causal.tasks import hierarchical_equality
    >>> t = counterfactual_examples(hierarchical_equality(5), ["WX"], n=4)
    >>> sorted(save_counterfactuals(tempfile.mkdtemp(), t, {"seed": 0}))
    ['config', 'csv', 'summary', 'table']
    """
    plain = table.copy()
    for column in ("base", "sources", "variables", "base_output", "label"):
        plain[column] = [json.dumps(v, default=str) for v in plain[column]]
    summary = {"examples": len(table), "changed_share": float(table["changed"].mean()) if len(table) else None}
    return save_run(folder, plain, {"command": "counterfactuals", **config}, summary=summary)


def load_counterfactuals(folder: str | Path) -> pd.DataFrame:
    """Read back `save_counterfactuals`' table with its inputs as dicts again."""
    table = pd.read_parquet(Path(folder) / "results.parquet")
    for column in ("base", "sources", "variables", "base_output", "label"):
        table[column] = [json.loads(v) for v in table[column]]
    return table


# ---- tokenized for a language model ----------------------------------------------------------
def token_index(tokenizer, text: str, span: tuple[int, int]) -> tuple[list[int], int]:
    """Token ids of ``text`` and the index of the token holding the span's last character.

    >>> from transformers import AutoTokenizer                                    # doctest: +SKIP
    """
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    last_char = span[1] - 1
    for i, (start, end) in enumerate(offsets):
        if start <= last_char < end:
            return ids, i
    raise ValueError(f"no token of {text!r} covers character {last_char} (span {span}); "
                     f"the tokenizer may have merged it away")


def lm_data(tokenizer, task: LMTask, table: pd.DataFrame, position: str,
            source_position: str | None = None) -> CounterfactualData:
    """Tokenize derived examples: base and source prompts, the named positions, labels as the first
    token of the answer. One source per example (derive with ``shared_source=True``).

    >>> data = lm_data(hm.tokenizer, addition(), table, "last")                  # doctest: +SKIP
    """
    source_position = source_position or position
    for name in {position, source_position}:
        if name not in task.positions:
            raise ValueError(f"position {name!r} is not one of task {task.name}'s positions {task.positions}")
    base_ids, base_pos, source_ids, source_pos, labels = [], [], [], [], []
    for row in table.itertuples():
        sources = list({json.dumps(s, sort_keys=True, default=str): s for s in row.sources.values()}.values())
        if len(sources) != 1:
            raise ValueError("a language-model example takes one source; derive the examples with shared_source=True")
        text, spans = task.render(row.base)
        ids, index = token_index(tokenizer, text, spans[position])
        base_ids.append(ids)
        base_pos.append([index])
        text, spans = task.render(sources[0])
        ids, index = token_index(tokenizer, text, spans[source_position])
        source_ids.append(ids)
        source_pos.append([index])
        labels.append(first_token(tokenizer, task.answer(row.label)))
    meta = pd.DataFrame({"changed": table["changed"].tolist(), "label_value": [str(v) for v in table["label"]],
                         "base_output": [str(v) for v in table["base_output"]]})
    return CounterfactualData(base_ids, base_pos, source_ids, source_pos, torch.as_tensor(labels, dtype=torch.long), meta)


def first_token(tokenizer, text: str) -> int:
    """The id of ``text``'s first token (no special tokens)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"answer {text!r} tokenizes to nothing")
    return int(ids[0])


__all__ = ["COLUMNS", "counterfactual_examples", "first_token", "lm_data", "load_counterfactuals",
           "save_counterfactuals", "token_index"]
