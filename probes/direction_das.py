"""The one-dimensional DAS direction: a learned unit vector u such that patching the source's
projection onto it, ``b + u (uᵀs − uᵀb)``, makes the model give the source's answer.

Built on the DAS issue's trainer (`workbench.das.train_alignment` with a rank-1
`LowRankRotatedSpaceIntervention`); this module only turns contrast pairs into counterfactual
data and the trained row into an oriented direction.

>>> u = das_direction(hm, "L6.resid_post", pairs, positions=[5, 8])    # doctest: +SKIP
>>> u.shape                                                            # doctest: +SKIP
torch.Size([576])
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from workbench.das import CounterfactualData, LowRankRotatedSpaceIntervention, TrainConfig, evaluate, train_alignment
from workbench.hooked import HookedModel
from workbench.sites import Site

from workbench.data.reviews import check_single_tokens


def counterfactual_pairs(hm: HookedModel, pairs: pd.DataFrame, positions: Sequence[int]) -> CounterfactualData:
    """Contrast pairs (columns clean, flipped, answer) -> DAS data: base = flipped, source = clean,
    label = the clean prompt's answer, intervened at the same token ``positions`` in both."""
    missing = {"clean", "flipped", "answer"} - set(pairs.columns)
    if missing:
        raise ValueError(f"pairs lack columns {sorted(missing)}; build them with workbench.data.reviews.contrast_pairs")
    labels = check_single_tokens(hm.tokenizer, pairs["answer"])
    spots = [list(positions)] * len(pairs)
    return CounterfactualData.from_texts(hm.tokenizer, list(pairs["flipped"]), list(pairs["clean"]), labels,
                                         spots, spots, meta=pairs.reset_index(drop=True))


def das_direction(hm: HookedModel, site: Site | str, pairs: pd.DataFrame, positions: Sequence[int],
                  val_pairs: pd.DataFrame | None = None, config: TrainConfig | None = None,
                  orient_with: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Train a rank-1 DAS intervention at ``site`` on contrast pairs; return (u (d,), info).

    ``orient_with`` (d,) flips u's sign to agree with a reference (e.g. the mean difference), as
    DAS itself only learns a line. ``val_pairs`` are only evaluated after training, not used for
    early stopping: IIA asks for the answer to be the argmax over the whole vocabulary, which
    `` good``/`` bad`` rarely are after "This movie is", so every epoch scores 0 and the trainer
    would restore the first one. ``info`` holds the final train/val IIA and loss.
    """
    site = Site.parse(site)
    config = config or TrainConfig(epochs=3, batch_size=16, lr=1e-2, patience=2)
    train = counterfactual_pairs(hm, pairs, positions)
    val = counterfactual_pairs(hm, val_pairs, positions) if val_pairs is not None else None
    torch.manual_seed(config.seed)
    das = LowRankRotatedSpaceIntervention(hm.site_size(site), 1, dtype=hm.dtype, device=hm.device_of(site))
    result = train_alignment(hm, site, das, train, None, config)
    u = das.basis()[0].float().clone()  # (d,)
    if orient_with is not None and float(u @ orient_with.float()) < 0:
        u = -u
    info = {"seconds": round(result.seconds, 1), "steps": len(result.history),
            "train_iia": evaluate(hm, site, das, train).iia, "final_loss": float(result.history["loss"].iloc[-1]),
            "val_iia": evaluate(hm, site, das, val).iia if val is not None else None}
    return u, info
