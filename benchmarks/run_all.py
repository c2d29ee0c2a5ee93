"""Run every benchmark, one script after another, and write one results file plus a ratio table.

Each script follows the JSON contract in benchmarks/README.md (``--json PATH``, ``--quick``,
``--threads N``; rows of work / method / median / baseline / ratio / goal / met). Each script
interleaves the methods it compares itself; this runner only sequences the scripts (running two
at once would make them share cores and skew each other's timings). A script that fails, times
out, lacks ``--json`` or writes malformed JSON becomes a row saying so; the run goes on.

Writes ``benchmarks/results/<date>.json`` (machine, threads, every script's JSON, its exit status
and runtime) and ``<date>.md`` (one table: work | ours | baseline | ratio | goal | met); with
``--quick`` the stem is ``<date>-quick``. Each script's output goes to ``runs/bench-<date>/``.

    .venv/bin/python benchmarks/run_all.py                   # `make bench`
    .venv/bin/python benchmarks/run_all.py --quick           # `make bench-quick` (~5 min)
    .venv/bin/python benchmarks/run_all.py --only reft_memory,das --threads 2
    .venv/bin/python benchmarks/run_all.py --only das --update   # redo one script in today's table
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from workbench.runs import atomic_write  # noqa: E402


@dataclass(frozen=True)
class Bench:
    """One benchmark script: ``name`` keys it in the results; ``quick`` puts it in `make bench-quick`."""

    name: str
    script: str
    quick: bool = False


BENCHES = [
    Bench("sweep", "sweep_vs_peers.py", quick=True),
    Bench("das", "das_vs_pyvene.py", quick=True),
    Bench("reft_step", "reft_step_time.py", quick=True),
    Bench("reft_memory", "reft_memory.py", quick=True),
    Bench("memorization", "memorization_speed.py"),
    Bench("patch_cost_curves", "patch_cost_curves.py"),
    Bench("reft_cost_curves", "reft_cost_curves.py"),
]


def select(benches: list[Bench], quick: bool, only: str = "", skip: str = "") -> list[Bench]:
    """The benchmarks to run: the quick subset with ``quick``, then ``only``/``skip`` (comma lists).

    >>> [b.name for b in select(BENCHES, quick=True, skip="das")]
    ['sweep', 'reft_step', 'reft_memory']
    """
    names = {b.name for b in benches}
    for given in (only, skip):
        unknown = sorted(set(filter(None, given.split(","))) - names)
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}: valid are {', '.join(sorted(names))}")
    chosen = [b for b in benches if b.quick or not quick]
    if only:
        chosen = [b for b in benches if b.name in only.split(",")]
    return [b for b in chosen if b.name not in skip.split(",")]


def machine() -> dict:
    """CPU model, cores and library versions: what a reader needs to compare two tables.

    >>> sorted(machine())[:3]
    ['cores', 'cpu', 'platform']
    """
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "platform": platform.platform(),
            "python": platform.python_version(), "torch": ver("torch"), "transformers": ver("transformers")}


def _failure(bench: Bench, reason: str) -> list[dict]:
    return [{"work": f"{bench.script} (did not run)", "method": "workbench", "median_ms": None,
             "baseline": None, "baseline_median_ms": None, "ratio": None, "goal": None, "met": None,
             "failed": reason}]


def _tail(text: str, lines: int = 3) -> str:
    kept = [" ".join(line.split()) for line in text.strip().splitlines() if line.strip()][-lines:]  # argparse pads
    return " / ".join(kept)[-300:] or "no output"


def _check(payload) -> str | None:
    """Why a script's JSON breaks the contract, or None."""
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        return "JSON has no 'rows' list"
    if not payload["rows"]:
        return "JSON has no rows"
    for row in payload["rows"]:
        if not isinstance(row, dict) or "work" not in row:
            return f"row without 'work': {str(row)[:80]}"
    return None


