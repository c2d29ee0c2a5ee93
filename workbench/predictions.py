"""Next-token predictions as tables, with or without a plan.

>>> top_k_next_tokens(hm, "The capital of France is", k=3)       # doctest: +SKIP
   rank  token     id  probability  logit
0     1  " Paris"  ...
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from .hooked import HookedModel, Inputs
from .metrics import last_token_logits
from .plan import PlanItem


@torch.no_grad()
def top_k_next_tokens(hm: HookedModel, text: Inputs, k: int = 10, plan: Sequence[PlanItem] = (),
                      sources=None) -> pd.DataFrame:
    """The ``k`` most likely next tokens after the (first) prompt: rank, token, id, probability, logit."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    batch = hm.tokenize(text)
    logits = last_token_logits(hm.run(batch, plan, sources), batch)[0].float()  # (V,)
    probs = logits.softmax(-1)  # (V,)
    top = probs.topk(min(k, probs.shape[0]))
    ids = top.indices.tolist()
    return pd.DataFrame({
        "rank": range(1, len(ids) + 1),
        "token": [repr(hm.tokenizer.decode([i])) for i in ids],
        "id": ids,
        "probability": top.values.tolist(),
        "logit": logits[top.indices].tolist(),
    })


def cell_plan(site, position: int) -> list[PlanItem]:
    """The plan of one sweep cell: patch ``site`` at one base position from the source."""
    from .interventions import Patch
    return [PlanItem(site, [position], Patch())]
