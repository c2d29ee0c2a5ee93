"""Hidden states and the metric's gradient with respect to them, from one forward + backward.

Each site's state ``h`` is replaced in the forward by ``h + δ`` with ``δ`` a zero leaf tensor, so
``∂metric/∂δ = ∂metric/∂h`` is the *total* derivative through everything downstream (retaining
grads on the states themselves would need the model's parameters to require grad, and would cut
nothing either). ``torch.autograd.grad`` asks only for the δ's: no parameter gradient is made.

>>> states, grads, value = states_and_grads(hm, batch, [Site(2, "attn_out")], metric)   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from workbench import HookedModel, Site
from workbench.hooks import add_hook, hooks_installed
from workbench.metrics import Metric


def states_and_grads(hm: HookedModel, batch: Mapping[str, torch.Tensor], sites: Sequence[Site], metric: Metric,
                     ) -> tuple[dict[Site, torch.Tensor], dict[Site, torch.Tensor], torch.Tensor]:
    """(states, grads, metric values): full-width (B, T, W) states and d(sum of metric)/d(state)
    at each site (per-head ``z`` sites are read whole: slice heads afterwards), and the metric (B,)."""
    points = {}
    for site in sites:  # one hook per module and kind: per-head sites share the whole z
        whole = Site(site.layer, site.component)
        points[whole] = hm.layout.hook_point(whole)
    states: dict[Site, torch.Tensor] = {}
    deltas: dict[Site, torch.Tensor] = {}

    def perturb(site: Site):
        def fn(hidden: torch.Tensor) -> torch.Tensor:
            delta = torch.zeros_like(hidden, requires_grad=True)  # (B, T, W) leaf
            states[site], deltas[site] = hidden.detach(), delta
            return hidden + delta
        return fn

    installers = [lambda s=s, p=p: add_hook(p.module, p.kind, perturb(s)) for s, p in points.items()]
    with torch.enable_grad(), hooks_installed(installers):
        logits = hm.forward(batch, use_cache=False).logits  # (B, T, V)
        values = metric(logits, batch)  # (B,)
        order = list(points)
        grads = torch.autograd.grad(values.sum(), [deltas[s] for s in order], allow_unused=True)
    found = {s: (torch.zeros_like(states[s]) if g is None else g.detach()) for s, g in zip(order, grads)}
    return states, found, values.detach()