def run_one(bench: Bench, *, quick: bool, threads: int, python: str, log_dir: Path, timeout: float,
            bench_dir: Path = ROOT / "benchmarks") -> dict:
    """Run one script with the JSON contract's flags; always returns a result (failed rows on error)."""
    script = bench_dir / bench.script
    result = {"name": bench.name, "script": bench.script, "returncode": None, "seconds": 0.0,
              "log": str(log_dir / f"{bench.name}.log")}
    if not script.exists():
        return {**result, "rows": _failure(bench, "script not found"), "notes": []}
    json_path = log_dir / f"{bench.name}.json"
    json_path.unlink(missing_ok=True)  # a stale file from an earlier run must not pass for this one
    cmd = [python, str(script), "--json", str(json_path), "--threads", str(threads)] + (["--quick"] if quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    # Its own session, so a timeout also ends the peer workers the script started.
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        code = None
    result.update(seconds=round(time.perf_counter() - start, 1), returncode=code, command=cmd)
    Path(result["log"]).write_text(output)
    if code is None:
        return {**result, "rows": _failure(bench, f"timed out after {timeout:.0f} s"), "notes": []}
    if code != 0:
        return {**result, "rows": _failure(bench, f"exit {code}: {_tail(output)}"), "notes": []}
    try:
        payload = json.loads(json_path.read_text())
    except FileNotFoundError:
        return {**result, "rows": _failure(bench, "exited 0 but wrote no --json file"), "notes": []}
    except json.JSONDecodeError as err:
        return {**result, "rows": _failure(bench, f"malformed JSON: {err}"), "notes": []}
    problem = _check(payload)
    if problem:
        return {**result, "rows": _failure(bench, problem), "notes": []}
    return {**payload, **result}


def keep_earlier(results: list[dict], earlier: dict, order: list[str]) -> list[dict]:
    """``results`` plus the scripts of an ``earlier`` document that this run did not redo, in ``order``.

    >>> [r["name"] for r in keep_earlier([{"name": "b", "new": 1}], {"benchmarks": [{"name": "a"}, {"name": "b"}]},
    ...                                  ["a", "b"])]
    ['a', 'b']
    """
    redone = {r["name"] for r in results}
    kept = [r for r in earlier.get("benchmarks", []) if r["name"] not in redone] + results
    rank = {name: i for i, name in enumerate(order)}
    return sorted(kept, key=lambda r: rank.get(r["name"], len(rank)))


def merge(results: list[dict], *, threads: int, quick: bool, command: str, info: dict | None = None) -> dict:
    """One document: machine, settings, every script's result, and all rows tagged with their script."""
    rows = [{"benchmark": r["name"], **row} for r in results for row in r["rows"]]
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
            "threads": threads, "quick": quick, "machine": info or machine(), "rows": rows,
            "benchmarks": results}


def _unit(row: dict) -> str:
    return row.get("unit", "ms")


def _value(row: dict, prefix: str = "") -> float | None:
    key = f"{prefix}median_{_unit(row).lower()}"
    return row.get(key)


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


def _cell(name, value, unit: str, n=None) -> str:
    if not name:
        return "—"
    if value is None:
        return f"{name}: not measured"
    return f"{name} {_num(value)} {unit}" + (f" (n={n})" if n else "")


