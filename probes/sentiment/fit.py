"""Fitting sentiment directions on ToyMovieReview prompts, per layer and per method.

Representations are the ADJ and VERB tokens' states at ``L{layer}.{component}``; the split is by
adjective (`workbench.data.reviews.toy_movie_reviews`). Returns the directions, a table of how well each
separates train and held-out test prompts, and the cosine similarities between methods.

>>> fitted = fit_sentiment_directions(hm, reviews, layers=[6, 12])      # doctest: +SKIP
>>> fitted.scores.query("split == 'test'")[["layer", "method", "accuracy"]]   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.hooked import HookedModel
from workbench.sites import Site

from workbench.data.reviews import contrast_pairs, word_positions
from ..direction_das import das_direction
from ..directions import METHODS, Direction, cosine_matrix, fit_directions
from .causal import cache_all_positions


@dataclass
class FittedDirections:
    """Directions {layer: {method: Direction}}, their accuracies and cosine similarities."""

    directions: dict[int, dict[str, Direction]]
    scores: pd.DataFrame  # layer, method, split, accuracy
    cosines: pd.DataFrame  # layer, a, b, cosine
    states: dict = field(default_factory=dict, repr=False)  # {Site: (N, T, d)} all tokens of all prompts
    slot_positions: list[int] = field(default_factory=list)  # ADJ and VERB token indices
    das_info: dict = field(default_factory=dict)
    prompts: list[str] = field(default_factory=list)  # row order of ``states``

    def index_of(self, prompts: Sequence[str]) -> torch.Tensor:
        """Rows of ``states`` holding ``prompts`` (N,), with a clear error for unknown prompts."""
        order = {p: i for i, p in enumerate(self.prompts)}
        missing = [p for p in prompts if p not in order]
        if missing:
            raise ValueError(f"prompt {missing[0]!r} was not among the fitted prompts; build the pairs from "
                             f"the same reviews table the directions were fit on")
        return torch.tensor([order[p] for p in prompts])


def slot_positions(hm: HookedModel, reviews: pd.DataFrame) -> list[int]:
    """The ADJ and VERB token indices, checked to be the same in every prompt."""
    found = {tuple(word_positions(hm.tokenizer, row.prompt, [row.adjective, row.verb])) for row in reviews.itertuples()}
    if len(found) != 1:
        raise ValueError(f"ADJ/VERB positions differ between prompts ({sorted(found)[:3]} ...); "
                         f"use single-token words so every prompt aligns")
    return list(found.pop())


def _slot_data(states: torch.Tensor, rows: pd.Index, slots: list[int], reviews: pd.DataFrame,
               center: torch.Tensor | None = None):
    """ADJ and VERB states of ``rows`` stacked, each slot minus its ``center`` (2, d) train mean.

    Centering per slot removes the ADJ-vs-VERB offset, which would otherwise be the largest
    variance and capture PCA and k-means; mean differences and probes are unchanged by it.
    """
    X = states[torch.as_tensor(rows)][:, slots].float()  # (n, 2, d)
    if center is not None:
        X = X - center  # (n, 2, d)
    y = torch.as_tensor(reviews.loc[rows, "sentiment"].to_numpy().copy()).repeat_interleave(len(slots))  # (n * 2,)
    return X.reshape(-1, X.shape[-1]), y  # (n * 2, d), (n * 2,)


def fit_sentiment_directions(hm: HookedModel, reviews: pd.DataFrame, layers: Sequence[int],
                             component: str = "resid_post", methods: Sequence[str] = METHODS[:4],
                             das_layers: Sequence[int] = (), das_config=None, batch_size: int = 32,
                             seed: int = 0, das_max_pairs: int | None = None) -> FittedDirections:
    """Fit ``methods`` at each layer on the train split; DAS (1-D) at ``das_layers`` only.

    Scores: accuracy of the midpoint-threshold classifier on ADJ/VERB states (centered per slot
    with the train means), train and test.
    """
    reviews = reviews.reset_index(drop=True)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}: choose from {METHODS}")
    sites = {layer: Site(layer, component) for layer in layers}
    for layer in das_layers:
        if layer not in sites:
            raise ValueError(f"DAS layer {layer} is not among the fitted layers {list(layers)}; add it to layers")
    states = cache_all_positions(hm, list(reviews["prompt"]), list(sites.values()), batch_size)
    slots = slot_positions(hm, reviews)
    train_rows = reviews.index[reviews["split"] == "train"]
    test_rows = reviews.index[reviews["split"] == "test"]
    directions, score_rows, cos_rows, das_info = {}, [], [], {}
    for layer, site in tqdm(sites.items(), desc="fit directions", leave=False):
        center = states[site][torch.as_tensor(train_rows)][:, slots].float().mean(0)  # (2, d)
        X_train, y_train = _slot_data(states[site], train_rows, slots, reviews, center)
        X_test, y_test = _slot_data(states[site], test_rows, slots, reviews, center)
        vectors = fit_directions(X_train, y_train, [m for m in methods if m != "das"])
        if layer in das_layers:
            pairs = contrast_pairs(reviews, "train", seed=seed)
            if das_max_pairs is not None and len(pairs) > das_max_pairs:
                pairs = pairs.sample(n=das_max_pairs, random_state=seed)
            val = contrast_pairs(reviews, "test", seed=seed)
            vectors["das"], das_info[layer] = das_direction(hm, site, pairs, slots, val, das_config,
                                                            orient_with=vectors.get("mean_diff"))
        directions[layer] = {}
        for method, u in vectors.items():
            direction = Direction.from_vector(u, X_train, y_train, method, str(site))
            directions[layer][method] = direction
            for split, (X, y) in (("train", (X_train, y_train)), ("test", (X_test, y_test))):
                score_rows.append({"layer": layer, "method": method, "split": split,
                                   "accuracy": direction.accuracy(X, y)})
        cos = cosine_matrix(vectors)
        cos_rows += [{"layer": layer, "a": a, "b": b, "cosine": float(cos.loc[a, b])} for a in cos.index for b in cos.columns]
    return FittedDirections(directions, pd.DataFrame(score_rows), pd.DataFrame(cos_rows), states, slots, das_info,
                           list(reviews["prompt"]))


def load_directions(path: str, method_filter: Sequence[str] | None = None) -> FittedDirections:
    """Directions saved by a sentiment run (``directions.safetensors``, keys ``L{layer}.{method}``),
    without thresholds or cached states: enough for `sst_ablation` and projections.

    >>> fitted = load_directions("runs/sentiment-smollm2/directions.safetensors")   # doctest: +SKIP
    """
    from safetensors.torch import load_file

    directions: dict[int, dict[str, Direction]] = {}
    for key, vector in load_file(path).items():
        layer, _, method = key.partition(".")
        if not layer.startswith("L") or not layer[1:].isdigit() or not method:
            raise ValueError(f"{path}: key {key!r} is not 'L<layer>.<method>'; was it written by a sentiment run?")
        if method_filter is None or method in method_filter:
            directions.setdefault(int(layer[1:]), {})[method] = Direction(vector.float(), float("nan"), method)
    return FittedDirections(directions, pd.DataFrame(), pd.DataFrame())
