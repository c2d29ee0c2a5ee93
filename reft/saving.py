"""Save and load ReFT models: safetensors weights + a JSON config, never pickle.

A saved folder holds ``reft_config.json`` (format version, ReftConfig, each intervention's kind,
site, positions, rank and dtype, the task, the base model's name and a fingerprint of its weights)
and ``interventions.safetensors`` (the trained values only: for LoReFT/ConsReFT R's Householder
reflectors, 2·r·d + r values, never a d x d basis; a reload gives bit-identical R). Loading checks
the fingerprint and puts each tensor on its intervention's device (the site's layer), in the dtype
the model's interventions use. Format 1 checkpoints (torch's parametrization with its d x d
``base``) load too: R is converted to the reflector form on loading (equal to fp32 rounding).

>>> reft.save("runs/persona")                                 # doctest: +SKIP
>>> again = reft.load_reft("runs/persona", load_model())      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from workbench.errors import check_shapes, read_json, read_tensors
from workbench.orthogonal import has_legacy_rows, migrate_legacy_rows
from workbench.runs import atomic_write


FORMAT = "workbench-reft/2"
LEGACY_FORMATS = ("workbench-reft/1",)  # R as torch's orthogonal parametrization (with a d x d base)
CONFIG_FILE, WEIGHTS_FILE = "reft_config.json", "interventions.safetensors"
FINGERPRINT_ATTR = "_reft_fingerprint"  # set by remember_fingerprint, read by fingerprint


@torch.no_grad()
def fingerprint(model: nn.Module, samples: int = 4096) -> str:
    """A short sha256 over every parameter's name, shape, dtype and ``samples`` evenly strided
    values (fp32 bytes): different checkpoints of one architecture differ in it; it costs
    milliseconds, not a hash of all weights.

    A model sharded by FSDP holds only pieces of its weights (DTensors); `remember_fingerprint`
    stores its fingerprint before sharding and this returns it, so that checkpoints written by a
    sharded run load into the whole model.

    >>> len(fingerprint(torch.nn.Linear(3, 2)))
    16
    """
    remembered = getattr(model, FINGERPRINT_ATTR, None)
    if remembered is not None:
        return remembered
    if any(type(p).__name__ == "DTensor" for p in model.parameters()):
        raise RuntimeError("the model's weights are sharded (FSDP DTensors) and no fingerprint was taken before "
                           "sharding; call reft.saving.remember_fingerprint(model) before fully_shard")
    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        digest.update(f"{name}|{tuple(p.shape)}|{p.dtype}|".encode())
        digest.update(flat[::step][:samples].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def remember_fingerprint(model: nn.Module) -> str:
    """Take ``model``'s `fingerprint` now and keep it on the model (before sharding it).

    >>> remember_fingerprint(torch.nn.Linear(3, 2)) is not None
    True
    """
    setattr(model, FINGERPRINT_ATTR, None)
    value = fingerprint(model)
    setattr(model, FINGERPRINT_ATTR, value)
    return value


def _reft_of(model: nn.Module):
    """The ReftModel of a ReftModel or of a model wrapping one as ``.reft`` (a classifier); by
    attribute, so that saving never imports the model classes (loading, in reft.loading, does)."""
    return model.reft if hasattr(model, "reft") and not hasattr(model, "reft_config") else model


def describe(model: nn.Module) -> dict:
    """The JSON description of a ReftModel or ReftForClassification (everything but tensors)."""
    reft = _reft_of(model)
    dtype = next(reft.hm.model.parameters()).dtype
    sel = reft.reft_config.selector()
    data = {
        "format": FORMAT,
        "config": reft.reft_config.to_dict(),
        "interventions": [{"site": str(site), "positions": str(sel), "kind": reft.reft_config.kind,
                           "rank": reft.reft_config.rank, "groups": list(reft.reft_config.position_groups()),
                           "hidden_size": reft.hm.site_size(site)} for site in reft.reft_config.sites()],
        "dtype": str(dtype).removeprefix("torch."),
        "base_model": {"name": reft.hm.name, "model_type": getattr(reft.hm.model.config, "model_type", None),
                       "fingerprint": fingerprint(reft.hm.model)},
        "task": "causal_lm",
    }
    if model is not reft:
        data.update(model.describe_task())
    return data


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` without the frozen base model's entries: the interventions (and a
    classifier's head), under the same keys whether or not the base model is in the module tree.

    >>> from reft.interventions import build_intervention
    >>> sorted(trainable_state(build_intervention("direft", 4, 1)))
    ['learned_source.bias', 'learned_source.weight', 'proj.weight']
    """
    reft = _reft_of(model)
    base = getattr(getattr(reft, "hm", None), "model", None)
    prefixes = tuple(f"{name}." for name, m in model.named_modules() if base is not None and m is base and name)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)} if prefixes else model.state_dict()


def save_reft(model: nn.Module, folder: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the config JSON and the weights (safetensors) of a ReFT model into ``folder``.

    >>> save_reft(reft, "runs/persona")                      # doctest: +SKIP
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in trainable_state(model).items()}
    meta = {**describe(model), **({"extra": extra} if extra else {})}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    atomic_write(folder / CONFIG_FILE, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    return folder


def read_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {folder}: not a saved ReFT model (save with reft.save)")
    meta = read_json(path, "ReFT config", "save the model again (reft.save) or restore the folder from a copy")
    if meta.get("format") not in (FORMAT, *LEGACY_FORMATS):
        raise ValueError(f"{path}: format {meta.get('format')!r}; this version reads {FORMAT!r} and the "
                         f"older {', '.join(map(repr, LEGACY_FORMATS))}; re-save it with a matching version")
    return meta


def load_weights_into(model: nn.Module, folder: str | os.PathLike) -> None:
    """Load saved tensors into an already built model: each onto its own tensor's device and dtype
    (read on the CPU first, so a model dispatched over several devices loads too)."""
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_FILE} in {folder}: the checkpoint is incomplete; save it again (reft.save)")
    state = read_tensors(path, "ReFT weights file", "save the model again (reft.save) or restore the folder from a copy")
    if has_legacy_rows(state):  # format 1: torch's parametrization of R, attribute `rotate`
        state = migrate_legacy_rows(state, {".rotate.": ".rotation."})
    own = trainable_state(model)
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match the config (missing {missing}, unexpected {unexpected}); "
                         f"the weights and reft_config.json come from different saves: save the model again")
    check_shapes(state, own, path, "the weights do not belong to this reft_config.json: save the model again")
    # strict=False: the frozen base model's entries are not in a save (the keys were checked above)
    model.load_state_dict({k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in state.items()}, strict=False)
