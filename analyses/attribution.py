"""Attribution patching: a first-order estimate of every patch from one forward + backward.

Patching the source's state ``s`` into the base at a site changes the metric by about
``(s − b) · ∂metric/∂b`` (Nanda's attribution patching; Syed et al. 2023). One base forward with
gradients (`analyses.grad_states`) and one cached source run give that estimate for every
layer x position (``resid_pre``, ``attn_out``, ``mlp_out``, summed over d) and every layer x head
(``z``, summed over the head's channels and all positions, as `workbench.sweeps.head_sweep`
patches a head at every position). The estimate is exact when the metric is linear in the
patched state; elsewhere `compare_with_patching` measures how well it ranks the real patches.

>>> pos, heads = attribution_patching(hm, "Paris is in the country of", "Rome is in the country of",
...                                   target=" France", foil=" Italy")              # doctest: +SKIP
>>> pos.sort_values("attribution").head(3)                                         # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from workbench import Collect, HookedModel, PlanItem, Site
from workbench.metrics import Metric, logit_difference
from workbench.sweeps import head_sweep, patch_sweep, single_token_id

from .grad_states import states_and_grads

POSITION_COMPONENTS = ("resid_pre", "attn_out", "mlp_out")


def resolve_metric(hm: HookedModel, metric: Metric | None, target: str | None, foil: str | None) -> Metric:
    """``metric`` as given, else logit(target) − logit(foil) at the last token (single tokens)."""
    if metric is not None:
        return metric
    if target is None or foil is None:
        raise ValueError("give metric=, or target= and foil= tokens for the logit-difference metric "
                         "(e.g. target=' France', foil=' Italy')")
    return logit_difference(single_token_id(hm, target), single_token_id(hm, foil))


def tokenize_pair(hm: HookedModel, base: str, source: str) -> tuple[dict, dict]:
    """Base and source batches (1, T) of the same length, else an error naming both lengths."""
    base_batch, source_batch = hm.tokenize(base), hm.tokenize(source)
    nb, ns = base_batch["input_ids"].shape[1], source_batch["input_ids"].shape[1]
    if nb != ns:
        raise ValueError(f"base has {nb} tokens and source has {ns}: patching aligns them token by token; "
                         f"give prompts of the same token count (e.g. swap one single-token word)")
    return base_batch, source_batch


def _check_components(components: Sequence[str]) -> list[str]:
    bad = [c for c in components if c not in POSITION_COMPONENTS]
    if bad:
        raise ValueError(f"components {bad}: attribution per layer x position supports {list(POSITION_COMPONENTS)}; "
                         f"choose among those (heads are attributed separately, heads=True)")
    return list(components)


def _layers(hm: HookedModel, layers: Sequence[int] | None) -> list[int]:
    layers = list(range(hm.n_layers)) if layers is None else list(layers)
    bad = [l for l in layers if not 0 <= l < hm.n_layers]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers}: the model has {hm.n_layers} layers (0-{hm.n_layers - 1}); "
                         f"give layers in that range")
    return layers


def attribution_patching(hm: HookedModel, base: str, source: str, metric: Metric | None = None,
                         target: str | None = None, foil: str | None = None,
                         components: Sequence[str] = POSITION_COMPONENTS, layers: Sequence[int] | None = None,
                         heads: bool = True) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(positions, heads) tables of attribution estimates for patching ``source`` into ``base``.

    positions: component, layer, position, token, attribution, base_value, source_value, normalized.
    heads (None with ``heads=False``): layer, head, attribution, base_value, source_value, normalized.
    ``normalized`` divides by (source_value − base_value), as the patching sweeps do.
    """
    metric = resolve_metric(hm, metric, target, foil)
    components, layers = _check_components(components), _layers(hm, layers)
    base_batch, source_batch = tokenize_pair(hm, base, source)
    sites = [Site(l, c) for c in components for l in layers] + ([Site(l, "z") for l in layers] if heads else [])
    states, grads, clean = states_and_grads(hm, base_batch, sites, metric)
    # one source forward reads every site's state and the source's metric value
    collectors = {site: Collect() for site in sites}
    with torch.no_grad(), hm.intervene([PlanItem(site, "all", c) for site, c in collectors.items()]):
        patched = float(metric(hm.forward(source_batch, use_cache=False).logits, source_batch)[0])
    sources = {site: c.values[0] for site, c in collectors.items()}  # (1, T, W) each
    clean_value = float(clean[0])
    scale = patched - clean_value

    def estimate(site: Site) -> torch.Tensor:  # (1, T, W): (s − b) * grad, in fp32
        return (sources[site].float() - states[site].float()) * grads[site].float()

    tokens = [hm.tokenizer.decode([i]) for i in base_batch["input_ids"][0].tolist()]
    rows = []
    for component in components:
        for layer in layers:
            per_position = estimate(Site(layer, component))[0].sum(-1)  # (T,)
            rows += [(component, layer, p, tokens[p], float(v)) for p, v in enumerate(per_position.tolist())]
    positions = pd.DataFrame(rows, columns=["component", "layer", "position", "token", "attribution"])
    head_table = None
    if heads:
        n_heads = hm.layout.n_heads
        rows = []
        for layer in layers:
            e = estimate(Site(layer, "z"))[0]  # (T, W)
            per_head = e.reshape(e.shape[0], n_heads, -1).sum((0, 2))  # (H,)
            rows += [(layer, h, float(v)) for h, v in enumerate(per_head.tolist())]
        head_table = pd.DataFrame(rows, columns=["layer", "head", "attribution"])
    for table in (positions, head_table):
        if table is None:
            continue
        table["base_value"], table["source_value"] = clean_value, patched
        table["normalized"] = table["attribution"] / scale if scale != 0 else float("nan")
    return positions, head_table


