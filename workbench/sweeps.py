"""Patching sweeps: layer x position and layer x head grids, many patched runs per forward.

Every cell is one patched run of the base prompt; many cells share each forward, so a sweep costs
a few forwards, not one per cell. The source run is cached once. Where layer stepping serves the
model (`workbench.layer_steps`), a cell at (layer L, position p) runs only blocks >= L on tokens
>= p, from the base run's cached states.

>>> df = patch_sweep(hm, "Paris is in the country of", "Rome is in the country of",
...                  target=" France", foil=" Italy")                      # doctest: +SKIP
>>> df.sort_values("normalized").tail(3)                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from .backends import check_backend
from .hooked import HookedModel
from .interventions import Patch
from .layer_steps import BaseRun, Cell, run_cells, stepping_supported
from .metrics import Metric, logit_difference
from .plan import PlanItem
from .positions import Indices
from .prefix_cells import last_token_kwargs, run_position_cells, supports_prefix_cache
from .sites import Site


def single_token_id(hm: HookedModel, text: str) -> int:
    """The id of ``text`` if it is exactly one token, else a clear error."""
    ids = hm.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = hm.tokenizer.convert_ids_to_tokens(ids)
        raise ValueError(
            f"{text!r} is {len(ids)} tokens for this tokenizer ({pieces}); the metric needs a single "
            f"token: try a leading space (' Paris') or another word"
        )
    return ids[0]


def _pair(hm: HookedModel, base: str, source: str):
    base_batch, source_batch = hm.tokenize(base), hm.tokenize(source)
    if base_batch["input_ids"].shape != source_batch["input_ids"].shape:
        raise ValueError(
            f"base and source must have the same number of tokens for a position sweep: base has "
            f"{base_batch['input_ids'].shape[1]}, source has {source_batch['input_ids'].shape[1]}"
        )
    return base_batch, source_batch


def _default_metric(hm: HookedModel, metric, target, foil) -> tuple[Metric, list[int] | None]:
    """The metric, and the (target, foil) ids when it is the default logit difference."""
    if metric is not None:
        return metric, None
    if target is None or foil is None:
        raise ValueError("give metric=, or target= and foil= tokens for the logit-difference metric")
    ids = [single_token_id(hm, target), single_token_id(hm, foil)]
    return logit_difference(*ids), ids


def metric_readout(hm: HookedModel, metric: Metric, ids: list[int] | None):
    """Final-normed last-token states (n, d) -> metric values (n,), for layer stepping.

    The default logit difference reads two logits, so it takes two rows of the unembedding
    instead of the whole (V, d) LM head; any other metric sees the full logits (n, 1, V).
    """
    head = hm.model.get_output_embeddings()
    if ids is not None:
        rows = torch.tensor(ids, device=head.weight.device)
        weight = head.weight[rows]  # (2, d)
        bias = None if getattr(head, "bias", None) is None else head.bias[rows]  # (2,)

        def readout(hidden: torch.Tensor) -> torch.Tensor:
            two = torch.nn.functional.linear(hidden.to(weight.device), weight, bias)  # (n, 2)
            return two[:, 0] - two[:, 1]
        return readout

    def readout(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden.to(head.weight.device))[:, None]  # (n, 1, V)
        return metric(logits, {"attention_mask": torch.ones(logits.shape[:2], dtype=torch.long, device=logits.device)})
    return readout


@torch.no_grad()
def _run_cells(hm: HookedModel, base_batch, layers_of_rows: list[int], items_for_layer: Callable,
               metric: Metric, batch_size: int) -> list[float]:
    """Run cells in chunks; ``items_for_layer(layer, rows)`` gives the plan items of one chunk."""
    from tqdm.auto import tqdm

    values: list[float] = []
    starts = range(0, len(layers_of_rows), batch_size)
    for start in tqdm(starts, desc="patched runs", unit="batch", leave=False, disable=len(starts) < 4):
        chunk = layers_of_rows[start:start + batch_size]
        n = len(chunk)
        batch = {k: v.expand(n, -1) for k, v in base_batch.items()}  # (n, T), no copy
        plan = [item for layer in sorted(set(chunk))
                for item in items_for_layer(layer, [r for r, l in enumerate(chunk) if l == layer], start)]
        logits = hm.run(batch, plan, **last_token_kwargs(hm))[:, -1:]  # (n, 1, V)
        ones = torch.ones(n, 1, dtype=torch.long, device=logits.device)
        values.extend(metric(logits, {"attention_mask": ones}).float().tolist())
    return values


@torch.no_grad()
def _with_baselines(hm, df, base_batch, source_batch, metric, values: tuple[float, float] | None = None):
    if values is None:
        values = (float(metric(hm.run(base_batch), base_batch)[0]), float(metric(hm.run(source_batch), source_batch)[0]))
    clean, patched = values
    df["base_value"], df["source_value"] = clean, patched
    # 0 = the base's value, 1 = the value the whole source run gives.
    df["normalized"] = (df["value"] - clean) / (patched - clean) if patched != clean else float("nan")
    return df


PATHS = ("auto", "stepped", "prefix", "copies")


def _path(hm: HookedModel, path: str, position_sweep: bool) -> str:
    """The sweep's execution path: ``auto`` takes the fastest one this model supports."""
    if path not in PATHS:
        raise ValueError(f"path={path!r}: expected one of {PATHS}; use 'auto' (the fastest this model supports)")
    if path == "auto":
        if stepping_supported(hm):
            return "stepped"
        return "prefix" if position_sweep and supports_prefix_cache(hm) else "copies"
    if path == "stepped" and not stepping_supported(hm):
        from .layer_steps import stepping_unsupported_reason
        raise ValueError(f"path='stepped' cannot run this model: {stepping_unsupported_reason(hm)}; use path='auto'")
    if path == "prefix" and not (position_sweep and supports_prefix_cache(hm)):
        raise ValueError("path='prefix' serves layer x position sweeps of causal models only; use path='auto'")
    return path


