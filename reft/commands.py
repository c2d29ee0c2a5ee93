"""``workbench reft train|generate``: train a ReFT model on a small instruction set and compare
generations before and after, or generate with a saved one.

    workbench reft train --dataset persona --layers 6,12,18 --positions f3+l3 --rank 4 --epochs 10 \\
        --out runs/reft-persona
    workbench reft generate --reft runs/reft-persona --prompt "Who are you?" --compare

Registered as the ``workbench.commands`` entry point ``reft`` (pyproject.toml).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

from workbench.commands.common import add_model_args, at_least, load_from_args, positive
from workbench.runs import atomic_write, write_summary

from workbench.data.instructions import DATASETS, persona_eval_prompts


def _load_pairs(spec: str) -> list[tuple[str, str]]:
    """A built-in dataset name or a JSON/JSONL file of {"instruction": ..., "response": ...} objects."""
    if spec in DATASETS:
        return DATASETS[spec]()
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec!r}: neither a built-in ({sorted(DATASETS)}) nor a file; give a "
                                f"built-in name or the path of a JSON/JSONL file")
    text = path.read_text()
    items = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    if not items:
        raise ValueError(f"{path}: no instruction/response pairs; give at least one "
                         f'{{"instruction": ..., "response": ...}} object')
    try:
        return [(item["instruction"], item["response"]) for item in items]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: expected a list of objects with 'instruction' and 'response' keys") from None


def _show(title: str, prompts: list[str], before: list[str], after: list[str] | None) -> None:
    print(title)
    for i, prompt in enumerate(prompts):
        print(f"  > {prompt}")
        print(f"    base: {before[i]}")
        if after is not None:
            print(f"    reft: {after[i]}")


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .config import ReftConfig
    from .data import tokenize_pairs
    from .generate import generate
    from .model import get_reft_model
    from .train import TrainConfig, train

    started = time.time()
    torch.manual_seed(args.seed)
    hm = load_from_args(args)
    try:
        layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else (hm.n_layers // 3, 2 * hm.n_layers // 3)
    except ValueError:
        raise ValueError(f"--layers {args.layers!r}: expected comma-separated layer numbers such as '1,2'") from None
    config = ReftConfig(layers=layers, rank=args.rank, kind=args.kind, component=args.component,
                        positions=args.positions, tied=args.tied, dropout=args.dropout)
    reft = get_reft_model(hm, config)
    reft.print_trainable_parameters()
    chat = False if args.no_chat_template else None
    pairs = _load_pairs(args.dataset)
    rows = tokenize_pairs(hm.tokenizer, pairs, chat_template=chat, max_length=args.max_length)
    prompts = args.prompt or (persona_eval_prompts() if args.dataset == "persona" else [p for p, _ in pairs[:4]])
    gen = dict(max_new_tokens=args.max_new_tokens, chat_template=chat, progress=True)
    before = generate(reft, prompts, intervene=False, **gen)
    out = Path(args.out or f"runs/reft-{datetime.now():%Y%m%d-%H%M%S}")
    train_config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               grad_accum=args.grad_accum, save_every=args.save_every, output_dir=str(out),
                               seed=args.seed, mixed_precision=args.mixed_precision)
    result = train(reft, rows, train_config, resume=not args.no_resume)
    after = generate(reft, prompts, **gen)
    _show("held-out prompts (base model vs ReFT):", prompts, before, after)
    losses = [h["loss"] for h in result.history if "loss" in h]
    print(f"trained {result.steps} steps in {result.seconds:.0f} s; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    record = {"command": "reft train", **{k: v for k, v in vars(args).items() if k != "func"},
              "reft_config": config.to_dict(), "trainable_params": reft.num_trainable_parameters(),
              "base_params": reft.num_base_parameters(), "seconds": round(time.time() - started, 1),
              "generations": [{"prompt": p, "base": b, "reft": a} for p, b, a in zip(prompts, before, after)]}
    summary = {"model": hm.name, "steps": result.steps, "train_seconds": round(result.seconds, 1),
               "loss_first": losses[0] if losses else None, "loss_final": losses[-1] if losses else None,
               "trainable_params": record["trainable_params"], "seconds": record["seconds"]}
    write_summary(out, {"command": "reft train", **summary})
    # config.json last and atomically: its presence marks the run complete, as save_run does
    atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2, default=str)))
    print(f"wrote {out}/ (reft_config.json, interventions.safetensors, history.json, summary.json, config.json)")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .loading import load_reft

    hm = load_from_args(args)
    reft = load_reft(args.reft, hm, check_base=not args.skip_base_check)
    chat = False if args.no_chat_template else None
    prompts = args.prompt or persona_eval_prompts()
    gen = dict(max_new_tokens=args.max_new_tokens, chat_template=chat, progress=True)
    after = generate(reft, prompts, **gen)
    before = generate(reft, prompts, intervene=False, **gen) if args.compare else None
    if before is None:
        for prompt, text in zip(prompts, after):
            print(f"> {prompt}\n{text}")
    else:
        _show(f"prompts (base model vs ReFT from {args.reft}):", prompts, before, after)
    return 0


def register(sub) -> None:
    reft = sub.add_parser("reft", help="representation finetuning: train or generate with LoReFT/DiReFT/ConsReFT")
    verbs = reft.add_subparsers(dest="reft_command", required=True)

    tr = verbs.add_parser("train", help="train interventions on an instruction set; show before/after generations")
    tr.add_argument("--dataset", default="persona",
                    help=f"built-in ({', '.join(sorted(DATASETS))}) or a JSON/JSONL file of instruction/response")
    tr.add_argument("--layers", help="comma-separated layers (default: n/3 and 2n/3)")
    tr.add_argument("--component", default="resid_post")
    tr.add_argument("--positions", default="f3+l3", help="prompt positions: l1, f1+l1, f3+l3, ...")
    tr.add_argument("--rank", type=at_least(1), default=4)
    tr.add_argument("--kind", default="loreft", choices=["loreft", "direft", "consreft"])
    tr.add_argument("--tied", action="store_true", help="share weights between first and last positions")
    tr.add_argument("--dropout", type=float, default=0.0)
    tr.add_argument("--epochs", type=at_least(1), default=10)
    tr.add_argument("--batch-size", type=at_least(1), default=8)
    tr.add_argument("--grad-accum", type=at_least(1), default=1)
    tr.add_argument("--lr", type=positive, default=4e-3)
    tr.add_argument("--max-length", type=at_least(1), default=256)
    tr.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    tr.add_argument("--save-every", type=at_least(0), default=0, help="checkpoint every N optimizer steps")
    tr.add_argument("--no-resume", action="store_true", help="ignore a checkpoint in --out")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--prompt", action="append", help="prompt to compare before/after (repeatable)")
    tr.add_argument("--max-new-tokens", type=at_least(1), default=40)
    tr.add_argument("--no-chat-template", action="store_true", help="plain prompts even for chat models")
    tr.add_argument("--out", help="output folder (default runs/reft-<time>)")
    add_model_args(tr)
    tr.set_defaults(func=run_train)

    ge = verbs.add_parser("generate", help="generate with a saved ReFT model")
    ge.add_argument("--reft", required=True, help="folder written by 'workbench reft train'")
    ge.add_argument("--prompt", action="append", help="prompt (repeatable; default: the persona eval prompts)")
    ge.add_argument("--max-new-tokens", type=at_least(1), default=40)
    ge.add_argument("--compare", action="store_true", help="also print the base model's generations")
    ge.add_argument("--no-chat-template", action="store_true")
    ge.add_argument("--skip-base-check", action="store_true", help="load even if the base weights differ")
    add_model_args(ge)
    ge.set_defaults(func=run_generate)
