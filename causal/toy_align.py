"""Alignment search on a toy network: train and score each featurizer at each layer and position.

The same featurizers as for language models (`causal.featurizers`), applied through
`causal.toy.interchange`'s forward hook. Localist search, the baseline, scores single neurons
and random dims subsets on the training examples and keeps the best.

>>> rows = toy_search(net, model, ["WX"], [Featurizer("das", k=2)], n_train=2000, n_test=500)   # doctest: +SKIP
"""

from __future__ import annotations

import random
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .counterfactuals import counterfactual_examples
from .featurizers import DifferentiableMask, Featurizer, anneal, build
from .model import CausalModel
from .toy import ToyNetwork, interchange


def toy_tensors(net: ToyNetwork, table: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Derived examples (one shared source) -> base (N, I), source (N, I) input indices and labels (N,)."""
    base = net.encode(table["base"].tolist())
    source = net.encode([next(iter(s.values())) for s in table["sources"]])
    return base, source, torch.tensor([int(v) for v in table["label"]], dtype=torch.long)


def intervened_logits(net: ToyNetwork, layer: int, positions: Sequence[int], intervention, base: torch.Tensor,
                      source: torch.Tensor) -> torch.Tensor:
    """The network's logits on ``base`` with ``intervention`` at (layer, positions) from ``source``."""
    states = net.states(source)[layer][:, list(positions)]  # (B, k, h)
    with interchange(net, layer, positions, intervention, states):
        return net(base)  # (B, classes)


@torch.no_grad()
def toy_iia(net, layer, positions, intervention, data) -> float:
    """Interchange-intervention accuracy of ``intervention`` on ``data`` = (base, source, labels)."""
    base, source, labels = data
    was = intervention.training
    intervention.eval()
    try:
        predicted = intervened_logits(net, layer, positions, intervention, base, source).argmax(-1)
    finally:
        intervention.train(was)
    return float((predicted == labels).float().mean())


def fit(net: ToyNetwork, layer: int, positions: Sequence[int], intervention, data, epochs: int = 10,
        batch_size: int = 64, lr: float = 1e-2, sparsity: float = 0.0, seed: int = 0,
        temperature: tuple[float, float] = (1.0, 0.01)) -> list[float]:
    """Train ``intervention`` (DAS / Boundless / DBM) with cross-entropy on the counterfactual labels;
    the network stays frozen. DBM and Boundless temperatures anneal over the run; ``sparsity``
    weighs DBM's mean mask. Returns the loss per step."""
    base, source, labels = data
    params = [p for p in intervention.parameters() if p.requires_grad]
    if not params:
        return []
    states = net.states(source)[layer][:, list(positions)]  # (N, k, h): the source runs never change
    for p in net.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.Adam(params, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * max(1, len(labels) // batch_size)
    losses = []
    intervention.train()
    for step in range(steps):
        anneal(intervention, step, steps, temperature)
        index = torch.randint(len(labels), (batch_size,), generator=generator)
        with interchange(net, layer, positions, intervention, states[index]):
            loss = F.cross_entropy(net(base[index]), labels[index])
        if sparsity and isinstance(intervention, DifferentiableMask):
            loss = loss + sparsity * intervention.penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    intervention.eval()
    return losses


def localist_search(net: ToyNetwork, layer: int, positions: Sequence[int], train, test,
                    sizes: Sequence[int] = (1, 2, 4, 8), candidates: int = 64, seed: int = 0) -> dict:
    """Best single neuron or dims subset (by training IIA) and its test IIA.

    Every single neuron is tried; for larger sizes, ``candidates`` random subsets each.
    """
    width = net.shape()[layer][1]
    rng = random.Random(seed)
    subsets = [(i,) for i in range(width)]
    for size in sizes:
        if 1 < size < width:
            subsets += [tuple(sorted(rng.sample(range(width), size))) for _ in range(candidates)]
    best = max(subsets, key=lambda dims: toy_iia(net, layer, positions, build("dims", width, dims=dims), train))
    patch = build("dims", width, dims=best)
    return {"dims": list(best), "train_iia": toy_iia(net, layer, positions, patch, train),
            "iia": toy_iia(net, layer, positions, patch, test)}


def toy_search(net: ToyNetwork, model: CausalModel, variables: Sequence[str], featurizers: Sequence[Featurizer],
               layers: Sequence[int] | None = None, n_train: int = 2000, n_test: int = 500, seed: int = 0,
               epochs: int = 10, lr: float = 1e-2, progress: bool = False) -> pd.DataFrame:
    """IIA per variable, featurizer, layer and position (one row each), trained and scored in one call.

    Each cell derives its own balanced examples (``n_train`` + ``n_test``, seeded); trained
    featurizers fit on the first part, ``localist`` searches on it; IIA is on the rest.
    """
    shape = net.shape()
    layers = list(range(len(shape))) if layers is None else list(layers)
    cells = [(v, f, layer, p) for v in variables for f in featurizers for layer in layers for p in range(shape[layer][0])]
    rows, derived = [], {}
    for variable, featurizer, layer, position in tqdm(cells, desc="toy alignment", disable=not progress):
        if variable not in derived:
            examples = counterfactual_examples(model, [variable], n_train + n_test, seed=seed)
            derived[variable] = toy_tensors(net, examples.iloc[:n_train]), toy_tensors(net, examples.iloc[n_train:])
        train, test = derived[variable]
        width = shape[layer][1]
        row = {"variable": variable, "featurizer": featurizer.label, "kind": featurizer.kind, "layer": layer,
               "position": position}
        if featurizer.kind == "localist":
            found = localist_search(net, layer, [position], train, test, seed=seed)
            row.update(iia=found["iia"], train_iia=found["train_iia"], dims=str(found["dims"]))
        else:
            torch.manual_seed(seed)
            intervention = build(featurizer, width)
            fit(net, layer, [position], intervention, train, epochs=epochs, lr=lr, sparsity=featurizer.sparsity,
                seed=seed)
            row.update(iia=toy_iia(net, layer, [position], intervention, test),
                       train_iia=toy_iia(net, layer, [position], intervention, train))
            if isinstance(intervention, DifferentiableMask):
                row["dims"] = str(intervention.selected())
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["fit", "intervened_logits", "localist_search", "toy_iia", "toy_search", "toy_tensors"]
