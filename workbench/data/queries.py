"""Attribute queries: one prompt per (entity, attribute, template), and filtering to the pairs the
model answers correctly.

A query's answer is the first token of the attribute value, with a leading space unless the
template ends in whitespace or a quote. The entity position is its last token, counted over
real tokens (so any padding side works).

>>> queries = build_queries(hm.tokenizer, data, ["Country"], split="train")    # doctest: +SKIP
>>> kept, summary = filter_correct(hm, queries)                                # doctest: +SKIP
>>> summary                                                                    # doctest: +SKIP
  attribute  queries  correct  kept_share
"""

from __future__ import annotations

import random
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..padding import left_pad, pad_id_of
from .ravel import RavelData
from .report import DataReport

QUERY_COLUMNS = [
    "entity", "attribute", "template", "split", "value", "text", "ids", "position", "entity_tokens", "label"]


def answer_text(template: str, value: str) -> str:
    """The answer as the model would continue ``template``.

    >>> answer_text("%s is in the country of", "France"), answer_text('{"city": "%s", "country": "', "France")
    (' France', 'France')
    """
    return value if template and (template[-1].isspace() or template[-1] in "\"'") else " " + value


def answer_token(tokenizer, template: str, value: str) -> int:
    """The id of the answer's first token."""
    ids = tokenizer(answer_text(template, value), add_special_tokens=False)["input_ids"]
    if not ids:
        raise ValueError(f"value {value!r} tokenizes to nothing for template {template!r}")
    return int(ids[0])


def entity_last_token(tokenizer, template: str, entity: str) -> tuple[list[int], int, int] | None:
    """Token ids of the filled template, the index of the entity's last token, and how many
    tokens the entity takes.

    None when the tokenization merges the entity's last token with the text after it (the
    entity then has no token of its own to intervene on).
    """
    full = tokenizer(template.replace("%s", entity))["input_ids"]
    before = template[: template.index("%s")]
    prefix = tokenizer(before + entity)["input_ids"]
    if full[: len(prefix)] != prefix:
        return None
    width = len(prefix)  # the entity's tokens: those after the template text before it
    for text in (before, before.rstrip()):  # "of " + "Paris" -> "of", " Paris": the space joins the entity
        ids = tokenizer(text)["input_ids"]
        if prefix[: len(ids)] == ids and len(ids) < len(prefix):
            width = len(prefix) - len(ids)
            break
    return list(full), len(prefix) - 1, width


def build_queries(tokenizer, data: RavelData, attributes: Sequence[str], split: str | None = None,
                  entities: Sequence[str] | None = None, max_templates: int | None = None,
                  seed: int = 0, max_entity_tokens: int | None = None,
                  report: DataReport | None = None) -> pd.DataFrame:
    """One row per (entity, attribute, template) of a split, columns ``QUERY_COLUMNS``.

    Entities come from the entity split and templates from the prompt split of the same name.
    ``max_templates`` keeps that many templates per attribute (chosen with ``seed``);
    ``max_entity_tokens`` drops entities longer than that in a prompt (with 1, the last entity
    token is the whole entity). Skipped (entity, template) pairs are counted in ``report`` by
    reason: ``no_value`` (the entity lacks the attribute), ``entity_merges_with_text``,
    ``entity_too_long``, ``value_tokenizes_to_nothing``; kept ones with a value of several tokens
    (the label is its first token) also count as ``multi_token_value`` rows.

    >>> q = build_queries(tok, data, ["Country"], split="test", max_templates=2)   # doctest: +SKIP
    """
    rng = random.Random(seed)
    names = data.entities(split) if entities is None else list(entities)
    report = DataReport() if report is None else report
    stage = f"queries:{split or 'all'}"
    rows = []
    for attribute in attributes:
        templates = data.templates(attribute, split)
        if max_templates is not None and len(templates) > max_templates:
            templates = sorted(rng.sample(templates, max_templates), key=templates.index)
        for template in templates:
            for entity in names:
                value = data.attributes[entity].get(attribute)
                if value is None:
                    report.drop(stage, "queries", "no_value", f"{entity}.{attribute}")
                    continue
                found = entity_last_token(tokenizer, template, entity)
                if found is None:
                    report.drop(stage, "queries", "entity_merges_with_text", entity)
                    continue
                ids, position, width = found
                if max_entity_tokens is not None and width > max_entity_tokens:
                    report.drop(stage, "queries", "entity_too_long", entity)
                    continue
                value_ids = tokenizer(answer_text(template, value), add_special_tokens=False)["input_ids"]
                if not value_ids:
                    report.drop(stage, "queries", "value_tokenizes_to_nothing", f"{entity}.{attribute}")
                    continue
                if len(value_ids) > 1:
                    report.kept(stage, "multi_token_value", example=value)
                report.kept(stage, "queries")
                rows.append({"entity": entity, "attribute": attribute, "template": template,
                             "split": data.entity_split[entity], "value": value,
                             "text": template.replace("%s", entity), "ids": ids, "position": position,
                             "entity_tokens": width,
                             "label": int(value_ids[0])})
    return pd.DataFrame(rows, columns=QUERY_COLUMNS)


@torch.no_grad()
def predict_next(hm, rows: Sequence[Sequence[int]], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Argmax next-token id after each token list, (N,)."""
    from ..das.data import last_logits_kwargs
    out = []
    for start in tqdm(range(0, len(rows), batch_size), desc="answers", disable=not progress, leave=False):
        batch = left_pad(rows[start:start + batch_size], pad_id_of(hm, default=0))
        logits = hm.forward(batch, use_cache=False, **last_logits_kwargs(hm)).logits[:, -1]  # (b, V)
        out.append(logits.argmax(-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def filter_correct(hm, queries: pd.DataFrame, batch_size: int = 64, progress: bool = False,
                   report: DataReport | None = None, stage: str = "filter") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the queries whose argmax next token is the answer's first token.

    Returns (kept queries, summary per attribute with ``queries``, ``correct``, ``kept_share``);
    ``report`` counts kept and ``model_wrong`` queries under ``stage``.
    """
    queries = queries.reset_index(drop=True).copy()
    predicted = predict_next(hm, list(queries["ids"]), batch_size, progress)
    queries["predicted"] = predicted.tolist()
    queries["correct"] = (predicted == torch.as_tensor(queries["label"].tolist(), dtype=torch.long)).tolist()
    summary = (queries.groupby("attribute")["correct"].agg(queries="size", correct="sum").reset_index())
    summary["kept_share"] = summary["correct"] / summary["queries"]
    if report is not None:
        n_correct = int(queries["correct"].sum())
        report.kept(stage, "queries", n_correct)
        if len(queries) > n_correct:
            report.drop(stage, "queries", "model_wrong", n=len(queries) - n_correct)
    return queries[queries["correct"].astype(bool)].reset_index(drop=True), summary