def compare_with_patching(hm: HookedModel, base: str, source: str, metric: Metric | None = None,
                          target: str | None = None, foil: str | None = None,
                          components: Sequence[str] = POSITION_COMPONENTS, layers: Sequence[int] | None = None,
                          heads: bool = True, batch_size: int = 64) -> tuple[pd.DataFrame, dict]:
    """Attribution beside real patching (`workbench.sweeps`), and Spearman's rank correlation.

    Returns (table, correlations): the table has one row per cell with ``attribution`` and
    ``patching`` (the patched metric minus the base's); correlations maps each component (and
    ``z`` for heads) plus ``all`` to Spearman's rho over its cells.

    >>> table, rho = compare_with_patching(hm, base, source, target=" France", foil=" Italy")  # doctest: +SKIP
    """
    metric = resolve_metric(hm, metric, target, foil)
    positions, head_table = attribution_patching(hm, base, source, metric, components=components,
                                                 layers=layers, heads=heads)
    layers = _layers(hm, layers)
    parts = []
    for component in components:
        real = patch_sweep(hm, base, source, metric, component=component, layers=layers, batch_size=batch_size)
        mine = positions[positions.component == component].reset_index(drop=True)
        mine["patching"] = (real["value"] - real["base_value"]).to_numpy()
        parts.append(mine)
    if heads:
        real = head_sweep(hm, base, source, metric, layers=layers, batch_size=batch_size)
        mine = head_table.assign(component="z").reset_index(drop=True)
        mine["patching"] = (real["value"] - real["base_value"]).to_numpy()
        parts.append(mine)
    table = pd.concat(parts, ignore_index=True)
    correlations = {}
    for component, group in table.groupby("component", sort=False):
        correlations[component] = spearman(group["attribution"], group["patching"])
    correlations["all"] = spearman(table["attribution"], table["patching"])
    return table, correlations


def spearman(a: pd.Series, b: pd.Series) -> float:
    """Spearman's rank correlation: Pearson's on the ranks (ties share their mean rank).

    >>> spearman(pd.Series([1.0, 2.0, 3.0]), pd.Series([10.0, 30.0, 20.0]))
    0.5
    """
    if a.nunique() < 2 or b.nunique() < 2:
        return float("nan")  # a constant column has no ranking (e.g. every cell zero)
    return float(a.rank().corr(b.rank()))
