"""ReFT training-step peak memory: workbench vs pyreft 0.1.0 + pyvene 0.1.8 (and a hand-written hook).

Issue 12's goal: "Peak memory at or under pyreft's" on the same model and batch. Each measurement
is a fresh worker process (benchmarks/reft_bench_worker.py: same model, same (B, T) batch, rank-4
LoReFT at layers 1 and 3 on the first and last prompt token, untied) that builds its model, then
runs ``--steps`` training steps (forward + backward + AdamW step) and reports its peak resident
memory above the level before the first step (VmHWM reset through /proc/self/clear_refs). A
fresh process per measurement keeps one method's freed-but-cached memory from hiding another's
peak. Each method gets the median of ``--reps`` processes, ``--jobs`` (default 2) side by side.

pyreft runs in its own venv (.peers/pyreft, transformers 4.45; `bash benchmarks/setup_peers.sh`);
without it the pyreft rows keep ``baseline_median_mib: null`` and a note says why.

    .venv/bin/python benchmarks/reft_memory.py --json runs/reft-memory.json          # random + SmolLM2
    .venv/bin/python benchmarks/reft_memory.py --quick --json runs/reft-memory.json  # random model, ~1 min idle
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workbench.runs import atomic_write  # noqa: E402

WORKER = ROOT / "benchmarks" / "reft_bench_worker.py"
PYTHONS = {"workbench": ROOT / ".venv" / "bin" / "python", "hook": ROOT / ".venv" / "bin" / "python",
           "pyreft": ROOT / ".peers" / "pyreft" / "bin" / "python"}
MODELS = {"random": "random Llama d=256, 4 layers", "smollm2": "SmolLM2-135M"}


def peak_mib(method: str, model: str, steps: int, threads: int, batch: int, seq: int) -> tuple[float, dict]:
    """One fresh worker: its peak resident memory (MiB) over ``steps`` steps, and its versions."""
    cmd = [str(PYTHONS[method]), str(WORKER), "--methods", method, "--model", model, "--threads", str(threads),
           "--batch", str(batch), "--seq", str(seq), "--labels", "response"]
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.run(cmd, input=f"mem {method} {steps}\nquit\n", stdout=subprocess.PIPE, stderr=err,
                              text=True, cwd=ROOT, timeout=900)
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or len(lines) < 2:
            err.seek(0)
            tail = " / ".join(err.read().strip().splitlines()[-2:])
            raise RuntimeError(f"{method} worker (exit {proc.returncode}): {tail or 'no output'}")
    return lines[1]["peak_kib"] / 1024, lines[0]


def measure(model: str, methods: list[str], reps: int, steps: int, threads: int, batch: int, seq: int,
            jobs: int = 1):
    """Median peak MiB per method over ``reps`` fresh processes, ``jobs`` of them at a time.

    Peak resident memory is per process, so running workers side by side does not change it (it
    only shortens the run); the order still alternates so no method always starts on a busy box.
    """
    order = [m for rep in range(reps) for m in (methods if rep % 2 == 0 else methods[::-1])]
    peaks = {m: [] for m in methods}
    info = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [(m, pool.submit(peak_mib, m, model, steps, threads, batch, seq)) for m in order]
        for i, (method, future) in enumerate(futures, 1):
            mib, info[method] = future.result()
            peaks[method].append(mib)
            print(f"  {model} {method} ({i}/{len(order)}): {mib:.1f} MiB", file=sys.stderr, flush=True)
    return {m: statistics.median(v) for m, v in peaks.items()}, peaks, info


def rows_for(model: str, med: dict, peaks: dict, reps: int, batch: int, seq: int, steps: int) -> list[dict]:
    work = f"ReFT step peak memory ({MODELS[model]}, batch {batch} x seq {seq}, {steps} steps)"
    rows = []
    for baseline, goal in (("pyreft", "<= 1.0"), ("hook", None)):
        if baseline not in peaks and baseline == "hook":
            continue  # --quick leaves the hook out; a missing pyreft still gets its row
        ours, base = med.get("workbench"), med.get(baseline)
        ratio = round(ours / base, 3) if ours is not None and base else None
        rows.append({"work": work, "method": "workbench", "unit": "MiB",
                     "median_mib": None if ours is None else round(ours, 1),
                     "baseline": "hand-written hook" if baseline == "hook" else "pyreft 0.1.0",
                     "baseline_median_mib": None if base is None else round(base, 1),
                     "ratio": ratio, "goal": goal, "met": None if goal is None or ratio is None else ratio <= 1.0,
                     "n": reps, "samples_mib": {"workbench": peaks.get("workbench"), baseline: peaks.get(baseline)}})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here (benchmark JSON contract)")
    parser.add_argument("--quick", action="store_true",
                        help="random model, workbench and pyreft only (no hand-written hook), 2 processes each")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (default 1)")
    parser.add_argument("--reps", type=int, default=None, help="processes per method (default 2)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes at a time (memory is per process)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per process")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--models", default=None, help="comma list of random,smollm2 (default both; random with --quick)")
    args = parser.parse_args(argv)
    for flag in ("threads", "jobs", "steps", "batch", "seq"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: must be >= 1")
    if args.reps is not None and args.reps < 1:
        parser.error(f"--reps {args.reps}: must be >= 1 (processes per method)")
    reps = args.reps or 2  # peaks vary by a few MiB between processes; timings need more samples
    models = (args.models or ("random" if args.quick else "random,smollm2")).split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models {','.join(unknown)}: valid are {', '.join(MODELS)}")
    if "smollm2" in models:  # the worker reads the weights from the workbench cache
        from workbench.models import prepare_default_model
        prepare_default_model()

    methods, notes = ["workbench"] + ([] if args.quick else ["hook"]), []
    if (ROOT / ".peers" / "pyreft" / ".ready").exists():
        methods.append("pyreft")
    else:
        notes.append("pyreft missing: run `bash benchmarks/setup_peers.sh pyreft`; its rows are not measured")
    rows, versions = [], {}
    for model in models:
        med, peaks, info = measure(model, methods, reps, args.steps, args.threads, args.batch, args.seq, args.jobs)
        versions.update({m: f"torch {i['torch']}, transformers {i['transformers']}" for m, i in info.items()})
        rows += rows_for(model, med, peaks, reps, args.batch, args.seq, args.steps)
    notes += [f"{m}: {v}" for m, v in sorted(versions.items())]
    notes.append("peak resident memory above the built model, one fresh process per sample; "
                 "pyreft runs transformers 4.45 in its venv, the workbench transformers 5")
    doc = {"benchmark": "reft_memory", "threads": args.threads, "quick": args.quick, "rows": rows, "notes": notes}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(text + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
