"""``workbench patch``: an activation-patching sweep on one base/source pair.

    workbench patch --base "Paris is in the country of" --source "Rome is in the country of" \\
        --target " France" --foil " Italy" --out runs/demo-patch

Writes ``results.parquet``/``results.csv``, ``figure.html`` (layer x position heatmap) and
``config.json``; ``--grid head`` sweeps layer x head instead. ``--shard 0/2`` and ``--shard 1/2``
(or ``torchrun --nproc_per_node 2 -m workbench.cli patch ...``) split the layers between processes.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

from ..sites import COMPONENTS
from .common import add_model_args, at_least, load_from_args, positive


def run(args: argparse.Namespace) -> int:
    from ..figures import sweep_heatmap
    from ..runs import save_run
    from ..sweeps import head_sweep, patch_sweep

    from ..distributed import Shard

    started = time.time()
    shard = Shard.from_env(args.shard)  # --shard, else torchrun's RANK/WORLD_SIZE, else 0/1
    if shard.world > 1 and not args.out:
        raise ValueError(f"shard {shard}: give --out, the folder every shard writes its layers' parts into")
    hm = load_from_args(args)
    common = dict(target=args.target, foil=args.foil, batch_size=args.batch_size, backend=args.backend)

    def sweep(layers=None):
        if args.grid == "head":
            return head_sweep(hm, args.base, args.source, layers=layers, **common)
        return patch_sweep(hm, args.base, args.source, component=args.component, layers=layers, **common)

    out = Path(args.out or f"runs/patch-{datetime.now():%Y%m%d-%H%M%S}")
    df = sweep() if shard.world == 1 else _sharded(sweep, hm.n_layers, out, shard)
    if df is None:
        return 0
    config = {"command": "patch", **{k: v for k, v in vars(args).items() if k != "func"},
              "n_layers": hm.n_layers, "seconds": round(time.time() - started, 2)}
    cols = [c for c in ("layer", "position", "token", "head", "value", "normalized") if c in df.columns]
    strongest = df.reindex(df["normalized"].abs().sort_values(ascending=False).index).head(args.top)
    summary = {"model": hm.name, "metric": f"logit({args.target!r}) - logit({args.foil!r})",
               "base_value": float(df.base_value[0]), "source_value": float(df.source_value[0]),
               "cells": len(df), "seconds": config["seconds"], "strongest": strongest[cols].to_dict(orient="records")}
    paths = save_run(out, df, config, figure=sweep_heatmap(df), summary=summary)
    print(f"model {hm.name}: logit({args.target!r}) - logit({args.foil!r}) = {df.base_value[0]:.3f} on the "
          f"base, {df.source_value[0]:.3f} on the source")
    print(f"strongest {args.top} cells (normalized 1 = the whole source's effect):")
    print(strongest[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _sharded(sweep, n_layers: int, out: Path, shard):
    """This shard's layers, one part per layer in ``out/parts`` (a re-run skips finished ones, at
    any world size); the merged table once every layer's part is there, else None."""
    from ..distributed import merge_parts, missing_parts, run_parts

    layers = list(range(n_layers))
    run_parts(layers, lambda layer: sweep([layer]), out / "parts", shard, desc="patch layers")
    missing = missing_parts(layers, out / "parts")
    if missing:
        print(f"shard {shard}: its layers are in {out / 'parts'}; layers {missing} are still missing: run the "
              f"other shards, then any shard again to merge")
        return None
    return merge_parts(layers, out / "parts")


def register(sub) -> None:
    patch = sub.add_parser("patch", help="activation-patching sweep (layer x position or layer x head)")
    patch.add_argument("--base", required=True, help="the prompt that is run and patched")
    patch.add_argument("--source", required=True, help="the prompt whose states are patched in (same token count)")
    patch.add_argument("--target", required=True, help="answer token of the base, e.g. ' Paris'")
    patch.add_argument("--foil", required=True, help="answer token of the source, e.g. ' Rome'")
    patch.add_argument("--grid", default="position", choices=["position", "head"])
    patch.add_argument("--component", default="resid_pre", choices=sorted(COMPONENTS))
    patch.add_argument("--batch-size", type=at_least(1), default=64, help="patched runs per forward")
    patch.add_argument("--backend", default="hooks", choices=["hooks", "nnsight"],
                       help="run the patched forwards with forward hooks (default) or as nnsight traces")
    patch.add_argument("--top", type=at_least(0), default=10, help="how many cells to print")
    patch.add_argument("--out", help="output folder (default runs/patch-<time>)")
    patch.add_argument("--shard", help="RANK/WORLD: sweep every WORLD-th layer from RANK into OUT/parts; the "
                                       "shard that finds every part merges them (default: torchrun's "
                                       "RANK/WORLD_SIZE, else the whole sweep)")
    add_model_args(patch)
    patch.set_defaults(func=run)
