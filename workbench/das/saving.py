"""Read back a DAS intervention saved by ``workbench das``: safetensors + JSON, never pickle.

The run folder holds ``intervention.json`` (method, site, d, k, max_rank) and
``intervention.safetensors`` (the module's state and its ``basis`` rows). Loading rebuilds the
module by name and loads its state, so the reloaded intervention computes what the trained one did.
Runs saved before R became reflectors (torch's parametrization with a d x d ``base``, attribute
``rows``) load too: R is converted on loading (equal to fp32 rounding).

>>> intervention, meta = load_das("runs/das-country")      # doctest: +SKIP
>>> meta["site"], intervention.basis().shape               # doctest: +SKIP
('L8.resid_post', torch.Size([16, 576]))
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..devices import place
from ..errors import check_shapes, read_json, read_tensors
from ..orthogonal import has_legacy_rows, migrate_legacy_rows

CONFIG_FILE, WEIGHTS_FILE = "intervention.json", "intervention.safetensors"


def load_das(folder: str | Path, device: str | torch.device | None = None):
    """(intervention in eval mode, its JSON description) from a ``workbench das`` run folder.

    ``device``: where to put it (e.g. ``hm.device_of(meta["site"])``); installing it in a plan
    moves it to the site's device anyway.
    """
    from . import build_intervention

    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"no {path.name} in {folder}: not a saved DAS intervention "
                                    f"(written by `workbench das --out FOLDER`)")
    fix = "run `workbench das --out FOLDER` again or restore the folder from a copy"
    meta = read_json(config_path, "DAS intervention description", fix)
    missing = sorted({"method", "site", "d", "k"} - set(meta))
    if missing:
        raise ValueError(f"{config_path}: fields {missing} are missing; expected method, site, d, k (and max_rank)")
    intervention = build_intervention(meta["method"], int(meta["d"]), int(meta["k"]), meta.get("max_rank"))
    state = read_tensors(weights_path, "DAS weights file", fix)
    state.pop("basis", None)  # saved for readers without the module; derived from the state
    if has_legacy_rows(state):
        state = migrate_legacy_rows(state, {".rows.": ".rotation."})
    own = intervention.state_dict()
    if set(state) != set(own):
        raise ValueError(f"{weights_path}: tensors {sorted(state)} do not match a {meta['method']} intervention "
                         f"with d={meta['d']}, k={meta['k']} (expected {sorted(own)})")
    check_shapes(state, own, weights_path, f"the weights do not match {CONFIG_FILE} (d, k): {fix}")
    intervention.load_state_dict(state)
    if device is not None:
        place(intervention, device)
    return intervention.eval(), meta


__all__ = ["load_das"]
