"""Layer stepping: run patched cells from the base run's cached state at their own layer.

A cell writes source values at one site (layer L) and positions >= s of the base prompt. In a
causal model nothing changes at positions < s (any layer) or below layer L (any position), so a
cell needs only blocks L.. on tokens s..T-1: their input at layer L is the base's resid_pre
there, and the keys/values of tokens < s are the base's, taken from one cached base run.

Cells with the same first position s run together; rows are ordered by layer and the batch is
stepped block by block with the model's own decoder layers (its attention, rotary tables and
causal-mask builders): the cells starting at layer l join the batch when the loop reaches l.
Summed over a 30-layer x 6-token sweep this is 465 x 21 = 9,765 layer-tokens instead of the
32,400 of one full forward per cell. Cells whose values equal the base's own state there are the
base run itself and run nothing (e.g. layer-0 cells at tokens the two prompts share).

Supported: the families in ``STEPPED_FAMILIES`` under eager or SDPA attention, with a final norm
and a plain LM head (no logit soft-capping). `stepping_supported` says why not otherwise;
`workbench.sweeps` then falls back to the prefix-KV path (causal models) or whole copies (BERT).

>>> base = BaseRun(hm, hm.tokenize("Paris is in")["input_ids"], [Site(1, "resid_pre")])   # doctest: +SKIP
>>> run_cells(hm, base, [Cell(Site(1, "resid_pre"), (2,), source[0, 2:3])], readout)      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .base_run import BaseRun, PrefixCache
from .hooked import HookedModel
from .hooks import add_hook, hooks_installed
from .sites import Site

STEPPED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2")
ROTARY_FREE = ("gpt2",)  # learned position embeddings, added before block 0: nothing to pass per block

Readout = Callable[[torch.Tensor], torch.Tensor]  # final-normed last-token states (n, d) -> values (n,)


def stepping_unsupported_reason(hm: HookedModel) -> str | None:
    """Why `run_cells` cannot serve ``hm`` (None when it can)."""
    config = hm.model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in STEPPED_FAMILIES:
        return f"model type {model_type!r} is not one of {STEPPED_FAMILIES}"
    attention = getattr(config, "_attn_implementation", "eager")
    if attention not in ("eager", "sdpa"):
        return f"attention implementation {attention!r} (layer stepping passes explicit masks: eager or sdpa)"
    if getattr(config, "final_logit_softcapping", None) or hm.layout.final_norm is None:
        return "the LM head is not final norm + linear unembedding"
    if model_type not in ROTARY_FREE and not hasattr(hm.model.base_model, "rotary_emb"):
        return "the base model has no shared rotary_emb"
    return None


def stepping_supported(hm: HookedModel) -> bool:
    """Whether `run_cells` serves this model (see `stepping_unsupported_reason`)."""
    return stepping_unsupported_reason(hm) is None


@dataclass(frozen=True)
class Cell:
    """One patched run of the base prompt: ``values`` (k, d) written at ``site``, at ``positions``.

    ``positions`` are ascending token indices; ``d`` is the site's size (a head's slice for
    ``Lℓ.headh.z``). The cell starts at ``site.layer`` and at ``positions[0]``.
    """

    site: Site
    positions: tuple[int, ...]
    values: torch.Tensor  # (k, d)

    @property
    def start(self) -> int:
        return self.positions[0]


class _Group:
    """Cells sharing a first position s: masks, rotary tables and prefix of tokens s..T-1."""

    def __init__(self, hm: HookedModel, base: BaseRun, start: int) -> None:
        from transformers import DynamicCache
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        config, model = hm.model.config, hm.model.base_model
        n_tokens = base.input_ids.shape[1]
        self.start = start
        probe = base.block_inputs[0][:, start:]  # (1, S, d): dtype, device and length for the builders
        self.position_ids = torch.arange(start, n_tokens, device=probe.device)[None]  # (1, S)
        self.cache = PrefixCache([k[:, :, :start] for k in base.keys], [v[:, :, :start] for v in base.values])
        # only tells the mask builders the prefix length; no config, so every layer is a full
        # one (a sliding-window layer would keep fewer keys than PrefixCache hands attention)
        filled = DynamicCache()
        if start > 0:
            for index in range(hm.n_layers):
                filled.update(self.cache.keys[index], self.cache.values[index], index)
        args = dict(config=config, inputs_embeds=probe, attention_mask=None, cache=filled,
                    position_ids=self.position_ids)
        kinds = [_mask_kind(config, i) for i in range(hm.n_layers)]
        builders = {"full_attention": create_causal_mask, "sliding_attention": create_sliding_window_causal_mask}
        built = {kind: builders[kind](**args) for kind in set(kinds)}  # (1, 1, S, s + S) or None (causal)
        self.masks = [built[kind] for kind in kinds]
        self.position_embeddings = None
        if getattr(config, "model_type", None) not in ROTARY_FREE:
            self.position_embeddings = model.rotary_emb(probe, position_ids=self.position_ids)  # (cos, sin)


def _mask_kind(config, index: int) -> str:
    types = getattr(config, "layer_types", None)
    if types is not None:
        return types[index]
    if getattr(config, "model_type", "") == "mistral" and getattr(config, "sliding_window", None):
        return "sliding_attention"
    return "full_attention"


def _writer(hm: HookedModel, cells: list[Cell], rows: list[int], firsts: list[int]):
    """A hook writing each cell's values at batch row ``rows[i]``, tokens from ``firsts[i]`` on
    (the hooked tensor holds a row's tokens start..T-1 from that index)."""
    point = hm.layout.hook_point(cells[0].site)
    device = cells[0].values.device
    row_index = torch.tensor(rows, device=device)[:, None]  # (n, 1)
    index = torch.tensor([[first + p - c.start for p in c.positions] for c, first in zip(cells, firsts)],
                         device=device)  # (n, k)
    values = torch.stack([c.values for c in cells])  # (n, k, d)

    def write(hidden: torch.Tensor) -> None:
        view = hidden if point.head_slice is None else hidden[..., point.head_slice]  # (R, S, d)
        view[row_index.to(view.device), index.to(view.device)] = values.to(view.device, view.dtype)
    return point, write


def _installers(hm: HookedModel, joining: list[Cell], rows: list[int], firsts: list[int]) -> list:
    """Hooks for the cells joining at one layer: one per run of cells with the same site and
    number of positions, so each hook is a single index_put_ (a head sweep has one run per
    head, a position sweep one run)."""
    runs: list[list[int]] = []
    for j, cell in enumerate(joining):
        kind = (cell.site, len(cell.positions))
        if runs and (joining[runs[-1][0]].site, len(joining[runs[-1][0]].positions)) == kind:
            runs[-1].append(j)
        else:
            runs.append([j])
    installers = []
    for run in runs:
        point, write = _writer(hm, [joining[j] for j in run], [rows[j] for j in run], [firsts[j] for j in run])
        installers.append(lambda point=point, write=write: add_hook(point.module, point.kind, write))
    return installers


def _read_tokens_only(hm: HookedModel, layer: int, index: torch.Tensor, joining: list[Cell]) -> list:
    """Hooks making the last block's MLP run on the read tokens ``index`` alone (dim 1).

    Only each row's last token reaches the readout, and in the last block nothing mixes tokens
    after attention: the MLP's output at the other tokens is never read. They get zeros (their
    residual stream stays, unread). Not done when a joining cell writes inside that MLP
    (mlp_out, mlp_act): its hook needs every token. Saves about 5/6 of one MLP per cell on a
    6-token prompt (a few percent of a 30-layer sweep).
    """
    mlp = getattr(hm.layout.blocks[layer], "mlp", None)
    if not isinstance(mlp, torch.nn.Module):
        return []
    inside = set(mlp.modules())
    if any(hm.layout.hook_point(cell.site).module in inside for cell in joining):
        return []
    shape: list[torch.Size] = []

    def take(hidden: torch.Tensor) -> torch.Tensor:  # (R, S, d) -> (R, n, d)
        shape[:] = [hidden.shape]
        return hidden[:, index.to(hidden.device)]

    def put(out: torch.Tensor) -> torch.Tensor:  # (R, n, d) -> (R, S, d)
        full = out.new_zeros(shape[0][:-1] + out.shape[-1:])
        full[:, index.to(out.device)] = out
        return full
    return [lambda: add_hook(mlp, "input", take), lambda: add_hook(mlp, "output", put)]


@torch.no_grad()
def _run_chunk(hm: HookedModel, base: BaseRun, group: _Group, cells: list[Cell], readout: Readout) -> torch.Tensor:
    """Cells (sorted by layer) of one group: step blocks from the lowest layer; values (n,)."""
    blocks, start = hm.layout.blocks, group.start
    x = None  # (R, S, d): the rows that have joined so far
    kwargs = {} if group.position_embeddings is None else {"position_embeddings": group.position_embeddings}
    i = 0
    for layer in range(cells[0].site.layer, hm.n_layers):
        joining = []
        while i < len(cells) and cells[i].site.layer == layer:
            joining.append(cells[i])
            i += 1
        installers = []
        if joining:
            first_row = 0 if x is None else x.shape[0]
            fresh = base.block_inputs[layer][:, start:].expand(len(joining), -1, -1)  # (n, S, d)
            x = fresh.clone() if x is None else torch.cat([x, fresh.to(x.device)])  # (R, S, d)
            rows = list(range(first_row, first_row + len(joining)))
            installers = _installers(hm, joining, rows, [0] * len(joining))
        if layer == hm.n_layers - 1:
            installers += _read_tokens_only(hm, layer, torch.tensor([x.shape[1] - 1]), joining)
        block = blocks[layer]
        with hooks_installed(installers):
            x = block(x, attention_mask=group.masks[layer], position_ids=group.position_ids,
                      cache=group.cache, use_cache=True, **kwargs)  # (R, S, d)
        x = x if isinstance(x, torch.Tensor) else x[0]
    last = hm.layout.final_norm(x[:, -1])  # (n, d)
    return readout(last)


@torch.no_grad()
def plain_suffix_readout(hm: HookedModel, base: BaseRun, layer: int, start: int, readout: Readout) -> torch.Tensor:
    """One cell's work without the patch: blocks ``layer..`` on tokens ``start..`` (the base's
    keys/values before ``start``), final norm, ``readout``; values (1,). The unit of the compute
    floor in benchmarks/sweep_vs_peers.py (one such forward per cell).
    """
    group = _Group(hm, base, start)
    kwargs = {} if group.position_embeddings is None else {"position_embeddings": group.position_embeddings}
    x = base.block_inputs[layer][:, start:]  # (1, S, d)
    for index in range(layer, hm.n_layers):
        x = hm.layout.blocks[index](x, attention_mask=group.masks[index], position_ids=group.position_ids,
                                    cache=group.cache, use_cache=True, **kwargs)  # (1, S, d)
        x = x if isinstance(x, torch.Tensor) else x[0]
    return readout(hm.layout.final_norm(x[:, -1]))


def _packed_masks(config, kinds: set[str], row: torch.Tensor, pos: torch.Tensor, start: torch.Tensor,
                  n_tokens: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Additive masks (1, 1, N, T + N) for packed rows: keys are the base's T tokens, then the N
    packed ones. A packed token (row r, position q) sees the base's tokens before r's start and
    the tokens of row r up to q; sliding-window layers also drop keys q - k >= window (as HF's
    ``sliding_window_overlay``)."""
    base_pos = torch.arange(n_tokens, device=pos.device)  # (T,)
    key_pos = torch.cat([base_pos, pos])  # (T + N,)
    seen = torch.cat([base_pos[None, :] < start[:, None],  # (N, T): the base's prefix of each row
                      (row[:, None] == row[None, :]) & (pos[None, :] <= pos[:, None])], dim=1)  # (N, T + N)
    masks = {}
    for kind in kinds:
        allowed = seen
        if kind == "sliding_attention":
            allowed = seen & (pos[:, None] - key_pos[None, :] < config.sliding_window)
        zero = torch.zeros((), dtype=dtype, device=pos.device)
        masks[kind] = torch.where(allowed, zero, torch.finfo(dtype).min)[None, None]  # (1, 1, N, T + N)
    return masks


@torch.no_grad()
def _run_packed(hm: HookedModel, base: BaseRun, cells: list[Cell], readout: Readout) -> torch.Tensor:
    """Cells (sorted by layer) with different first positions, packed into one sequence.

    Each cell is a row of tokens start..T-1 laid end to end along the sequence (1, N, d), so
    every linear layer sees all rows' tokens at once (few tokens per row would leave matrix
    products too small to run well). Attention keeps rows apart with `_packed_masks`; the cache
    hands every layer the base's keys/values of all T tokens first.
    """
    config, model = hm.model.config, hm.model.base_model
    n_tokens = base.input_ids.shape[1]
    kinds = [_mask_kind(config, i) for i in range(hm.n_layers)]
    cache = PrefixCache(base.keys, base.values)  # (1, kv_heads, T, hd) per layer, batch 1
    device = base.block_inputs[0].device
    row = pos = start = x = None  # per packed token (N,); x (1, N, d)
    lasts: list[int] = []  # each row's last token in the packed sequence
    i, masks, kwargs = 0, None, {}
    for layer in range(cells[0].site.layer, hm.n_layers):
        installers = []
        if i < len(cells) and cells[i].site.layer == layer:
            joining = []
            while i < len(cells) and cells[i].site.layer == layer:
                joining.append(cells[i])
                i += 1
            first = 0 if x is None else x.shape[1]
            offsets, new_row, new_pos = [], [], []
            for cell in joining:
                offsets.append(first + sum(n_tokens - c.start for c in joining[:len(offsets)]))
                new_pos.append(torch.arange(cell.start, n_tokens, device=device))
                new_row.append(torch.full((n_tokens - cell.start,), len(lasts), device=device))
                lasts.append(offsets[-1] + n_tokens - cell.start - 1)
            fresh = torch.cat([base.block_inputs[layer][0, c.start:] for c in joining])[None]  # (1, n, d)
            x = fresh if x is None else torch.cat([x, fresh.to(x.device)], dim=1)  # (1, N, d)
            row = torch.cat([t for t in (row, *new_row) if t is not None])
            pos = torch.cat([t for t in (pos, *new_pos) if t is not None])
            start = torch.cat([t for t in (start, *[torch.full_like(p, c.start) for p, c in zip(new_pos, joining)])
                               if t is not None])
            masks = _packed_masks(config, set(kinds[layer:]), row, pos, start, n_tokens, x.dtype)
            if getattr(config, "model_type", None) not in ROTARY_FREE:
                kwargs = {"position_embeddings": model.rotary_emb(x, position_ids=pos[None])}  # (cos, sin)
            installers = _installers(hm, joining, [0] * len(joining), offsets)
        if layer == hm.n_layers - 1:
            installers += _read_tokens_only(hm, layer, torch.tensor(lasts), joining if installers else [])
        with hooks_installed(installers):
            x = hm.layout.blocks[layer](x, attention_mask=masks[kinds[layer]], position_ids=pos[None],
                                        cache=cache, use_cache=True, **kwargs)  # (1, N, d)
        x = x if isinstance(x, torch.Tensor) else x[0]
    last = hm.layout.final_norm(x[0, torch.tensor(lasts, device=x.device)])  # (n, d)
    return readout(last)


@torch.no_grad()
def run_cells(hm: HookedModel, base: BaseRun, cells: Sequence[Cell], readout: Readout,
              batch_size: int = 64, max_tokens: int = 256) -> list[float]:
    """``readout`` of each cell's final-normed last-token state, in the order given.

    Cells whose values equal the base's recorded state are the base run. The rest are sorted by
    layer and stepped together, up to ``batch_size`` cells at a time: when they all start at
    the same token (head sweeps) as rows of one batch (R, S, d); otherwise packed end to end in
    one sequence (`_run_packed`) of at most ``max_tokens`` tokens (its attention is quadratic in
    the packed length), a cell whose suffix alone is longer running by itself.
    """
    out: list[float | None] = [None] * len(cells)
    base_value = None
    by_start: dict[int, list[int]] = {}
    for index, cell in enumerate(cells):
        own = base.state(cell.site, cell.positions)
        if own is not None and torch.equal(own, cell.values.to(own.device, own.dtype)):
            if base_value is None:
                base_value = float(readout(base.final)[0])
            out[index] = base_value
        else:
            by_start.setdefault(cell.start, []).append(index)
    pending = sorted((i for members in by_start.values() for i in members),
                     key=lambda i: (cells[i].site.layer, cells[i].start))
    n_tokens = base.input_ids.shape[1]
    chunks, size = [], 0
    if len(by_start) == 1:  # one first position: rows of a batch
        chunks = [pending[j:j + batch_size] for j in range(0, len(pending), batch_size)]
    else:
        for i in pending:
            length = n_tokens - cells[i].start
            if chunks and len(chunks[-1]) < batch_size and size + length <= max_tokens:
                chunks[-1].append(i)
                size += length
            else:
                chunks.append([i])
                size = length
    group = None
    with hm.lock:
        for chunk in tqdm(chunks, desc="patched runs", unit="batch", leave=False, disable=len(chunks) < 4):
            members = [cells[i] for i in chunk]
            if len(by_start) == 1:
                group = group or _Group(hm, base, members[0].start)
                values = _run_chunk(hm, base, group, members, readout)
            else:
                values = _run_packed(hm, base, members, readout)
            for index, value in zip(chunk, values.float().tolist()):
                out[index] = value
    return out
