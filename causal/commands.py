"""``workbench align TASK``: alignment search against a task's causal model, saved like every run.

    workbench align hierarchical_equality --objects 20 --toy-steps 300 --layers 0 --featurizers das localist full --k 8 --train 300 --test 200 --epochs 2 --out runs/align-equality

``hierarchical_equality`` trains the DAS paper's toy MLP here (seconds) and aligns W == X and
Y == Z on it (the sizes above are a quick look; docs/causal_abstraction.md has the full run).
``addition`` aligns the carry, ``ioi`` the position of the indirect object, ``ravel`` an entity
attribute (``--data``, ``--entity-type``, ``--variables``), on the language model (``--model``,
default SmolLM2), for example:

workbench align addition --layers 0 7 14 21 28 --positions last --featurizers das dbm full --out runs/align-carry
workbench align ioi --layers 14 21 --featurizers das dbm --epochs 8 --mask-lr 0.5 --out runs/align-ioi

Writes ``results.parquet``/``.csv`` (IIA per variable, featurizer, layer and position),
``scores.csv`` (MIB's mean-over-layers and best-layer IIA), ``figure.html`` (layer x position
heatmaps), ``cells.csv`` (finished cells: a killed run resumes), ``summary.json`` and
``config.json``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, load_from_args, non_negative, positive
from workbench.sites import COMPONENTS

TASKS = ("addition", "ioi", "ravel", "hierarchical_equality")
FEATURIZERS = ("full", "das", "boundless", "dbm", "localist")


def _featurizers(args):
    from .featurizers import Featurizer
    return [Featurizer(kind, k=args.k if kind in ("das", "boundless") else 1, sparsity=args.sparsity if kind == "dbm" else 0.0)
            for kind in args.featurizers]


def _lm_task(args):
    from . import tasks
    if args.task == "ravel":
        from workbench.commands.das import load_data_from_args
        return tasks.ravel(load_data_from_args(args), args.variables or None)
    return tasks.LM_TASKS[args.task]()


def _toy(args, featurizers):
    import torch
    from .tasks import hierarchical_equality
    from .toy import EqualityMLP, train_toy
    from .toy_align import toy_search
    model = hierarchical_equality(args.objects)
    torch.manual_seed(args.seed)
    net = EqualityMLP(n_objects=args.objects, hidden=args.hidden, seed=args.seed)
    accuracy = train_toy(net, model, steps=args.toy_steps, seed=args.seed)
    print(f"toy MLP (hidden {args.hidden}) accuracy on fresh inputs: {accuracy:.3f}")
    variables = args.variables or ["WX", "YZ"]
    layers = args.layers if args.layers is not None else list(range(len(net.layers)))
    table = toy_search(net, model, variables, featurizers, layers=layers, n_train=args.train, n_test=args.test,
                       seed=args.seed, epochs=args.epochs, lr=args.lr, progress=True)
    return table, {"toy_accuracy": accuracy}


def _check_choices(hm, task, layers, positions, variables) -> None:
    """--layers, --positions and --variables against the model and the task, before any work."""
    bad = [layer for layer in layers if layer >= hm.n_layers]
    if bad:
        raise ValueError(f"--layers {' '.join(map(str, bad))}: the model has {hm.n_layers} layers "
                         f"(0-{hm.n_layers - 1}); give layers in that range")
    for flag, given, valid in (("--positions", positions, task.positions),
                               ("--variables", variables, tuple(task.model.variables))):
        unknown = [name for name in given if name not in valid]
        if unknown:
            raise ValueError(f"{flag} {' '.join(unknown)}: not a {flag[2:-1]} of this task; "
                             f"choose from {', '.join(valid)}")


def run(args: argparse.Namespace) -> int:
    import torch

    from workbench.runs import save_run
    from .search import SearchConfig, align, alignment_heatmap, mib_scores

    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    featurizers = _featurizers(args)
    out = Path(args.out or f"runs/align-{args.task}-{datetime.now():%Y%m%d-%H%M%S}")
    extra: dict = {}
    if args.task == "hierarchical_equality":
        out.mkdir(parents=True, exist_ok=True)
        table, extra = _toy(args, featurizers)
        config = None
    else:
        task = _lm_task(args)
        config = SearchConfig(n_train=args.train, n_test=args.test, oversample=args.oversample, seed=args.seed,
                              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, mask_lr=args.mask_lr,
                              sparsity=args.sparsity, require_correct=not args.keep_wrong)
        hm = load_from_args(args)
        layers = args.layers if args.layers is not None else list(range(0, hm.n_layers, max(1, hm.n_layers // 6)))
        positions = args.positions or [task.positions[-1]]
        variables = args.variables or list(task.variables[:1])
        _check_choices(hm, task, layers, positions, variables)
        out.mkdir(parents=True, exist_ok=True)  # only once the arguments are known good: no empty run folders
        table = align(hm, task, variables, layers, positions, featurizers, args.component, config,
                      cells_file=out / "cells.csv")
        extra = {"examples": table.attrs.get("counts", {})}
    scores = mib_scores(table)
    scores.to_csv(out / "scores.csv", index=False)
    figure = alignment_heatmap(table, title=f"IIA: {args.task}")
    run_config = {"command": "align", **{k: v for k, v in vars(args).items() if k != "func"},
                  "search_config": asdict(config) if config else None, **extra}
    summary = {"task": args.task, "scores": scores.to_dict(orient="records"), "seconds": round(time.time() - started, 1),
               **extra}
    save_run(out, table, run_config, figure=figure, summary=summary)
    print(scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"{len(table)} alignments in {time.time() - started:.0f} s; wrote {out}/ (results.parquet, scores.csv, "
          f"figure.html, summary.json, config.json)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("align", help="alignment search against a task's causal model (IIA per layer and position)")
    p.add_argument("task", choices=TASKS, help="the causal model: addition (carry), ioi, ravel, hierarchical_equality (toy)")
    p.add_argument("--variables", nargs="*", default=None, help="high-level variables to align (default: the task's first)")
    p.add_argument("--layers", type=at_least(0), nargs="*", default=None, help="layers (default: about 6 spread over the model)")
    p.add_argument("--positions", nargs="*", default=None, help="named positions, e.g. last, b0, S2 (default: last)")
    p.add_argument("--component", default="resid_post", choices=sorted(COMPONENTS))
    p.add_argument("--featurizers", nargs="+", default=["das", "dbm"], choices=FEATURIZERS)
    p.add_argument("--k", type=at_least(1), default=4, help="DAS subspace size (Boundless: initial size)")
    p.add_argument("--sparsity", type=non_negative, default=0.05, help="DBM: weight of the mean mask")
    p.add_argument("--train", type=at_least(1), default=64, help="training examples per variable")
    p.add_argument("--test", type=at_least(1), default=64, help="test examples per variable")
    p.add_argument("--oversample", type=at_least(1), default=4, help="derive this many times more (the model errs on some)")
    p.add_argument("--epochs", type=at_least(1), default=2)
    p.add_argument("--batch-size", type=at_least(1), default=16)
    p.add_argument("--lr", type=positive, default=1e-2, help="DAS learning rate")
    p.add_argument("--mask-lr", type=positive, default=1e-1, help="DBM learning rate")
    p.add_argument("--keep-wrong", action="store_true",
                   help="keep examples the model answers wrong (default: drop them; for untrained test models)")
    p.add_argument("--objects", type=at_least(2), default=20,
                   help="hierarchical_equality: objects (20: over 5 seeds DAS reaches 0.90 IIA at layer 0; "
                        "with 1,000 the trained MLP spreads the variables and DAS gets 0.79)")
    p.add_argument("--hidden", type=at_least(2), default=16, help="hierarchical_equality: MLP width")
    p.add_argument("--toy-steps", type=at_least(1), default=2000, help="hierarchical_equality: MLP training steps")
    p.add_argument("--data", default="geonames-cities", help="ravel: registry dataset or RAVEL folder")
    p.add_argument("--entity-type", default="city")
    p.add_argument("--min-population", type=at_least(0), default=500_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=at_least(0), default=0, help="torch threads (0: leave torch's default)")
    p.add_argument("--out", help="output folder (default runs/align-<task>-<time>)")
    add_model_args(p)
    p.set_defaults(func=run)
