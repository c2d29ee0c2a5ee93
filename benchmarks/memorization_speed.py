"""Memorization training step: cached frozen states (fast path) vs a full forward each step (naive).

A step is forward + loss + backward + Adam step of one rank-1 ConsReFT on the last key token at
layer L, target = the first N tokens of Alice. The naive path runs the whole hooked model
(``reft.memorize.NaiveForward``); the fast path (``CachedForward``) reuses the residual stream after
layer L and the key's prefix KV cache, and runs only layers > L on positions >= the edited one.
Steps interleave (naive, fast, then fast, naive, ...) so that load on a shared machine hits both
alike; the table gives medians, the ratio naive / fast, the one-time caching cost and the thread
count. The first step's losses of both paths are compared as a check.

The floor: caching can at best remove the layers below L from the forward. Timed as plain parts
of the same step (interleaved with it): F_all = the naive path's forward, F_above = the fast
path's forward, B_above = the fast path's backward (activation-only: the same layers > L as the
naive backward). The speed-up's floor is (F_all + B_above) / (F_above + B_above); the goal is a
measured speed-up within 10% of it (>= 0.9 x floor).

Batched runs (``reft.memorize.memorize_batched``): K independent runs (here K seeds at one layer)
stacked along the batch with one intervention per row, vs the same K runs one after another;
throughput in run-steps per second (K x steps / seconds), each run a fixed number of steps.

    .venv/bin/python benchmarks/memorization_speed.py --tokens 128 --layers 5,15,25 --reps 8 --json runs/mem.json
    .venv/bin/python benchmarks/memorization_speed.py --quick --json runs/mem.json   # ~1.5 min
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
from reft.memorize import (CachedForward, MemorizeConfig, NaiveForward, load_text, memorization_loss, memorize,
                           memorize_batched, task_for)

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

    def step() -> tuple[float, float, float, float]:
        """(step seconds, loss, forward seconds, backward seconds)."""
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = memorization_loss(forward.logits(edit), targets)
        forwarded = time.perf_counter()
        loss.backward()
        backwarded = time.perf_counter()
        optimizer.step()
        return time.perf_counter() - started, float(loss.detach()), forwarded - started, backwarded - forwarded
    return step


def batched_throughput(hm, text_ids, layer: int, n_tokens: int, k: int, steps: int, reps: int) -> dict:
    """Run-steps per second of K seeds trained one after another vs batched (fixed ``steps`` each)."""
    configs = [MemorizeConfig(n_tokens=n_tokens, layer=layer, seed=s, max_steps=steps, verify=False)
               for s in range(k)]
    tasks = [task_for(hm.tokenizer, "", n_tokens, seed=s, text_ids=text_ids) for s in range(k)]

    def sequential() -> float:
        started = time.perf_counter()
        for config, task in zip(configs, tasks):
            memorize(hm, task, config, progress=False)
        return time.perf_counter() - started

    def batched() -> float:
        started = time.perf_counter()
        memorize_batched(hm, text_ids, configs, progress=False)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {"sequential": [], "batched": []}
    for rep in range(reps):  # interleaved
        for name, fn in ((("sequential", sequential), ("batched", batched)) if rep % 2 == 0
                         else (("batched", batched), ("sequential", sequential))):
            times[name].append(fn())
    med = {name: statistics.median(t) for name, t in times.items()}
    run_steps = k * (steps + 1)  # each run: ``steps`` updates and one last evaluated forward
    return {"layer": layer, "n_tokens": n_tokens, "k": k, "steps": steps, "reps": reps,
            "sequential_s": round(med["sequential"], 3), "batched_s": round(med["batched"], 3),
            "sequential_run_steps_per_s": round(run_steps / med["sequential"], 2),
            "batched_run_steps_per_s": round(run_steps / med["batched"], 2),
            "ratio": round(med["batched"] / med["sequential"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m, a local folder, or 'tiny'")
    parser.add_argument("--text", default=str(ALICE) if ALICE.exists() else "alice")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--layers", default="5,15,25")
    parser.add_argument("--reps", type=int, default=8, help="timed steps per path and layer")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-runs", type=int, default=4, help="K runs for the batched-vs-sequential row")
    parser.add_argument("--batch-steps", type=int, default=10, help="optimizer steps per run in that row")
    parser.add_argument("--quick", action="store_true", help="N=64, layers 5 and 25, 4 reps, K=4 x 5 steps")
    parser.add_argument("--json", help="write the contract's JSON (benchmarks/README.md) here, atomically")
    parser.add_argument("--out", help="write the table as JSON here (older name of --json)")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.layers, args.reps, args.batch_steps = 64, "5,25", 4, 5
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
        parts: dict[str, list[float]] = {"F_all": [], "F_above": [], "B_above": [], "B_naive": []}
        for rep in range(args.reps):
            for name in (("naive", "fast") if rep % 2 == 0 else ("fast", "naive")):
                total, _, fwd, bwd = steps[name]()
                times[name].append(total)
                parts["F_all" if name == "naive" else "F_above"].append(fwd)
                parts["B_naive" if name == "naive" else "B_above"].append(bwd)
        med = {name: statistics.median(t) for name, t in times.items()}
        part = {name: statistics.median(t) for name, t in parts.items()}
        floor = (part["F_all"] + part["B_above"]) / (part["F_above"] + part["B_above"])
        speedup = med["naive"] / med["fast"]
        row = {"layer": layer, "n_tokens": args.tokens, "naive_ms": round(1000 * med["naive"], 1),
               "fast_ms": round(1000 * med["fast"], 1), "speedup": round(speedup, 2),
               "F_all_ms": round(1000 * part["F_all"], 1), "F_above_ms": round(1000 * part["F_above"], 1),
               "B_above_ms": round(1000 * part["B_above"], 1), "B_naive_ms": round(1000 * part["B_naive"], 1),
               "floor": round(floor, 2), "speedup_over_floor": round(speedup / floor, 3),
               "fast_setup_ms": round(1000 * setup, 1), "first_loss_naive": round(first["naive"], 6),
               "first_loss_fast": round(first["fast"], 6), "threads": args.threads, "reps": args.reps}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{'layer':>5} {'naive ms':>9} {'fast ms':>8} {'speedup':>8} {'setup ms':>9}  first loss naive / fast")
    for r in rows:
        print(f"{r['layer']:>5} {r['naive_ms']:>9.0f} {r['fast_ms']:>8.0f} {r['speedup']:>7.2f}x {r['fast_setup_ms']:>9.0f}"
              f"  {r['first_loss_naive']:.6f} / {r['first_loss_fast']:.6f}")
    ids = hm.tokenizer(load_text(args.text), add_special_tokens=False)["input_ids"]
    batch_layer = layers[len(layers) // 2]
    batched = batched_throughput(hm, ids, batch_layer, args.tokens, args.batch_runs, args.batch_steps,
                                 reps=2 if args.quick else 3)
    print(json.dumps(batched), flush=True)
    contract = []
    for r in rows:  # one row per layer: fast step vs the naive step; met = within 10% of the floor
        contract.append({"work": f"memorization step (N={r['n_tokens']}, L{r['layer']}, {hm.name})", "method": "fast",
                         "median_ms": r["fast_ms"], "baseline": "naive", "baseline_median_ms": r["naive_ms"],
                         "ratio": round(r["fast_ms"] / r["naive_ms"], 4),
                         "goal": f">= 0.9 x floor: speed-up {r['speedup']} vs floor {r['floor']}",
                         "met": r["speedup_over_floor"] >= 0.9, "n": r["reps"], "floor": r["floor"],
                         "F_all_ms": r["F_all_ms"], "F_above_ms": r["F_above_ms"], "B_above_ms": r["B_above_ms"]})
    contract.append({"work": f"{args.batch_runs} memorization runs x {args.batch_steps} steps "
                             f"(N={args.tokens}, L{batch_layer}, seeds 0..{args.batch_runs - 1})",
                     "method": "batched", "median_ms": round(1000 * batched["batched_s"], 1),
                     "baseline": "sequential", "baseline_median_ms": round(1000 * batched["sequential_s"], 1),
                     "ratio": batched["ratio"], "goal": None, "met": None, "n": batched["reps"],
                     "run_steps_per_s": batched["batched_run_steps_per_s"],
                     "baseline_run_steps_per_s": batched["sequential_run_steps_per_s"]})
    notes = [f"torch threads {args.threads}; interleaved steps; medians of {args.reps} (floor parts: medians of "
             f"the same steps' forward and backward phases)",
             f"batched vs sequential: {batched['batched_run_steps_per_s']} vs {batched['sequential_run_steps_per_s']} "
             f"run-steps/s (K={args.batch_runs}, {args.batch_steps} steps per run, verify off)"]
    payload = {"benchmark": "memorization", "threads": args.threads, "quick": args.quick, "rows": contract,
               "notes": notes, "model": hm.name, "layer_rows": rows, "batched": batched}
    for target in filter(None, (args.json, args.out)):
        from workbench.runs import atomic_write
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))


if __name__ == "__main__":
    main()
