"""ReFT training step time and peak memory: workbench vs pyreft 0.1.0 + pyvene 0.1.8 vs a
hand-written ``register_forward_hook`` LoReFT.

Reference config (../shared/peers/README.md): rank-4 LoReFT at layers 1 and 3, first and last
prompt token with untied weights, batch 8 x seq 64, 1 torch thread; models: a random Llama
(d=256, 4 layers, vocab 32,000) and SmolLM2-135M (real weights). A step is forward + backward +
AdamW step. Labels: ``response`` (loss on the second half of each sequence, as in instruction
tuning: the prompt is the first half) and ``all`` (every token).

Two worker processes (benchmarks/reft_bench_worker.py) run in lockstep, one step at a time, so
the four methods interleave (A B C D, then D C B A, ...):
  workbench (.venv, transformers 5)         hook5 (.venv, hand-written hook)
  pyreft (.peers/pyreft, transformers 4.45) hook4 (.peers/pyreft, hand-written hook)
pyreft cannot run on transformers 5 (its trainer and pins), so its ratio is given directly
(workbench / pyreft, different processes and transformers versions) and chained through the
hand-written hook in each environment (workbench/hook5 x hook4/pyreft).

Peak memory: a fresh worker per method; peak resident memory over 3 steps above the level after
building the model (VmHWM reset via /proc/self/clear_refs).

Goals (issue 12), all-token labels: workbench <= 0.8 x pyreft and <= 1.02 x the hand-written
hook; peak memory at or under pyreft's. ``--json`` writes the contract's rows (benchmarks/README.md).

    .venv/bin/python benchmarks/reft_step_time.py --models random --reps 50
    .venv/bin/python benchmarks/reft_step_time.py --models smollm2 --reps 15 --json runs/reft-step.json
    .venv/bin/python benchmarks/reft_step_time.py --quick --json runs/reft-step.json   # ~1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORKER = str(ROOT / "benchmarks" / "reft_bench_worker.py")
PYTHONS = {"workbench": str(ROOT / ".venv/bin/python"), "pyreft": str(ROOT / ".peers/pyreft/bin/python")}


class Worker:
    def __init__(self, env: str, methods: list[str], common: list[str]) -> None:
        self.proc = subprocess.Popen([PYTHONS[env], WORKER, "--methods", ",".join(methods), *common],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, cwd=ROOT)
        self.info = self.read()

    def read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("worker exited early")
            if line.startswith("{"):
                return json.loads(line)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def run_config(model: str, labels: str, reps: int, warmup: int, threads: int, mem_steps: int) -> dict:
    common = ["--model", model, "--labels", labels, "--threads", str(threads)]
    workers = {"workbench": Worker("workbench", ["workbench", "hook"], common),
               "pyreft": Worker("pyreft", ["pyreft", "hook"], common)}
    methods = [("workbench", "workbench"), ("workbench", "hook"), ("pyreft", "pyreft"), ("pyreft", "hook")]
    name = {("workbench", "hook"): "hook5", ("pyreft", "hook"): "hook4"}
    times = {name.get(m, m[1]): [] for m in methods}
    for rep in range(warmup + reps):
        for env, method in (methods if rep % 2 == 0 else methods[::-1]):
            seconds = workers[env].ask(f"step {method}")["seconds"]
            if rep >= warmup:
                times[name.get((env, method), method)].append(seconds)
    info = {env: w.info for env, w in workers.items()}
    for w in workers.values():
        w.close()
    memory = {}
    for env, method in methods:
        w = Worker(env, [method], common)
        memory[name.get((env, method), method)] = w.ask(f"mem {method} {mem_steps}")["peak_kib"] / 1024
        w.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": model, "labels": labels, "reps": reps, "threads": threads, "versions": info,
        "median_ms": {k: round(1000 * v, 1) for k, v in med.items()},
        "ratios": {
            "workbench/pyreft (direct)": round(med["workbench"] / med["pyreft"], 3),
            "workbench/hook5": round(med["workbench"] / med["hook5"], 3),
            "pyreft/hook4": round(med["pyreft"] / med["hook4"], 3),
            "hook5/hook4 (transformers 5 vs 4.45)": round(med["hook5"] / med["hook4"], 3),
            "workbench/pyreft (chained via hooks)": round(med["workbench"] / med["hook5"] * med["hook4"] / med["pyreft"], 3),
            "median per-rep workbench/pyreft": round(statistics.median(
                a / b for a, b in zip(times["workbench"], times["pyreft"])), 3),
            "median per-rep workbench/hook5": round(statistics.median(
                a / b for a, b in zip(times["workbench"], times["hook5"])), 3),
        },
        "peak_mib_above_model": {k: round(v, 1) for k, v in memory.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="random,smollm2")
    parser.add_argument("--labels", default="response,all")
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--smollm2-reps", type=int, default=20,
                        help="reps for SmolLM2 (a step there is ~8x the random model's; 20 keep make bench near an hour)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mem-steps", type=int, default=3)
    parser.add_argument("--out", default=f"runs/reft-bench-{datetime.now():%Y%m%d-%H%M%S}")
    parser.add_argument("--json", help="write the contract's JSON (benchmarks/README.md) here, atomically")
    parser.add_argument("--quick", action="store_true", help="the random model, 10 reps, 2 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.models, args.reps, args.warmup = "random", min(args.reps, 10), 2
    peer = (ROOT / ".peers" / "pyreft" / ".ready").exists() and Path(PYTHONS["pyreft"]).exists()
    if not peer:
        write_contract(args, [], [f"peer venv missing: {PYTHONS['pyreft']} (benchmarks/setup_peers.sh installs it)"])
        print("pyreft peer missing: rows written without baselines", file=sys.stderr)
        return
    results = []
    for model in args.models.split(","):
        for labels in args.labels.split(","):
            reps = min(args.reps, args.smollm2_reps) if model == "smollm2" else args.reps
            result = run_config(model, labels, reps, args.warmup, args.threads, args.mem_steps)
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "config.json").write_text(json.dumps(vars(args), indent=1))
    write_contract(args, results, [])
    print(f"wrote {out / 'results.json'}" + (f" and {args.json}" if args.json else ""))


def _row(work, method, ours, baseline, theirs, goal, n, unit="ms") -> dict:
    ratio = None if ours is None or not theirs else round(ours / theirs, 4)
    row = {"work": work, "method": method, f"median_{unit}": ours, "baseline": baseline,
           f"baseline_median_{unit}": theirs, "ratio": ratio, "goal": goal, "n": n,
           "met": None if ratio is None or goal is None else ratio <= float(goal.split()[-1])}
    if unit != "ms":
        row["unit"] = "MiB"
    return row


def write_contract(args, results: list[dict], notes: list[str]) -> None:
    """The contract's rows: per config, workbench vs pyreft and vs the hand-written hook (time and memory)."""
    if not args.json:
        return
    from workbench.runs import atomic_write
    rows = []
    for r in results:
        work = f"LoReFT step ({r['model']}, rank 4, layers 1,3, f1+l1 untied, 8 x 64, {r['labels']} labels)"
        med, mem = r["median_ms"], r["peak_mib_above_model"]
        all_labels = r["labels"] == "all"  # the goals are for all-token labels
        rows.append(_row(work, "workbench", med["workbench"], "pyreft", med["pyreft"], "<= 0.8" if all_labels else None,
                         r["reps"]))
        rows.append(_row(work, "workbench", med["workbench"], "hand-written hook", med["hook5"],
                         "<= 1.02" if all_labels else None, r["reps"]))
        rows.append(_row(f"{work}: peak memory above the model", "workbench", mem["workbench"], "pyreft", mem["pyreft"],
                         "<= 1.0", 1, unit="mib"))
        versions = r["versions"]
        notes.append(f"{r['model']}/{r['labels']}: pyreft runs on transformers {versions['pyreft']['transformers']}, "
                     f"ours on {versions['workbench']['transformers']}; hook5/hook4 = "
                     f"{r['ratios']['hook5/hook4 (transformers 5 vs 4.45)']}, chained workbench/pyreft = "
                     f"{r['ratios']['workbench/pyreft (chained via hooks)']}")
    if not rows:
        rows.append(_row("LoReFT step (pyreft peer missing)", "workbench", None, "pyreft", None, "<= 0.8", 0))
    notes.append(f"torch threads {args.threads}; interleaved A B C D / D C B A; medians of {args.reps}")
    payload = {"benchmark": "reft_step", "threads": args.threads, "quick": args.quick, "rows": rows, "notes": notes,
               "configs": results}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))


if __name__ == "__main__":
    sys.exit(main())
