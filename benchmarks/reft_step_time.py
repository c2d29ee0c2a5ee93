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

    .venv/bin/python benchmarks/reft_step_time.py --models random --reps 50
    .venv/bin/python benchmarks/reft_step_time.py --models smollm2 --reps 15
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
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mem-steps", type=int, default=3)
    parser.add_argument("--out", default=f"runs/reft-bench-{datetime.now():%Y%m%d-%H%M%S}")
    args = parser.parse_args()
    results = []
    for model in args.models.split(","):
        for labels in args.labels.split(","):
            result = run_config(model, labels, args.reps, args.warmup, args.threads, args.mem_steps)
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "config.json").write_text(json.dumps(vars(args), indent=1))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    sys.exit(main())
