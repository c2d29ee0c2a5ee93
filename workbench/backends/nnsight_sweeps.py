"""Patching sweeps as nnsight traces: `patch_sweep`/`head_sweep` with ``backend="nnsight"``.

The grids, tables and baselines are those of `workbench.sweeps`; each batch of cells is one
patched forward (whole copies of the base stacked along the batch) run by
`nnsight_backend.run_plan`, and the source states come from one nnsight trace. So a sweep can
run on NDIF (``remote=True``) with no model weights on the local machine. The hooks backend's
faster paths (prefix KV cache, layer stepping) need local control of the forward and are not
used here.

>>> df = patch_sweep(hm, base, source, target=" France", foil=" Italy", backend="nnsight")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
import torch

from ..interventions import Patch
from ..metrics import Metric
from ..plan import PlanItem
from ..positions import Indices
from ..prefix_cells import last_token_kwargs
from ..sites import Site
from .nnsight_backend import cache, run_plan


def _pair(hm, base: str, source: str) -> tuple[dict, dict]:
    base_batch, source_batch = hm.tokenize(base), hm.tokenize(source)
    if base_batch["input_ids"].shape != source_batch["input_ids"].shape:
        raise ValueError(
            f"base and source must have the same number of tokens for a sweep: base has "
            f"{base_batch['input_ids'].shape[1]}, source has {source_batch['input_ids'].shape[1]}; "
            f"reword one of them")
    return base_batch, source_batch


@torch.no_grad()
def _cells(hm, base_batch: dict, layers_of_rows: list[int], items_for_chunk: Callable, metric: Metric,
           batch_size: int, remote: bool) -> list[float]:
    """Metric values of the cells, ``batch_size`` patched copies of the base per trace."""
    from tqdm.auto import tqdm

    values: list[float] = []
    starts = range(0, len(layers_of_rows), batch_size)
    for start in tqdm(starts, desc="patched traces", unit="batch", leave=False, disable=len(starts) < 4):
        n = min(batch_size, len(layers_of_rows) - start)
        batch = {k: v.expand(n, -1) for k, v in base_batch.items()}  # (n, T), no copy
        logits = run_plan(hm, batch, items_for_chunk(start, n), remote=remote, **last_token_kwargs(hm))[:, -1:]  # (n, 1, V)
        ones = torch.ones(n, 1, dtype=torch.long, device=logits.device)
        values.extend(metric(logits, {"attention_mask": ones}).float().tolist())
    return values


@torch.no_grad()
def _with_baselines(hm, df: pd.DataFrame, base_batch, source_batch, metric: Metric, remote: bool) -> pd.DataFrame:
    clean = float(metric(run_plan(hm, base_batch, remote=remote), base_batch)[0])
    patched = float(metric(run_plan(hm, source_batch, remote=remote), source_batch)[0])
    df["base_value"], df["source_value"] = clean, patched
    # 0 = the base's value, 1 = the value the whole source run gives.
    df["normalized"] = (df["value"] - clean) / (patched - clean) if patched != clean else float("nan")
    return df


def nnsight_patch_sweep(hm, base: str, source: str, metric: Metric, component: str = "resid_pre",
                        layers: Sequence[int] | None = None, batch_size: int = 64,
                        remote: bool = False) -> pd.DataFrame:
    """`workbench.sweeps.patch_sweep` (layer x position) with every batch of cells an nnsight trace.

    >>> nnsight_patch_sweep(hm, "Paris is in", "Rome is in", metric).shape       # doctest: +SKIP
    """
    base_batch, source_batch = _pair(hm, base, source)
    layers = list(range(hm.n_layers)) if layers is None else list(layers)
    n_tokens = base_batch["input_ids"].shape[1]
    cells = [(layer, pos) for layer in layers for pos in range(n_tokens)]
    acts = cache(hm, source_batch, [Site(layer, component) for layer in layers], remote=remote)

    def items_for_chunk(start: int, n: int) -> list[PlanItem]:
        chunk = cells[start:start + n]
        items = []
        for layer in sorted({layer for layer, _ in chunk}):
            site = Site(layer, component)
            index_rows = [[pos] if l == layer else [] for l, pos in chunk]  # one patched token per row
            states = acts[site][0, [pos if l == layer else 0 for l, pos in chunk]]  # (n, d)
            items.append(PlanItem(site, Indices(index_rows), Patch(), source_values=states[:, None]))
        return items

    values = _cells(hm, base_batch, [c[0] for c in cells], items_for_chunk, metric, batch_size, remote)
    tokens = [hm.tokenizer.decode([i]) for i in base_batch["input_ids"][0].tolist()]
    source_tokens = [hm.tokenizer.decode([i]) for i in source_batch["input_ids"][0].tolist()]
    df = pd.DataFrame({"layer": [c[0] for c in cells], "position": [c[1] for c in cells],
                       "token": [tokens[c[1]] for c in cells],
                       "source_token": [source_tokens[c[1]] for c in cells], "value": values})
    df.attrs.update(kind="layer x position", component=component, path="nnsight")
    return _with_baselines(hm, df, base_batch, source_batch, metric, remote)


def nnsight_head_sweep(hm, base: str, source: str, metric: Metric, layers: Sequence[int] | None = None,
                       batch_size: int = 64, remote: bool = False) -> pd.DataFrame:
    """`workbench.sweeps.head_sweep` (layer x head, all positions) with every batch of cells an
    nnsight trace.

    >>> nnsight_head_sweep(hm, "Paris is in", "Rome is in", metric).shape        # doctest: +SKIP
    """
    base_batch, source_batch = _pair(hm, base, source)
    layers = list(range(hm.n_layers)) if layers is None else list(layers)
    n_heads, n_tokens = hm.layout.n_heads, base_batch["input_ids"].shape[1]
    cells = [(layer, head) for layer in layers for head in range(n_heads)]
    acts = cache(hm, source_batch, [Site(layer, "z") for layer in layers], remote=remote)

    def items_for_chunk(start: int, n: int) -> list[PlanItem]:
        chunk = cells[start:start + n]
        items = []
        for layer in sorted({layer for layer, _ in chunk}):
            site = Site(layer, "z")
            width = acts[site].shape[-1]
            head_dim = width // n_heads
            channels = torch.zeros(n, 1, width, dtype=torch.bool, device=acts[site].device)  # (n, 1, W)
            for row, (l, head) in enumerate(chunk):
                if l == layer:
                    channels[row, 0, head * head_dim:(head + 1) * head_dim] = True
            index_rows = [list(range(n_tokens)) if l == layer else [] for l, _ in chunk]
            states = acts[site].expand(n, -1, -1)  # (n, T, W)
            items.append(PlanItem(site, Indices(index_rows), Patch(dims=channels), source_values=states))
        return items

    values = _cells(hm, base_batch, [c[0] for c in cells], items_for_chunk, metric, batch_size, remote)
    df = pd.DataFrame({"layer": [c[0] for c in cells], "head": [c[1] for c in cells], "value": values})
    df.attrs.update(kind="layer x head", component="z", path="nnsight")
    return _with_baselines(hm, df, base_batch, source_batch, metric, remote)
