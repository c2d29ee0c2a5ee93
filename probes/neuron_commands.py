"""``workbench neuron ...``: neuron explanations scored observationally and by intervention.

Registered as the ``workbench.commands`` entry point ``neuron``. Two actions:

* ``workbench neuron score --site S --index I --concept C`` (also ``workbench neuron --site S
  --index I ...``, the form before ``find`` existed): one neuron against random ones;
* ``workbench neuron find --site S --concept C``: rank every neuron of the site by observational
  F1, score the top ``--top-k`` against ``--random`` others by intervention; table + figure.

Every run writes ``summary.json`` (what it prints) beside its tables and configs under ``--out``.

Examples (tests/test_cli_walkthrough.py runs each ``workbench`` line of this docstring):

    workbench neuron score --site L10.mlp_act --index 100 --concept words:good,great --limit 200 --out runs/neuron-score
    workbench neuron find --site L10.mlp_act --concept words:good,great,excellent --limit 300 --out runs/neuron-find

>>> args = build_parser().parse_args(["neuron", "find", "--site", "L1.mlp_act", "--concept", "words:good"])
>>> args.top_k, args.random, args.positions
(10, 20, 'last')
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, finite, load_from_args
from workbench.data.sst import SST_SPLITS


def load_texts(args: argparse.Namespace) -> list[str]:
    """``--texts FILE`` (one text per line, the first ``--limit``) or ``--limit`` SST sentences."""
    limit = args.limit
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: give a positive number of texts")
    if args.texts:
        lines = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line]
        if not texts:
            raise ValueError(f"{args.texts} has no non-empty lines; give one text per line")
        if limit is not None and len(texts) > limit:
            print(f"using the first {limit} of {len(texts)} texts in {args.texts} (--limit)", file=sys.stderr)
            texts = texts[:limit]
        return texts
    from workbench.data.sst import load_sst
    return list(load_sst(args.sst, args.sst_split, limit=limit, seed=args.seed)["text"])


def _threads(args: argparse.Namespace) -> None:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)


def score_command(args: argparse.Namespace) -> int:
    from .neurons import Concept, neuron_report

    if args.site is None or args.index is None or args.concept is None:
        raise ValueError("workbench neuron score needs --site, --index and --concept "
                         "(e.g. --site L10.mlp_act --index 100 --concept words:good,great)")
    concept = Concept.parse(args.concept)
    texts = load_texts(args)  # before the model: a missing dataset fails at once
    _threads(args)
    hm = load_from_args(args)
    out = Path(args.out or f"runs/neuron-{datetime.now():%Y%m%d-%H%M%S}")
    report = neuron_report(hm, args.site, args.index, concept, texts, threshold=args.threshold,
                           quantile=args.quantile, n_random=args.random, seed=args.seed, out=out,
                           batch_size=args.batch_size, positions=args.positions, progress=not args.quiet)
    print(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def find_command(args: argparse.Namespace) -> int:
    from .neurons import Concept
    from .neurons_find import find_neurons

    concept = Concept.parse(args.concept)
    texts = load_texts(args)
    _threads(args)
    hm = load_from_args(args)
    out = Path(args.out or f"runs/neuron-find-{datetime.now():%Y%m%d-%H%M%S}")
    table, summary = find_neurons(hm, args.site, concept, texts, top_k=args.top_k, n_random=args.random,
                                  quantile=args.quantile, positions=args.positions, seed=args.seed,
                                  batch_size=args.batch_size, out=out, progress=not args.quiet)
    columns = ["neuron", "group", "rank", "precision", "recall", "f1", "p_high", "p_low", "effect", "z", "percentile"]
    print(f"{summary['site']} {summary['concept']}: {summary['texts']} texts, {summary['tokens']} tokens "
          f"({summary['concept_tokens']} concept tokens), positions={summary['positions']}")
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"top-{summary['top_k']} mean effect {summary['top_mean_effect']:+.4g} vs random "
          f"{summary['random_mean_effect']:+.4g} ± {summary['random_std_effect']:.3g}; "
          f"{summary['top_above_all_random']} of {summary['top_k']} above every random neuron; "
          f"Spearman(F1, effect) {summary['f1_effect_spearman']:+.3f}")
    print(f"wrote {out} (neurons/figure.html: observational vs interventional)")
    return 0


def _common(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--site", required=required, help="e.g. L10.mlp_act")
    parser.add_argument("--concept", required=required, help="'words:good,great,fine' or 'regex:^(good|great)$'")
    parser.add_argument("--texts", help="a text file, one text per line (default: SST sentences)")
    parser.add_argument("--sst", default="sst", help="registry dataset 'sst' (default) or an SST folder")
    parser.add_argument("--sst-split", default="dev", choices=SST_SPLITS, help="SST split of the default texts")
    parser.add_argument("--limit", type=at_least(1), default=200, help="texts used: the first N lines of --texts, "
                                                               "or N SST sentences (default 200)")
    parser.add_argument("--quantile", type=float, default=0.99, help="a neuron fires above this quantile of its activations")
    parser.add_argument("--random", type=at_least(0), default=20, help="random neurons of the same site to compare with")
    parser.add_argument("--positions", default="last", choices=["last", "all"],
                        help="set the neuron at the last token and read P(concept) there (default), or at every "
                             "token, averaged over positions (about 20x slower)")
    parser.add_argument("--batch-size", type=at_least(1), default=16, help="texts per forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--out", help="output folder (default runs/neuron-<time>)")
    add_model_args(parser)


def _score_options(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument("--index", type=at_least(0), required=required, help="neuron index within the site")
    parser.add_argument("--threshold", type=finite, help="activation threshold (default: the --quantile of activations)")
    _common(parser, required=required)


def register(sub) -> None:
    neuron = sub.add_parser("neuron", help="neuron explanations: score one neuron, or find the best and test them",
                            description=__doc__.split("\n\n>>>")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    # `workbench neuron --site ... --index ...` (no action) still scores one neuron.
    _score_options(neuron, required=False)
    neuron.set_defaults(func=score_command)
    actions = neuron.add_subparsers(dest="neuron_action", metavar="{score,find}")
    score = actions.add_parser("score", help="one neuron's precision/recall/F1 and its effect vs random neurons")
    _score_options(score, required=True)
    score.set_defaults(func=score_command)
    find = actions.add_parser("find", help="rank all neurons by F1, score the top k against random ones")
    find.add_argument("--top-k", type=at_least(1), default=10, help="best-F1 neurons scored by intervention")
    _common(find)
    find.set_defaults(func=find_command)


# The one CLI entry point; kept importable here for callers of this module.
from workbench.cli import build_parser, main  # noqa: E402,F401


if __name__ == "__main__":
    sys.exit(main())
