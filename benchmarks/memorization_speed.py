"""Memorization training step: cached frozen states (fast path) vs a full forward each step (naive).

A step is forward + loss + backward + Adam step of one rank-1 ConsReFT on the last key token at
layer L, target = the first N tokens of Alice. The naive path runs the whole hooked model
(``reft.memorize.NaiveForward``); the fast path (``CachedForward``) reuses the residual stream after
layer L and the key's prefix KV cache, and runs only layers > L on positions >= the edited one.
Steps interleave (naive, fast, then fast, naive, ...) so that load on a shared machine hits both
alike; the table gives medians, the ratio naive / fast, the one-time caching cost and the thread
count. The first step's losses of both paths are compared as a check.

    .venv/bin/python benchmarks/memorization_speed.py --tokens 128 --layers 5,15,25 --reps 8 --threads 2
    .venv/bin/python benchmarks/memorization_speed.py --model tiny --reps 30      # no weights needed
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from reft.interventions import build_intervention
from reft.memorize import CachedForward, NaiveForward, load_text, memorization_loss, task_for

ROOT = Path(__file__).resolve().parents[1]
ALICE = ROOT.parent / "shared" / "data" / "alice" / "alice_pg11.txt"


def tiny_llama():
    """A random Llama (d=256, 8 layers, vocab 49,152 like SmolLM2's) with SmolLM2's tokenizer if cached."""
    import transformers

    from workbench import HookedModel
    from workbench.models import cache_dir
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=256, intermediate_size=512, num_hidden_layers=8,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    tokenizer = transformers.AutoTokenizer.from_pretrained(cache_dir() / "smollm2-135m")
    return HookedModel(transformers.LlamaForCausalLM(config).eval(), tokenizer, name="tiny-llama-d256")


def step_fn(forward, targets):
    torch.manual_seed(0)
    edit = build_intervention("consreft", forward.hm.layout.d_model, 1)
    optimizer = torch.optim.Adam(edit.parameters(), lr=1e-2)

    def step() -> tuple[float, float]:
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = memorization_loss(forward.logits(edit), targets)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - started, float(loss.detach())
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, a local folder, or 'tiny'")
    parser.add_argument("--text", default=str(ALICE) if ALICE.exists() else "alice")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", default="5,15,25")
    parser.add_argument("--reps", type=int, default=8, help="timed steps per path and layer")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", help="write the table as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model == "tiny":
        hm = tiny_llama()
    else:
        from workbench import load_model
        hm = load_model(args.model)
    for p in hm.model.parameters():
        p.requires_grad_(False)
    task = task_for(hm.tokenizer, load_text(args.text), args.tokens)
    layers = [int(x) for x in args.layers.split(",") if int(x) < hm.n_layers]
    print(f"model {hm.name} ({hm.n_layers} layers), N={args.tokens}, key {task.keys[0]!r} "
          f"({task.prompt_length} tokens), {args.threads} torch threads, {args.reps} interleaved steps per path")
    rows = []
    for layer in layers:
        started = time.perf_counter()
        naive = NaiveForward(hm, task, layer)
        fast = CachedForward(hm, task, layer)
        setup = time.perf_counter() - started
        steps = {"naive": step_fn(naive, task.target_ids), "fast": step_fn(fast, task.target_ids)}
        first = {name: step()[1] for name, step in steps.items()}  # also warm-up
        for _ in range(args.warmup - 1):
            for step in steps.values():
                step()
        times: dict[str, list[float]] = {"naive": [], "fast": []}
        for rep in range(args.reps):
            for name in (("naive", "fast") if rep % 2 == 0 else ("fast", "naive")):
                times[name].append(steps[name]()[0])
        med = {name: statistics.median(t) for name, t in times.items()}
        row = {"layer": layer, "n_tokens": args.tokens, "naive_ms": round(1000 * med["naive"], 1),
               "fast_ms": round(1000 * med["fast"], 1), "speedup": round(med["naive"] / med["fast"], 2),
               "fast_setup_ms": round(1000 * setup, 1), "first_loss_naive": round(first["naive"], 6),
               "first_loss_fast": round(first["fast"], 6), "threads": args.threads, "reps": args.reps}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'layer':>5} {'naive ms':>9} {'fast ms':>8} {'speedup':>8} {'setup ms':>9}  first loss naive / fast")
    for r in rows:
        print(f"{r['layer']:>5} {r['naive_ms']:>9.0f} {r['fast_ms']:>8.0f} {r['speedup']:>7.2f}x {r['fast_setup_ms']:>9.0f}"
              f"  {r['first_loss_naive']:.6f} / {r['first_loss_fast']:.6f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"model": hm.name, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