def render_markdown(doc: dict) -> str:
    """The ratio table, with the machine, threads and per-script notes.

    >>> doc = {"date": "d", "command": "c", "threads": 1, "quick": False, "machine": {"cpu": "x", "cores": 2},
    ...        "rows": [{"work": "w", "method": "ours", "median_ms": 2.0, "baseline": "peer",
    ...                  "baseline_median_ms": 4.0, "goal": "<= 1", "met": True}], "benchmarks": []}
    >>> [line for line in render_markdown(doc).splitlines() if line.startswith("| w |")]
    ['| w | ours 2 ms | peer 4 ms | 0.5 | <= 1 | yes |']
    """
    m = doc["machine"]
    lines = [f"# Benchmarks{' (quick subset)' if doc['quick'] else ''}, {doc['date']}", "",
             f"- Command: `{doc['command']}`",
             f"- Machine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('usable_cores', m.get('cores'))} usable); "
             f"torch {m.get('torch')}, transformers {m.get('transformers')}, Python {m.get('python')}",
             f"- Threads: {doc['threads']} torch thread(s) per process",
             "- ours / baseline: medians of n interleaved runs; ratio = ours / baseline (lower is better)", "",
             "| work | ours | baseline | ratio | goal | met |", "| --- | --- | --- | --- | --- | --- |"]
    for row in doc["rows"]:
        unit = _unit(row)
        if row.get("failed"):
            lines.append(f"| {row['work']} | FAILED: {row['failed'].replace('|', '/')} | — | — | — | no |")
            continue
        ours, base = _value(row), _value(row, "baseline_")
        ratio = row.get("ratio")
        if ratio is None and ours is not None and base:
            ratio = ours / base
        met = {True: "yes", False: "no"}.get(row.get("met"), "—")
        lines.append(f"| {row['work']} | {_cell(row.get('method', 'workbench'), ours, unit, row.get('n'))} | "
                     f"{_cell(row.get('baseline'), base, unit)} | {'—' if ratio is None else _num(ratio)} | "
                     f"{row.get('goal') or '—'} | {met} |")
    lines += ["", "## Per script", ""]
    for r in doc["benchmarks"]:
        status = "ok" if r.get("returncode") == 0 and not r["rows"][0].get("failed") else "FAILED"
        lines.append(f"- **{r['name']}** (`benchmarks/{r['script']}`, {r.get('seconds', 0)} s, {status})")
        lines += [f"  - {note}" for note in r.get("notes", [])]
    return "\n".join(lines) + "\n"


def write_results(doc: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """``<stem>.json`` and ``<stem>.md`` in ``out_dir``, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic_write(paths[0], lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1) + "\n"))
    atomic_write(paths[1], lambda tmp: Path(tmp).write_text(render_markdown(doc)))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick subset, each script with --quick")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per script (default 1)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names to run")
    parser.add_argument("--skip", default="", help="comma-separated benchmark names to leave out")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per script before it counts as failed (default 900 quick, 2400 full)")
    parser.add_argument("--update", action="store_true",
                        help="keep the other scripts' results already in today's file (rerun a few with --only)")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--python", default=sys.executable, help="interpreter for the scripts")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: must be >= 1 (torch threads per benchmark process)")
    benches = select(BENCHES, args.quick, args.only, args.skip)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    stem = f"{day}-quick" if args.quick else day
    log_dir = ROOT / "runs" / f"bench-{stem}"
    log_dir.mkdir(parents=True, exist_ok=True)
    timeout = args.timeout or (900.0 if args.quick else 2400.0)
    command = "benchmarks/run_all.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not benches:
        parser.error("no benchmark left to run: check --only/--skip")
    earlier = {}
    existing = Path(args.out_dir) / f"{stem}.json"
    if args.update and existing.exists():
        earlier = json.loads(existing.read_text())
        if earlier.get("threads") != args.threads:
            parser.error(f"--update: {existing} was run with --threads {earlier.get('threads')}, not "
                         f"{args.threads}; rerun with that thread count or without --update")
    results = []
    for i, bench in enumerate(benches, 1):
        print(f"[{i}/{len(benches)}] {bench.script} ...", flush=True)
        result = run_one(bench, quick=args.quick, threads=args.threads, python=args.python,
                         log_dir=log_dir, timeout=timeout)
        failed = [row["failed"] for row in result["rows"] if row.get("failed")]
        print(f"    {result['seconds']} s: " + (f"FAILED ({failed[0]})" if failed else f"{len(result['rows'])} rows"),
              flush=True)
        results.append(result)
        # Rewritten after every script, so an interrupted run keeps what finished.
        everything = keep_earlier(results, earlier, [b.name for b in BENCHES])
        paths = write_results(merge(everything, threads=args.threads, quick=args.quick, command=command),
                              Path(args.out_dir), stem)
    print(f"wrote {paths[0]} and {paths[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
