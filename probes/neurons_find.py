"""Find the neurons a concept explains best, then test whether they matter causally.

1. Rank every neuron of a site by observational F1 (precision, recall) of "activation above the
   neuron's own ``quantile``" against "the token belongs to the concept" (one vectorized pass).
2. Set the top ``k`` and ``n_random`` random neurons high and low, all settings in batched passes
   (`probes.neurons.setting_effects`), and compare their effects on P(concept).

The figure (observational F1 vs interventional effect, top vs random) is the main plot of
"do confident explanations have causal efficacy?".

>>> import torch
>>> ranked = rank_neurons(torch.tensor([[0.0, 1.0], [5.0, 0.0], [0.1, 2.0]]), torch.tensor([False, True, False]),
...                       quantile=0.5)
>>> ranked[["neuron", "precision", "recall", "f1"]].values.tolist()
[[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from workbench.hooked import HookedModel
from workbench.sites import Site

from .neurons import Concept, against_random, random_neurons, save_summary, setting_effects, site_activations


def rank_neurons(activations: torch.Tensor, present: torch.Tensor, quantile: float = 0.99) -> pd.DataFrame:
    """Every neuron's observational scores, best F1 first (ties: precision, then index).

    ``activations`` (N_tokens, W), ``present`` (N_tokens,) bool. Each neuron's threshold is its own
    ``quantile`` (as `observational_scores` computes it, so the numbers agree neuron by neuron).
    """
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile={quantile} must be strictly between 0 and 1 (e.g. 0.99)")
    a = activations.double().numpy()  # (n, W)
    c = np.asarray(present, dtype=bool)  # (n,)
    if a.ndim != 2 or a.shape[0] != c.shape[0] or a.shape[0] == 0:
        raise ValueError(f"need activations (N_tokens, W) and one concept flag per token, got {a.shape} and {c.shape}")
    threshold = np.quantile(a, quantile, axis=0)  # (W,)
    fires = a > threshold  # (n, W)
    tp = (fires & c[:, None]).sum(0)  # (W,)
    n_fire = fires.sum(0)  # (W,)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_fire > 0, tp / np.maximum(n_fire, 1), np.nan)
        recall = tp / c.sum() if c.any() else np.full(tp.shape, np.nan)
        f1 = np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0)
    table = pd.DataFrame({"neuron": np.arange(a.shape[1]), "precision": precision, "recall": recall, "f1": f1,
                          "threshold": threshold, "firing_tokens": n_fire, "concept_tokens": int(c.sum())})
    table = table.sort_values(["f1", "precision", "neuron"], ascending=[False, False, True], na_position="last")
    table.insert(1, "rank", np.arange(1, len(table) + 1))
    return table.reset_index(drop=True)


def efficacy_figure(table: pd.DataFrame, title: str):
    """Observational F1 (x) vs interventional effect (y), top-k and random neurons in two colours."""
    import plotly.express as px

    fig = px.scatter(table, x="f1", y="effect", color="group", hover_data=["neuron", "rank", "precision", "recall"],
                     title=title, labels={"f1": "observational F1", "effect": "effect on P(concept): high − low"})
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    return fig


def find_neurons(hm: HookedModel, site: Site | str, concept: Concept, texts: Sequence[str], top_k: int = 10,
                 n_random: int = 20, quantile: float = 0.99, high_quantile: float = 0.999, low_quantile: float = 0.5,
                 positions: str = "last", seed: int = 0, batch_size: int = 16, out: str | Path | None = None,
                 fast: bool | None = None, progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Rank the site's neurons for ``concept``, score the top ``top_k`` and ``n_random`` others by
    intervention; returns (table, summary) and saves ``neurons/``, ``ranking/`` and
    ``summary.json`` under ``out``.

    >>> table, summary = find_neurons(hm, "L10.mlp_act", Concept.parse("words:good,great"), texts)  # doctest: +SKIP
    """
    from workbench.runs import save_run

    site = Site.parse(site)
    width = hm.site_size(site)
    if not 1 <= top_k <= width or not 0 <= n_random <= width - top_k:
        raise ValueError(f"top_k={top_k}, n_random={n_random}: {site} has {width} neurons; need "
                         f"1 <= top_k and top_k + n_random <= {width}")
    activations, tokens = site_activations(hm, site, texts, batch_size, progress=progress)  # (n, W)
    present = torch.tensor(tokens["token"].map(concept.matches).to_numpy(dtype=bool))  # (n,)
    if not present.any():
        raise ValueError(f"no token of the {len(texts)} texts matches {concept}; choose other words or more texts")
    ranking = rank_neurons(activations, present, quantile)
    top = torch.tensor(ranking["neuron"].to_numpy()[:top_k], dtype=torch.long)
    others = random_neurons(width, n_random, exclude=top.tolist(), seed=seed)
    neurons = torch.cat([top, others])  # (M,)
    effects = setting_effects(hm, site, neurons, concept, texts, activations, high_quantile, low_quantile,
                              batch_size, positions, fast, progress)
    table = ranking.set_index("neuron").loc[neurons.tolist()].reset_index()
    table.insert(1, "group", ["top"] * top_k + ["random"] * n_random)
    table = table.merge(effects, on="neuron")
    random = table.loc[table["group"] == "random", "effect"]
    scored = [against_random(e, random) for e in table["effect"]]
    table["z"] = [s["z"] for s in scored]
    table["percentile"] = [s["percentile"] for s in scored]
    top_rows = table[table["group"] == "top"]
    summary = {"site": str(site), "concept": str(concept), "texts": len(texts), "tokens": int(len(tokens)),
               "concept_tokens": int(present.sum()), "top_k": top_k, "n_random": n_random, "quantile": quantile,
               "high_quantile": high_quantile, "low_quantile": low_quantile, "positions": positions, "seed": seed,
               "top_mean_effect": float(top_rows["effect"].mean()),
               "random_mean_effect": float(random.mean()) if len(random) else float("nan"),
               "random_std_effect": float(random.std()) if len(random) > 1 else float("nan"),
               "top_above_all_random": int((top_rows["percentile"] == 1.0).sum()),
               "f1_effect_spearman": float(table["f1"].corr(table["effect"], method="spearman"))
               if len(table) > 2 else float("nan"),
               "best": top_rows.iloc[0][["neuron", "precision", "recall", "f1", "effect", "z", "percentile"]].to_dict()}
    if out is not None:
        config = {"command": "neuron find", **{k: v for k, v in summary.items() if k != "best"}}
        figure = efficacy_figure(table, f"{concept} at {site}: observational F1 vs interventional effect")
        save_run(Path(out) / "neurons", table, config, figure=figure)
        save_run(Path(out) / "ranking", ranking, config)
        save_summary(out, summary)
    return table, summary
