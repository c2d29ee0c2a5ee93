"""``workbench attribute | path-patch | lens | dla | concepts``: analyses on one model.

    workbench attribute --base "Paris is in the country of" --source "Rome is in the country of" \\
        --target " France" --foil " Italy" --compare --out runs/attribute
    workbench path-patch --base "Paris is in the country of" --source "Rome is in the country of" \\
        --target " France" --foil " Italy" --receivers L2.head0.z L2.head1.z --out runs/path-patch
    workbench path-patch --base "Paris is in the country of" --source "Rome is in the country of" \\
        --target " France" --foil " Italy" --direct --out runs/direct-effects
    workbench lens --text "The capital of France is" --target " Paris" --out runs/lens
    workbench dla --prompts "Paris is in the country of" "Rome is in the country of" \\
        --target " France" --foil " Italy" --out runs/dla
    workbench concepts --concept positive --words 40 --out runs/concepts
    workbench concepts --concept-words good great awful bad --other-words cat dog mat city \
        --reft-steps 10 --out runs/concepts-custom

Each writes ``results.parquet``/``results.csv``, ``figure.html``, ``summary.json`` and
``config.json`` into ``--out``. ``attribute --compare`` also runs real patching
(`workbench.sweeps`) and reports Spearman's rank correlation per component; ``concepts`` also
writes ``factors.csv`` (the validation sweep) and ``directions.safetensors``.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, finite, load_from_args, positive

from .attribution import POSITION_COMPONENTS
from .concept_data import CONCEPTS


def layer_list(text: str) -> list[int]:
    """An argparse type: comma-separated layer indices, e.g. ``0,1,2``.

    >>> layer_list("0,2")
    [0, 2]
    """
    try:
        layers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of layers; give comma-separated integers, "
                                         f"e.g. 0,1,2") from None
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give layer indices >= 0, comma-separated, e.g. 0,1,2")
    return layers


def _out(args, name: str) -> Path:
    return Path(args.out or f"runs/{name}-{datetime.now():%Y%m%d-%H%M%S}")


def _config(args, name: str, hm, started: float) -> dict:
    return {"command": name, **{k: v for k, v in vars(args).items() if k != "func"}, "model_name": hm.name,
            "n_layers": hm.n_layers, "seconds": round(time.time() - started, 2)}


def _print_written(paths) -> None:
    print("wrote " + ", ".join(str(p) for p in paths.values()))


def run_attribute(args) -> int:
    import pandas as pd

    from workbench.runs import save_run

    from .attribution import attribution_patching, compare_with_patching
    from .figures import attribution_figure, comparison_figure

    started = time.time()
    hm = load_from_args(args)
    common = dict(target=args.target, foil=args.foil, components=args.components, layers=args.layers,
                  heads=not args.no_heads)
    positions, heads = attribution_patching(hm, args.base, args.source, **common)
    correlations = None
    if args.compare:
        table, correlations = compare_with_patching(hm, args.base, args.source, batch_size=args.batch_size, **common)
        figure = comparison_figure(table, correlations)
    else:
        table = pd.concat([positions, heads.assign(component="z")] if heads is not None else [positions],
                          ignore_index=True)
        figure = attribution_figure(positions, heads)
    strongest = table.reindex(table["attribution"].abs().sort_values(ascending=False).index).head(args.top)
    cols = [c for c in ("component", "layer", "position", "token", "head", "attribution", "patching") if c in table]
    summary = {"model": hm.name, "metric": f"logit({args.target!r}) - logit({args.foil!r})",
               "base_value": float(positions.base_value[0]), "source_value": float(positions.source_value[0]),
               "cells": len(table), "spearman": correlations,
               "strongest": strongest[cols].to_dict(orient="records")}
    paths = save_run(_out(args, "attribute"), table, _config(args, "attribute", hm, started), figure=figure,
                     summary=summary)
    print(f"model {hm.name}: metric {summary['base_value']:.3f} on the base, {summary['source_value']:.3f} on the source")
    if correlations is not None:
        print("Spearman rank correlation, attribution vs patching: "
              + ", ".join(f"{k} {v:.3f}" for k, v in correlations.items()))
    print(f"strongest {args.top} cells by |attribution|:")
    print(strongest[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _print_written(paths)
    return 0


def run_path_patch(args) -> int:
    from workbench.runs import save_run

    from .figures import path_figure
    from .path_patching import path_patch

    started = time.time()
    hm = load_from_args(args)
    receivers = "logits" if args.direct or not args.receivers or args.receivers == ["logits"] else args.receivers
    df = path_patch(hm, args.base, args.source, receivers, target=args.target, foil=args.foil,
                    senders=args.senders, freeze_mlps=args.freeze_mlps or args.direct, batch_size=args.batch_size)
    strongest = df.reindex(df["normalized"].abs().sort_values(ascending=False).index).head(args.top)
    what = "direct effect" if args.direct else f"path to {receivers}"
    summary = {"model": hm.name, "receivers": receivers, "direct": args.direct,
               "base_value": float(df.base_value[0]), "source_value": float(df.source_value[0]),
               "senders": len(df), "strongest": strongest[["sender", "value", "normalized"]].to_dict(orient="records")}
    paths = save_run(_out(args, "path-patch"), df, _config(args, "path-patch", hm, started), figure=path_figure(df),
                     summary=summary)
    print(f"model {hm.name}: {what}; metric {summary['base_value']:.3f} on the base, {summary['source_value']:.3f} "
          f"on the source; strongest {args.top} senders (normalized 1 = the whole source's effect):")
    print(strongest[["sender", "value", "normalized"]].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _print_written(paths)
    return 0


def run_lens(args) -> int:
    from workbench.runs import save_run

    from .figures import lens_figure
    from .lens import logit_lens

    started = time.time()
    hm = load_from_args(args)
    df = logit_lens(hm, args.text, sites=args.sites, top_k=args.top_k, target=args.target)
    last = df[df.position == df.position.max()]
    summary = {"model": hm.name, "text": args.text, "target": args.target,
               "last_position": last[["site", "top_tokens", "top_probs"] + (["target_prob", "target_rank"]
                                                                             if args.target else [])].to_dict(orient="records")}
    paths = save_run(_out(args, "lens"), df, _config(args, "lens", hm, started), figure=lens_figure(df), summary=summary)
    print(f"model {hm.name}: logit lens at the last token of {args.text!r}")
    cols = ["site", "top_tokens"] + (["target_prob", "target_rank"] if args.target else ["top_prob"])
    print(last[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    _print_written(paths)
    return 0


def run_dla(args) -> int:
    from workbench.runs import save_run

    from .dla import direct_logit_attribution
    from .figures import dla_figure

    started = time.time()
    hm = load_from_args(args)
    df = direct_logit_attribution(hm, args.prompts, args.target, args.foil)
    mean = df.groupby("component", sort=False)["dla"].mean()
    top = mean.reindex(mean.abs().sort_values(ascending=False).index).head(args.top)
    totals = df.groupby("prompt", sort=False).agg(dla_sum=("dla", "sum"), logit_diff=("logit_diff", "first"))
    summary = {"model": hm.name, "target": args.target, "foil": args.foil, "convention": "final norm scale frozen",
               "per_prompt": totals.reset_index().to_dict(orient="records"), "top": top.to_dict()}
    paths = save_run(_out(args, "dla"), df, _config(args, "dla", hm, started), figure=dla_figure(df), summary=summary)
    print(f"model {hm.name}: direct logit attribution to logit({args.target!r}) - logit({args.foil!r})")
    print(totals.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"top {args.top} components (mean over prompts):")
    print(top.to_string(float_format=lambda v: f"{v:.4f}"))
    _print_written(paths)
    return 0


def run_concepts(args) -> int:
    from safetensors.torch import save_file

    from workbench import Site
    from workbench.runs import atomic_write, save_run

    from .concept_data import concept_texts, lexicon_words
    from .concepts import concept_detection
    from .figures import concepts_figure

    started = time.time()
    if bool(args.concept_words) != bool(args.other_words):
        raise ValueError("--concept-words and --other-words go together: give both word lists, or neither "
                         "(then --concept picks lexicon words)")
    if args.concept_words:
        concept, other = args.concept_words, args.other_words
    else:
        concept, other = lexicon_words(args.concept, limit=args.words, seed=args.seed)  # before the model
    hm = load_from_args(args)
    layer = hm.n_layers // 2 if args.layer is None else args.layer
    site = Site(layer, args.component)
    hm.site_size(site)  # names the layer range
    texts = concept_texts(concept, other, seed=args.seed)
    result = concept_detection(hm, texts, site, methods=args.methods, factors=args.factors,
                               max_loss_increase=args.max_loss_increase, reft_steps=args.reft_steps, seed=args.seed)
    out = _out(args, "concepts")
    name = "custom" if args.concept_words else args.concept
    summary = {"model": hm.name, "concept": name, "site": str(site), "texts": len(texts),
               "results": result.table.to_dict(orient="records")}
    paths = save_run(out, result.table, _config(args, "concepts", hm, started),
                     figure=concepts_figure(result.table, result.factors), summary=summary)
    atomic_write(out / "factors.csv", lambda tmp: result.factors.to_csv(tmp, index=False))
    tensors = {m: v.float().contiguous().cpu() for m, v in result.directions.items()}
    atomic_write(out / "directions.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"site": str(site)}))
    texts_path = out / "texts.csv"
    atomic_write(texts_path, lambda tmp: texts.to_csv(tmp, index=False))
    print(f"model {hm.name}: concept {name!r} at {site} ({len(texts)} texts, split by word)")
    print(result.table[["method", "auroc", "factor", "concept_prob_unsteered", "concept_prob", "loss_increase"]]
          .to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    _print_written({**paths, "factors": out / "factors.csv", "directions": out / "directions.safetensors"})
    return 0


def _pair_args(parser) -> None:
    parser.add_argument("--base", required=True, help="the prompt that is run and patched")
    parser.add_argument("--source", required=True, help="the prompt whose states are patched in (same token count)")
    parser.add_argument("--target", required=True, help="answer token of the base, e.g. ' France'")
    parser.add_argument("--foil", required=True, help="answer token of the source, e.g. ' Italy'")
    parser.add_argument("--batch-size", type=at_least(1), default=32, help="patched runs per forward")
    parser.add_argument("--top", type=at_least(0), default=10, help="how many rows to print")


def register(sub) -> None:
    p = sub.add_parser("attribute", help="attribution patching: (s - b) . grad for every layer x position and head")
    _pair_args(p)
    p.add_argument("--components", nargs="+", default=list(POSITION_COMPONENTS), choices=POSITION_COMPONENTS)
    p.add_argument("--layers", type=layer_list, help="comma-separated layers (default: all)")
    p.add_argument("--no-heads", action="store_true", help="skip the layer x head (z) grid")
    p.add_argument("--compare", action="store_true", help="also run real patching and report Spearman's rho")
    p.add_argument("--out", help="output folder (default runs/attribute-<time>)")
    add_model_args(p)
    p.set_defaults(func=run_attribute)

    p = sub.add_parser("path-patch", help="path patching (IOI): senders -> receivers, or each head's direct effect")
    _pair_args(p)
    p.add_argument("--receivers", nargs="+", help="receiver sites (e.g. L9.head6.z) or 'logits' (default)")
    p.add_argument("--senders", nargs="+", help="sender heads/MLPs (e.g. L3.head0.z L2.mlp_out; default: all heads)")
    p.add_argument("--freeze-mlps", action="store_true", help="freeze MLPs at their base values too")
    p.add_argument("--direct", action="store_true", help="each head's direct effect (logits, MLPs frozen)")
    p.add_argument("--out", help="output folder (default runs/path-patch-<time>)")
    add_model_args(p)
    p.set_defaults(func=run_path_patch)

    p = sub.add_parser("lens", help="logit lens: decode sites through the final norm and unembedding")
    p.add_argument("--text", required=True, help="the prompt to read")
    p.add_argument("--sites", nargs="+", help="sites to decode (default: every layer's resid_post)")
    p.add_argument("--top-k", type=at_least(1), default=5, help="top tokens kept per site and position")
    p.add_argument("--target", help="a token whose probability and rank are tracked, e.g. ' Paris'")
    p.add_argument("--out", help="output folder (default runs/lens-<time>)")
    add_model_args(p)
    p.set_defaults(func=run_lens)

    p = sub.add_parser("dla", help="direct logit attribution of every head and MLP to target - foil")
    p.add_argument("--prompts", nargs="+", required=True, help="prompts whose last token is read")
    p.add_argument("--target", required=True, help="e.g. ' France'")
    p.add_argument("--foil", required=True, help="e.g. ' Italy'")
    p.add_argument("--top", type=at_least(0), default=10, help="how many components to print")
    p.add_argument("--out", help="output folder (default runs/dla-<time>)")
    add_model_args(p)
    p.set_defaults(func=run_dla)

    from .concepts import FACTORS, METHODS
    p = sub.add_parser("concepts", help="concept detection (AUROC) and steering (AxBench style) at one site")
    p.add_argument("--concept", default="positive", choices=CONCEPTS, help="the lexicon concept")
    p.add_argument("--words", type=at_least(4), default=40, help="concept (and neutral) lexicon words used")
    p.add_argument("--concept-words", nargs="+", help="your own concept's words (instead of --concept)")
    p.add_argument("--other-words", nargs="+", help="non-concept words for the same templates")
    p.add_argument("--layer", type=at_least(0), help="layer of the site (default: the middle layer)")
    p.add_argument("--component", default="resid_post", choices=("resid_pre", "resid_post", "attn_out", "mlp_out"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--factors", nargs="+", type=finite, default=list(FACTORS), help="steering factors tried on validation")
    p.add_argument("--max-loss-increase", type=positive, default=1.0,
                   help="LM-loss budget (nats) a chosen steering factor may add on held-out non-concept texts")
    p.add_argument("--reft-steps", type=at_least(1), default=30, help="ReFT-r1 training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default runs/concepts-<time>)")
    add_model_args(p)
    p.set_defaults(func=run_concepts)
