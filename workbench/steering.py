"""Steering vectors on disk: an ``AddVector`` as ``steering.safetensors`` + ``steering.json``.

The JSON names the format, the site, the token positions, the scale and the generation mode
(``every_step`` also steers each generated token); the safetensors file holds one tensor,
``vector`` (d,). No pickle.

>>> save_steering("runs/interventions/happy", "L10.resid_post", v, scale=4.0)   # doctest: +SKIP
>>> plan, meta = load_steering("runs/interventions/happy")                    # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .errors import read_json, read_tensors
from .interventions import AddVector
from .plan import PlanItem
from .runs import atomic_write
from .sites import Site

FORMAT = "workbench-steering/1"
CONFIG_FILE, WEIGHTS_FILE = "steering.json", "steering.safetensors"


def save_steering(folder: str | Path, site: Site | str, vector: torch.Tensor, scale: float = 1.0,
                  positions: str = "all", mode: str = "every_step", note: str = "") -> Path:
    """Write the vector (d,) and its description into ``folder``."""
    if vector.dim() != 1:
        raise ValueError(f"a steering vector is (d,), got shape {tuple(vector.shape)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"vector": vector.detach().float().contiguous().cpu()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
    meta = {"format": FORMAT, "site": str(Site.parse(site)), "positions": positions, "scale": float(scale),
            "mode": mode, "d": int(vector.shape[0]), "note": note}
    (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return folder


def load_steering(folder: str | Path, device: str | torch.device | None = None,
                  dtype: torch.dtype | None = None) -> tuple[list[PlanItem], dict]:
    """(a one-item plan with the AddVector, the JSON description) from a saved folder.

    The vector goes to ``device`` in ``dtype`` when given (e.g. ``hm.device_of(meta["site"])``,
    ``hm.dtype``); installing the plan moves it to the site's device anyway.
    """
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} + {WEIGHTS_FILE} in {folder}: not a saved steering vector")
    fix = "save it again with save_steering"
    meta = read_json(folder / CONFIG_FILE, "steering description", fix)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{folder / CONFIG_FILE}: format {meta.get('format')!r}, this version reads {FORMAT!r}")
    tensors = read_tensors(folder / WEIGHTS_FILE, "steering vector file", fix)
    if "vector" not in tensors or tensors["vector"].dim() != 1 or tensors["vector"].shape[0] != meta.get("d", tensors["vector"].shape[0]):
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        raise ValueError(f"{folder / WEIGHTS_FILE}: expected one tensor 'vector' of shape ({meta.get('d')},) as "
                         f"{CONFIG_FILE} says, got {shapes}; {fix}")
    vector = tensors["vector"].to(device=device, dtype=dtype)  # (d,)
    return [PlanItem(meta["site"], meta.get("positions", "all"), AddVector(vector, meta.get("scale", 1.0)))], meta


__all__ = ["save_steering", "load_steering"]
