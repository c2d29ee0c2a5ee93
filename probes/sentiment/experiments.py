"""The two causal experiments: directional patching per layer, and SST accuracy under ablation.

>>> curve = patching_curve(hm, pairs, fitted, layers=[0, 4, 8])            # doctest: +SKIP
>>> table = sst_ablation(hm, sst, fitted, layers=range(30))                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from workbench.das.data import last_logits_kwargs
from workbench.hooked import HookedModel
from workbench.interventions import Collect
from workbench.plan import PlanItem
from workbench.sites import Site

from workbench.data.reviews import ANSWERS, check_single_tokens
from workbench.data.sst import sst_prompts
from .causal import (ablation_plan, flip_rate, logit_differences, patch_plan, position_set, recovery,
                     source_values_at)
from .fit import FittedDirections


def patching_curve(hm: HookedModel, pairs: pd.DataFrame, fitted: FittedDirections, layers: Sequence[int],
                   methods: Sequence[str] = ("mean_diff",), position_sets: Sequence[str] = ("all", "comma"),
                   component: str = "resid_post", batch_size: int = 32) -> pd.DataFrame:
    """Directional patching clean -> flipped at each layer, method and position set.

    Columns: layer, method, positions, recovery, flip_rate, ld_clean, ld_flipped, ld_patched
    (mean logit differences, signed by the clean prompt's answer). Source states come from
    ``fitted.states`` when the clean prompts were among the fitted ones, else from one cache.
    """
    clean, flipped = list(pairs["clean"]), list(pairs["flipped"])
    answer = check_single_tokens(hm.tokenizer, pairs["answer"])
    foil = check_single_tokens(hm.tokenizer, pairs["foil"])
    ld_clean = logit_differences(hm, clean, answer, foil, batch_size=batch_size)  # (N,)
    ld_flipped = logit_differences(hm, flipped, answer, foil, batch_size=batch_size)  # (N,)
    cells = [(layer, m, p) for layer in layers for m in methods if m in fitted.directions.get(layer, {})
             for p in position_sets]
    rows = []
    for layer, method, pos_name in tqdm(cells, desc="directional patching", leave=False):
        site = Site(layer, component)
        states = fitted.states.get(site)
        if states is None:
            raise ValueError(f"no cached states at {site}: fit directions at layer {layer} first")
        prompt_index = fitted.index_of(clean)
        selector = position_set(pos_name)
        values = source_values_at(hm, clean, states[prompt_index], selector)  # (N, k, d)
        u = fitted.directions[layer][method].vector
        ld = logit_differences(hm, flipped, answer, foil, patch_plan(site, u, selector, values), batch_size)
        rows.append({"layer": layer, "method": method, "positions": pos_name,
                     "recovery": recovery(ld, ld_clean, ld_flipped), "flip_rate": flip_rate(ld, ld_flipped),
                     "ld_clean": float(ld_clean.mean()), "ld_flipped": float(ld_flipped.mean()),
                     "ld_patched": float(ld.mean())})
    return pd.DataFrame(rows)


@torch.no_grad()
def mean_projections(hm: HookedModel, prompts: Sequence[str], vectors: dict, batch_size: int = 32,
                     positions: str = "all") -> dict:
    """Mean projection onto each site's vectors {site: {name: u}} over the tokens of ``prompts``
    that the position set ``positions`` selects: {site: {name: mean}} (mean-ablation values)."""
    selector = position_set(positions)
    sums = {site: {name: 0.0 for name in named} for site, named in vectors.items()}
    count = 0
    for start in range(0, len(prompts), batch_size):
        batch = hm.tokenize(list(prompts[start:start + batch_size]), padding_side="left")
        valid = selector.resolve(batch["input_ids"], batch["attention_mask"], hm.tokenizer).mask  # (b, k)
        collectors = {site: Collect() for site in vectors}
        with hm.intervene([PlanItem(site, selector, c) for site, c in collectors.items()]):
            hm.forward(batch, use_cache=False, **last_logits_kwargs(hm))
        count += int(valid.sum())
        for site, c in collectors.items():
            states = c.values[0].float()  # (b, k, d)
            for name, u in vectors[site].items():
                sums[site][name] += float((states @ u.float())[valid].sum())
    if count == 0:
        raise ValueError(f"position set {positions!r} selects no token of the prompts; choose another")
    return {site: {name: total / count for name, total in named.items()} for site, named in sums.items()}


def _accuracy(ld: torch.Tensor, sentiment: np.ndarray) -> dict:
    predicted = np.where(ld.numpy() > 0, 1, -1)
    both = len(set(sentiment.tolist())) == 2
    return {"accuracy": float((predicted == sentiment).mean()),
            "auc": float(roc_auc_score(sentiment > 0, ld.numpy())) if both else float("nan"),
            "mean_signed_ld": float((ld.numpy() * sentiment).mean())}


def sst_ablation(hm: HookedModel, sst: pd.DataFrame, fitted: FittedDirections, layers: Sequence[int],
                 method: str = "mean_diff", position_sets: Sequence[str] = ("all", "comma"),
                 value: str = "mean", random_control: bool = True, answers: tuple[str, str] = (" positive", " negative"),
                 template: str | None = None, component: str = "resid_post", batch_size: int = 16,
                 seed: int = 0, mean_positions: str = "all") -> pd.DataFrame:
    """Zero-shot SST accuracy with the direction ablated at ``layers`` (all at once), per position set.

    ``value``: 'mean' sets the projection to its mean over the SST prompts' tokens (per layer),
    'zero' projects the direction out; ``mean_positions`` chooses the tokens that mean runs over
    (e.g. 'non_first' to leave the attention-sink token out). ``random_control`` repeats each ablation with a random unit
    direction per layer. Columns: direction, positions, accuracy, auc, mean_signed_ld,
    drop (in accuracy), above_chance_lost ((acc_clean − acc) / (acc_clean − 0.5)), share_of_all
    (this drop / the same direction's drop at the first, widest, position set).
    """
    if value not in ("mean", "zero"):
        raise ValueError(f"value={value!r}: expected 'mean' (mean ablation) or 'zero' (projection out)")
    order = np.argsort([len(t) for t in sst["text"]])  # similar lengths per batch: less padding
    sst = sst.iloc[order].reset_index(drop=True)
    prompts = sst_prompts(sst["text"]) if template is None else sst_prompts(sst["text"], template)
    pos_id, neg_id = check_single_tokens(hm.tokenizer, answers)
    answer, foil = [pos_id] * len(prompts), [neg_id] * len(prompts)
    sentiment = sst["sentiment"].to_numpy()
    g = torch.Generator().manual_seed(seed)
    named = {}
    for layer in layers:
        u = fitted.directions[layer][method].vector
        r = torch.randn(u.shape[0], generator=g)
        named[Site(layer, component)] = {"sentiment": u, "random": r / r.norm()}
    if not random_control:
        named = {site: {"sentiment": v["sentiment"]} for site, v in named.items()}
    means = mean_projections(hm, prompts, named, batch_size, mean_positions) if value == "mean" else None
    runs = [("none", "-")] + [(d, p) for d in next(iter(named.values())) for p in position_sets]
    rows = []
    for direction, pos_name in tqdm(runs, desc="SST ablation", leave=False):
        plan_for = None
        if direction != "none":
            vectors = {site: v[direction] for site, v in named.items()}
            values = {site: means[site][direction] for site in named} if means else {}
            plan_for = ablation_plan(vectors, values, position_set(pos_name))
        ld = logit_differences(hm, prompts, answer, foil, plan_for, batch_size)
        rows.append({"direction": direction, "positions": pos_name, **_accuracy(ld, sentiment)})
    table = pd.DataFrame(rows)
    clean = table.loc[table["direction"] == "none", "accuracy"].iloc[0]
    table["drop"] = clean - table["accuracy"]
    table["above_chance_lost"] = table["drop"] / (clean - 0.5) if clean != 0.5 else float("nan")
    widest = position_sets[0]  # the share is relative to the first (widest) position set
    all_drop = table[table["positions"] == widest].set_index("direction")["drop"]
    table["share_of_all"] = [row.drop / all_drop[row.direction] if row.direction in all_drop and all_drop[row.direction]
                             else float("nan") for row in table.itertuples()]
    table.attrs = {"answers": list(answers), "n": len(sst), "value": value, "mean_positions": mean_positions}
    return table


__all__ = ["patching_curve", "sst_ablation", "mean_projections", "ANSWERS"]