@torch.no_grad()
def _stepped(hm: HookedModel, base_batch, source_batch, sites: list[Site], make_cells: Callable,
             metric: Metric, ids: list[int] | None, batch_size: int) -> tuple[list[float], tuple[float, float]]:
    """Values of the cells ``make_cells(source_run)`` by layer stepping, and the two baselines."""
    readout = metric_readout(hm, metric, ids)
    source_run = BaseRun(hm, source_batch["input_ids"], sites)  # the source's states at every site
    base_run = BaseRun(hm, base_batch["input_ids"], sites)
    values = run_cells(hm, base_run, make_cells(source_run), readout, batch_size)
    baselines = (float(readout(base_run.final)[0]), float(readout(source_run.final)[0]))
    return values, baselines


def patch_sweep(hm: HookedModel, base: str, source: str, metric: Metric | None = None,
                target: str | None = None, foil: str | None = None, component: str = "resid_pre",
                layers: Sequence[int] | None = None, batch_size: int = 64, path: str = "auto",
                backend: str = "hooks", remote: bool = False) -> pd.DataFrame:
    """Patch the source's state at each (layer, position) into the base; one row per cell.

    Columns: layer, position, token, source_token, value (metric), base_value, source_value,
    normalized. Default metric: logit(target) - logit(foil) at the last token. Metrics see the
    last position's logits, shape (n, 1, V), with an all-ones mask (n, 1).

    Paths (``path="auto"`` picks the first that serves the model): ``stepped`` runs each cell
    from the base's cached state at its own layer and position (`workbench.layer_steps`:
    Llama/Mistral/Qwen2/Qwen3/Gemma/GPT-2 under eager or SDPA attention); ``prefix`` reuses the
    unchanged prefix's KV cache but runs every layer (other causal models: GPT-NeoX, Gemma2/3);
    ``copies`` runs whole patched copies (BERT-style models).
    """
    metric, ids = _default_metric(hm, metric, target, foil)
    if check_backend(backend, remote) == "nnsight":  # each batch of cells one nnsight trace (remote: NDIF)
        from .backends.nnsight_sweeps import nnsight_patch_sweep
        return nnsight_patch_sweep(hm, base, source, metric, component, layers, batch_size, remote)
    base_batch, source_batch = _pair(hm, base, source)
    layers = list(range(hm.n_layers)) if layers is None else list(layers)
    n_tokens = base_batch["input_ids"].shape[1]
    cells = [(layer, pos) for layer in layers for pos in range(n_tokens)]
    path = _path(hm, path, position_sweep=True)
    baselines = None
    if path == "stepped":
        sites = [Site(layer, component) for layer in layers]

        def make_cells(run: BaseRun) -> list[Cell]:
            return [Cell(Site(layer, component), (pos,), run.state(Site(layer, component), [pos]))
                    for layer, pos in cells]
        values, baselines = _stepped(hm, base_batch, source_batch, sites, make_cells, metric, ids, batch_size)
    else:
        acts = hm.cache(source_batch, [Site(layer, component) for layer in layers])
    if path == "prefix":  # causal: cells at position p share the prefix 0..p-1
        values = run_position_cells(hm, base_batch, cells, lambda layer: Site(layer, component),
                                    lambda layer, pos: acts[Site(layer, component)][0, pos], metric, batch_size)
    elif path == "copies":
        def items_for_layer(layer, rows, offset):
            n = min(batch_size, len(cells) - offset)
            index_rows = [[cells[offset + r][1]] if r in rows else [] for r in range(n)]
            site = Site(layer, component)
            values = acts[site][0, [cells[offset + r][1] if r in rows else 0 for r in range(n)]]  # (n, d)
            return [PlanItem(site, Indices(index_rows), Patch(), source_values=values[:, None])]
        values = _run_cells(hm, base_batch, [c[0] for c in cells], items_for_layer, metric, batch_size)
    tokens = [hm.tokenizer.decode([i]) for i in base_batch["input_ids"][0].tolist()]
    source_tokens = [hm.tokenizer.decode([i]) for i in source_batch["input_ids"][0].tolist()]
    df = pd.DataFrame({"layer": [c[0] for c in cells], "position": [c[1] for c in cells],
                       "token": [tokens[c[1]] for c in cells],
                       "source_token": [source_tokens[c[1]] for c in cells], "value": values})
    df.attrs.update(kind="layer x position", component=component, path=path)
    return _with_baselines(hm, df, base_batch, source_batch, metric, baselines)


