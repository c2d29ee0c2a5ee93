"""The cached base run layer stepping starts from (`workbench.layer_steps`): one forward of the
base prompt that keeps every block's input, the keys/values and the final state, and the cache
shim that hands a block's attention the base's prefix keys/values.

>>> base = BaseRun(hm, hm.tokenize("Paris is in")["input_ids"], [Site(1, "resid_pre")])   # doctest: +SKIP
>>> base.state(Site(1, "resid_pre"), [2]).shape                                          # doctest: +SKIP
torch.Size([1, 576])
"""

from __future__ import annotations

from typing import Sequence

import torch

from .hooked import HookedModel
from .hooks import add_hook, hooks_installed
from .sites import Site


class PrefixCache:
    """What decoder attention asks of a cache: ``update`` puts the base's prefix keys/values first.

    A DynamicCache holds one batch size per layer; here the batch grows as cells join, so the
    shared prefix (1, kv_heads, s, head_dim) is expanded to the current rows on every update.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.keys, self.values = keys, values  # per layer (1, kv_heads, s, head_dim)

    def update(self, keys, values, layer_idx, *args, **kwargs):
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        if old_k.shape[-2] == 0:
            return keys, values
        rows = keys.shape[0]
        return (torch.cat([old_k.expand(rows, -1, -1, -1), keys], dim=-2),  # (R, kv_heads, s + S, hd)
                torch.cat([old_v.expand(rows, -1, -1, -1), values], dim=-2))


class BaseRun:
    """One forward of the base prompt (1, T): every block's input, keys/values, final state.

    ``states[site]`` (1, T, W) are the base's own values at ``sites`` (to spot no-op cells).
    """

    @torch.no_grad()
    def __init__(self, hm: HookedModel, input_ids: torch.Tensor, sites: Sequence[Site] = ()) -> None:
        from transformers import DynamicCache

        self.hm, self.input_ids = hm, input_ids  # (1, T)
        points = {site: hm.layout.hook_point(Site(site.layer, site.component)) for site in sites}
        self.block_inputs: list[torch.Tensor] = [None] * hm.n_layers  # per layer (1, T, d)
        self.states: dict[Site, torch.Tensor] = {}

        def keep(store, key):
            def read(hidden: torch.Tensor) -> None:
                store[key] = hidden.detach().clone()
            return read

        installers = [lambda i=i, b=b: add_hook(b, "input", keep(self.block_inputs, i))
                      for i, b in enumerate(hm.layout.blocks)]
        installers += [lambda s=s, p=p: add_hook(p.module, p.kind, keep(self.states, Site(s.layer, s.component)))
                       for s, p in points.items()]
        cache = DynamicCache()  # no config: sliding-window layers keep every key too (prefixes slice them)
        with hm.lock, hooks_installed(installers):
            out = hm.model.base_model(input_ids=input_ids, cache=cache, use_cache=True)
        self.final = out.last_hidden_state[:, -1]  # (1, d), after the final norm
        self.keys = [layer.keys for layer in cache.layers]  # per layer (1, kv_heads, T, hd)
        self.values = [layer.values for layer in cache.layers]

    def state(self, site: Site, positions: Sequence[int]) -> torch.Tensor | None:
        """The base's own value at ``site`` and ``positions`` (k, d), if it was recorded."""
        full = self.states.get(Site(site.layer, site.component))
        if full is None:
            return None
        point = self.hm.layout.hook_point(site)
        view = full[0] if point.head_slice is None else full[0, :, point.head_slice]  # (T, d)
        return view[list(positions)]


__all__ = ["BaseRun", "PrefixCache"]
