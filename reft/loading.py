"""Load saved ReFT models: rebuild the interventions a checkpoint's config names on a base model,
then read its weights (see ``reft.saving`` for the format). Kept apart from ``reft.saving`` so that
saving (used by the models) never imports the model classes: no import cycle.

>>> reft = load_reft("runs/persona", load_model())       # doctest: +SKIP
"""

from __future__ import annotations

import os

from torch import nn

from workbench.hooked import HookedModel

from .classify import ReftForClassification
from .config import ReftConfig
from .model import ReftModel, _as_hooked, build_interventions
from .saving import fingerprint, load_weights_into, read_config


def load_reft(folder: str | os.PathLike, model, tokenizer=None, check_base: bool = True) -> nn.Module:
    """Rebuild a saved ReFT model on ``model`` (a HookedModel or HF model) and load its weights.

    Returns a ReftModel, or a ReftForClassification for classification checkpoints. With
    ``check_base`` a different base model (by weight fingerprint) is an error.

    >>> reft = load_reft("runs/persona", load_model())       # doctest: +SKIP
    """
    meta = read_config(folder)
    hm: HookedModel = _as_hooked(model, tokenizer)
    if check_base:
        found, saved = fingerprint(hm.model), meta["base_model"]["fingerprint"]
        if found != saved:
            raise ValueError(
                f"{folder} was trained on {meta['base_model']['name']!r} (weights fingerprint {saved}), but the "
                f"given model's fingerprint is {found}; load the same base model, or pass check_base=False"
            )
    for p in hm.model.parameters():
        p.requires_grad_(False)
    reft = ReftModel(hm, ReftConfig.from_dict(meta["config"]), build_interventions(hm, ReftConfig.from_dict(meta["config"])))
    model_out: nn.Module = reft
    if meta.get("task") == "classification":
        model_out = ReftForClassification(reft, num_classes=meta["num_classes"], pooling=meta["pooling"],
                                          dropout=meta.get("head_dropout", 0.0), head=meta.get("head", "linear"))
    load_weights_into(model_out, folder)
    model_out.eval()
    return model_out