def head_sweep(hm: HookedModel, base: str, source: str, metric: Metric | None = None,
               target: str | None = None, foil: str | None = None, layers: Sequence[int] | None = None,
               batch_size: int = 64, path: str = "auto",
               backend: str = "hooks", remote: bool = False) -> pd.DataFrame:
    """Patch each head's output (all positions, before the output projection) from the source.

    Columns: layer, head, value, base_value, source_value, normalized. Paths as in
    `patch_sweep`, without ``prefix`` (a head patch changes every position): ``stepped`` runs
    each cell from its own layer up; ``copies`` (other families) runs whole patched copies.
    """
    metric, ids = _default_metric(hm, metric, target, foil)
    if check_backend(backend, remote) == "nnsight":  # each batch of cells one nnsight trace (remote: NDIF)
        from .backends.nnsight_sweeps import nnsight_head_sweep
        return nnsight_head_sweep(hm, base, source, metric, layers, batch_size, remote)
    base_batch, source_batch = _pair(hm, base, source)
    layers = list(range(hm.n_layers)) if layers is None else list(layers)
    n_heads, n_tokens = hm.layout.n_heads, base_batch["input_ids"].shape[1]
    cells = [(layer, head) for layer in layers for head in range(n_heads)]
    path = _path(hm, path, position_sweep=False)
    if path == "stepped":
        every = tuple(range(n_tokens))

        def make_cells(run: BaseRun) -> list[Cell]:
            return [Cell(Site(layer, "z", head=head), every, run.state(Site(layer, "z", head=head), every))
                    for layer, head in cells]
        values, baselines = _stepped(hm, base_batch, source_batch, [Site(layer, "z") for layer in layers],
                                     make_cells, metric, ids, batch_size)
        df = pd.DataFrame({"layer": [c[0] for c in cells], "head": [c[1] for c in cells], "value": values})
        df.attrs.update(kind="layer x head", component="z", path=path)
        return _with_baselines(hm, df, base_batch, source_batch, metric, baselines)
    acts = hm.cache(source_batch, [Site(layer, "z") for layer in layers])

    def items_for_layer(layer, rows, offset):
        n = min(batch_size, len(cells) - offset)
        width = acts[Site(layer, "z")].shape[-1]
        head_dim = width // n_heads
        channels = torch.zeros(n, 1, width, dtype=torch.bool, device=hm.device)  # (n, 1, W)
        for r in rows:
            head = cells[offset + r][1]
            channels[r, 0, head * head_dim:(head + 1) * head_dim] = True
        index_rows = [list(range(n_tokens)) if r in rows else [] for r in range(n)]
        values = acts[Site(layer, "z")].expand(n, -1, -1)  # (n, T, W)
        return [PlanItem(Site(layer, "z"), Indices(index_rows), Patch(dims=channels), source_values=values)]

    values = _run_cells(hm, base_batch, [c[0] for c in cells], items_for_layer, metric, batch_size)
    df = pd.DataFrame({"layer": [c[0] for c in cells], "head": [c[1] for c in cells], "value": values})
    df.attrs.update(kind="layer x head", component="z", path=path)
    return _with_baselines(hm, df, base_batch, source_batch, metric)
