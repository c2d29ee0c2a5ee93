"""Command line: ``workbench patch ...`` (more subcommands join as their features land).

>>> main(["patch", "--base", "Paris is in the country of", "--source", "Rome is in the country of",
...       "--target", " France", "--foil", " Italy"])                      # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from .models import DEFAULT_MODEL
from .sites import COMPONENTS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"'{DEFAULT_MODEL}' (embedded default), a local folder, or a hub name")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow the model folder's own Python code (off by default)")


def _patch(args: argparse.Namespace) -> int:
    from .figures import sweep_heatmap
    from .models import load_model
    from .runs import save_run
    from .sweeps import head_sweep, patch_sweep

    started = time.time()
    hm = load_model(args.model, dtype=DTYPES[args.dtype], device=args.device,
                    trust_remote_code=args.trust_remote_code)
    common = dict(target=args.target, foil=args.foil, batch_size=args.batch_size)
    if args.grid == "head":
        df = head_sweep(hm, args.base, args.source, **common)
    else:
        df = patch_sweep(hm, args.base, args.source, component=args.component, **common)
    out = Path(args.out or f"runs/patch-{datetime.now():%Y%m%d-%H%M%S}")
    config = {"command": "patch", **{k: v for k, v in vars(args).items() if k != "func"},
              "n_layers": hm.n_layers, "seconds": round(time.time() - started, 2)}
    paths = save_run(out, df, config, figure=sweep_heatmap(df))
    cols = [c for c in ("layer", "position", "token", "head", "value", "normalized") if c in df.columns]
    print(f"model {hm.name}: logit({args.target!r}) - logit({args.foil!r}) = {df.base_value[0]:.3f} on the "
          f"base, {df.source_value[0]:.3f} on the source")
    print(f"strongest {args.top} cells (normalized 1 = the whole source's effect):")
    strongest = df.reindex(df["normalized"].abs().sort_values(ascending=False).index).head(args.top)
    print(strongest[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="Causal interventions on language models")
    sub = parser.add_subparsers(dest="command", required=True)
    patch = sub.add_parser("patch", help="activation-patching sweep (layer x position or layer x head)")
    patch.add_argument("--base", required=True, help="the prompt that is run and patched")
    patch.add_argument("--source", required=True, help="the prompt whose states are patched in (same token count)")
    patch.add_argument("--target", required=True, help="answer token of the base, e.g. ' Paris'")
    patch.add_argument("--foil", required=True, help="answer token of the source, e.g. ' Rome'")
    patch.add_argument("--grid", default="position", choices=["position", "head"])
    patch.add_argument("--component", default="resid_pre", choices=sorted(COMPONENTS))
    patch.add_argument("--batch-size", type=int, default=64, help="patched runs per forward")
    patch.add_argument("--top", type=int, default=10, help="how many cells to print")
    patch.add_argument("--out", help="output folder (default runs/patch-<time>)")
    _add_model_args(patch)
    patch.set_defaults(func=_patch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, IndexError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
