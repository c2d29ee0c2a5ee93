"""``workbench sentiment ...``: the sentiment study (``run``) and per-token projections (``project``).

Registered as the ``workbench.commands`` entry point ``sentiment``; ``workbench neuron`` lives in
`probes.neuron_commands`.

    workbench sentiment run --layers 0,6,12 --methods mean_diff,probe --sst-limit 100 --out runs/sentiment
    workbench sentiment project --text "The movie was great, I loved it" \\
        --directions runs/sentiment/directions.safetensors --layer 6 --out runs/projection.html

``run`` writes ``patching/``, ``directions/`` and ``sst/`` tables (each with ``config.json``),
``directions.safetensors`` and ``summary.json``; ``project`` writes one HTML figure.

>>> args = build_parser().parse_args(["sentiment", "run", "--layers", "0,6", "--sst-limit", "0"])
>>> args.layers, args.sst_limit
('0,6', 0)
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, load_from_args, positive


def _ints(text: str | None) -> tuple[int, ...] | None:
    if text is None or text == "":
        return None
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated layer numbers such as '0,6,12', got {text!r}") from None


def run_sentiment_command(args: argparse.Namespace) -> int:
    from .sentiment.run import SentimentConfig, run_sentiment
    import torch

    from workbench.data.sst import sst_folder

    torch.set_num_threads(args.threads) if args.threads else None
    from .sentiment.causal import position_set
    for name in {*args.positions.split(","), *args.sst_positions.split(","), args.sst_mean_positions}:
        position_set(name)  # an unknown position set fails before the model loads
    sst = None if args.sst_limit == 0 else str(sst_folder(args.sst))  # before the model: fails at once if missing
    hm = load_from_args(args)
    config = SentimentConfig(
        layers=_ints(args.layers), layer_step=args.layer_step, component=args.component,
        methods=tuple(args.methods.split(",")), das_layers=_ints(args.das_layers) or (), das_epochs=args.das_epochs,
        das_max_pairs=args.das_max_pairs, compare_layers=_ints(args.compare_layers) or (),
        position_sets=tuple(args.positions.split(",")), max_per_sentiment=args.max_per_sentiment,
        sst_folder=sst, sst_split=args.sst_split,
        sst_limit=args.sst_limit or None, ablation_value=args.ablation_value,
        sst_position_sets=tuple(args.sst_positions.split(",")), sst_mean_positions=args.sst_mean_positions,
        ablation_layers=_ints(args.ablation_layers), batch_size=args.batch_size, seed=args.seed)
    out = Path(args.out or f"runs/sentiment-{datetime.now():%Y%m%d-%H%M%S}")
    summary = run_sentiment(hm, config, out)
    print(f"model {hm.name}: {summary['n_reviews']} ToyMovieReview prompts, {summary['n_test_pairs']} test pairs")
    print("held-out accuracy per method (worst layer):",
          ", ".join(f"{k} {v:.3f}" for k, v in summary["test_accuracy"].items()))
    print("recovery per layer (mean_diff):")
    for row in summary["recovery"]:
        if row["method"] == "mean_diff":
            print(f"  L{row['layer']:<3} {row['positions']:<6} recovery {row['recovery']:+.3f}  flip {row['flip_rate']:.2f}")
    for row in summary.get("sst", []):
        print(f"SST {row['direction']:<9} @ {row['positions']:<6} accuracy {row['accuracy']:.3f}  auc {row['auc']:.3f}  "
              f"above-chance lost {row['above_chance_lost']:.3f}  share of all-position drop {row['share_of_all']:.3f}")
    print(f"wrote {out} ({summary['seconds']} s)")
    return 0


def project_command(args: argparse.Namespace) -> int:
    from safetensors.torch import load_file

    from .sentiment.figures import token_projection_figure, token_projections

    if not Path(args.directions).is_file():
        raise FileNotFoundError(f"--directions {args.directions}: no such file; give the directions.safetensors "
                                f"written by `workbench sentiment run`")
    vectors = load_file(args.directions)
    key = f"L{args.layer}.{args.method}"
    if key not in vectors:
        raise ValueError(f"{key} not in {args.directions}; available: {sorted(vectors)[:8]} ...")
    hm = load_from_args(args)
    tokens, values = token_projections(hm, args.text, f"L{args.layer}.{args.component}", vectors[key])
    fig = token_projection_figure(tokens, values, title=f"{key} projection at L{args.layer}.{args.component}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(out)
    print(" ".join(f"{t.strip() or repr(t)}:{v:+.2f}" for t, v in zip(tokens, values)))
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    sentiment = sub.add_parser("sentiment", help="sentiment directions: fit, patch per layer, ablate on SST")
    actions = sentiment.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="the whole study (ToyMovieReview fits, directional patching, SST ablation)")
    run.add_argument("--layers", help="patching-curve layers, e.g. '0,4,8' (default every --layer-step-th)")
    run.add_argument("--layer-step", type=at_least(1), default=2)
    run.add_argument("--component", default="resid_post")
    run.add_argument("--methods", default="mean_diff,probe,pca,kmeans,das")
    run.add_argument("--das-layers", default="", help="layers where the 1-D DAS direction is trained")
    run.add_argument("--das-epochs", type=at_least(1), default=3)
    run.add_argument("--das-max-pairs", type=at_least(1), default=64)
    run.add_argument("--compare-layers", default="", help="layers where every method is patched (default: DAS layers)")
    run.add_argument("--positions", default="all,comma", help="position sets: all, comma, punctuation, non_comma")
    run.add_argument("--max-per-sentiment", type=at_least(1), help="fewer adjectives (quick runs)")
    run.add_argument("--sst", default="sst",
                     help="registry dataset 'sst' (default; `workbench data fetch sst`) or a folder with "
                          "sst_{train,dev,test}.txt")
    run.add_argument("--sst-split", default="dev", choices=["train", "dev", "test"])
    run.add_argument("--sst-limit", type=at_least(0), default=300, help="SST sentences (0 skips the SST ablation)")
    run.add_argument("--sst-positions", default="all,comma",
                     help="SST ablation position sets; the first is the reference of share_of_all")
    run.add_argument("--sst-mean-positions", default="all", help="tokens the mean-ablation value averages over")
    run.add_argument("--ablation-value", default="mean", choices=["mean", "zero"])
    run.add_argument("--ablation-layers", help="layers ablated together on SST (default all)")
    run.add_argument("--batch-size", type=at_least(1), default=32)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0 = torch's default)")
    run.add_argument("--out", help="output folder (default runs/sentiment-<time>)")
    add_model_args(run)
    run.set_defaults(func=run_sentiment_command)

    project = actions.add_parser("project", help="per-token projection of a text on a saved direction (HTML)")
    project.add_argument("--text", required=True)
    project.add_argument("--directions", required=True, help="directions.safetensors from a sentiment run")
    project.add_argument("--layer", type=at_least(0), required=True)
    project.add_argument("--method", default="mean_diff")
    project.add_argument("--component", default="resid_post")
    project.add_argument("--out", default="runs/projection.html")
    add_model_args(project)
    project.set_defaults(func=project_command)


# The one CLI entry point; kept importable here for callers of this module.
from workbench.cli import build_parser, main  # noqa: E402,F401


if __name__ == "__main__":
    sys.exit(main())
