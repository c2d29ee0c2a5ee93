"""benchmarks/run_all.py: running, merging and rendering, on fake benchmark scripts.

The fake scripts are tiny Python files that follow (or break) the JSON contract; no model runs.
"""

from __future__ import annotations

import doctest
import importlib.util
import json
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


GOOD = textwrap.dedent("""
    import argparse, json
    p = argparse.ArgumentParser()
    p.add_argument("--json"); p.add_argument("--threads", type=int); p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    rows = [{"work": "fake sweep", "method": "workbench", "median_ms": 30.0, "baseline": "nnsight",
             "baseline_median_ms": 120.0, "ratio": 0.25, "goal": "<= 0.5", "met": True, "n": 5},
            {"work": "fake step", "method": "workbench", "median_ms": 10.0, "baseline": "pyreft",
             "baseline_median_ms": None, "ratio": None, "goal": "<= 1.0", "met": None, "n": 5},
            {"work": "fake memory", "method": "workbench", "unit": "MiB", "median_mib": 50.0,
             "baseline": "pyreft", "baseline_median_mib": 40.0, "ratio": 1.25, "goal": "<= 1.0", "met": False}]
    json.dump({"benchmark": "good", "threads": a.threads, "quick": a.quick, "rows": rows,
               "notes": [f"threads={a.threads} quick={a.quick}"]}, open(a.json, "w"))
""")
FAILS = "import sys; print('loading model'); sys.exit('RuntimeError: peer exploded')\n"
NO_JSON_FLAG = "import argparse; argparse.ArgumentParser().parse_args()\n"
BAD_JSON = "import argparse; p = argparse.ArgumentParser(); p.add_argument('--json'); p.add_argument('--threads')\n" \
           "a = p.parse_args(); open(a.json, 'w').write('{\"rows\": [')\n"


def _suite(run_all, tmp_path, scripts: dict[str, str], quick: bool = False, timeout: float = 30.0):
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    benches = []
    for name, source in scripts.items():
        if source is not None:
            (bench_dir / f"{name}.py").write_text(source)
        benches.append(run_all.Bench(name, f"{name}.py"))
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    results = [run_all.run_one(b, quick=quick, threads=2, python=sys.executable, log_dir=log_dir,
                               timeout=timeout, bench_dir=bench_dir) for b in benches]
    return run_all.merge(results, threads=2, quick=quick, command="run_all.py --threads 2",
                         info={"cpu": "Fake CPU 9000", "cores": 2, "torch": "9.9"})


def test_good_and_failing_scripts_merge_into_one_table(run_all, tmp_path):
    doc = _suite(run_all, tmp_path, {"good": GOOD, "fails": FAILS}, quick=True)
    json_path, md_path = run_all.write_results(doc, tmp_path / "results", "2026-01-01")
    saved = json.loads(json_path.read_text())
    assert [r["benchmark"] for r in saved["rows"]] == ["good", "good", "good", "fails"]
    assert saved["threads"] == 2 and saved["machine"]["cpu"] == "Fake CPU 9000"
    # The flags of the contract reached the script.
    assert saved["benchmarks"][0]["notes"] == ["threads=2 quick=True"]
    failed = saved["rows"][3]
    assert "exit 1" in failed["failed"] and "peer exploded" in failed["failed"]
    assert saved["benchmarks"][1]["returncode"] == 1

    table = md_path.read_text()
    assert "Fake CPU 9000, 2 cores" in table and "2 torch thread(s)" in table and "quick subset" in table
    lines = {line.split(" | ")[0]: line for line in table.splitlines() if line.startswith("| ")}
    assert lines["| fake sweep"] == "| fake sweep | workbench 30 ms (n=5) | nnsight 120 ms | 0.25 | <= 0.5 | yes |"
    assert lines["| fake step"] == "| fake step | workbench 10 ms (n=5) | pyreft: not measured | — | <= 1.0 | — |"
    assert lines["| fake memory"] == "| fake memory | workbench 50 MiB | pyreft 40 MiB | 1.25 | <= 1.0 | no |"
    assert lines["| fails.py (did not run)"].startswith("| fails.py (did not run) | FAILED: exit 1:")


def test_contract_breaches_become_failed_rows(run_all, tmp_path):
    doc = _suite(run_all, tmp_path, {"old": NO_JSON_FLAG, "bad": BAD_JSON, "gone": None})
    reasons = {r["benchmark"]: r["failed"] for r in doc["rows"]}
    assert "unrecognized arguments: --json" in reasons["old"]
    assert reasons["bad"].startswith("malformed JSON")
    assert reasons["gone"] == "script not found"
    assert run_all.render_markdown(doc).count("FAILED") == 6  # 3 rows + 3 per-script lines


def test_timeout_is_a_failed_row_and_ends_the_scripts_workers(run_all, tmp_path):
    # The script starts a "peer worker" of its own, as sweep_vs_peers.py does, then hangs.
    pid_file = tmp_path / "worker.pid"
    slow = (f"import subprocess, sys, time\np = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)\n")
    doc = _suite(run_all, tmp_path, {"slow": slow}, timeout=1.5)
    assert doc["rows"][0]["failed"] == "timed out after 2 s"
    assert doc["benchmarks"][0]["returncode"] is None
    worker = int(pid_file.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{worker}/status")
    assert not status.exists() or "zombie" in status.read_text(), "the script's worker outlived the timeout"


def test_selection_rejects_unknown_names(run_all):
    assert {b.name for b in run_all.select(run_all.BENCHES, quick=False)} >= {"sweep", "reft_memory"}
    assert [b.name for b in run_all.select(run_all.BENCHES, quick=False, only="das")] == ["das"]
    with pytest.raises(SystemExit, match="unknown benchmark.*nope.*valid are"):
        run_all.select(run_all.BENCHES, quick=False, only="nope")


def test_run_all_doctests(run_all):
    # pytest's addopts ignore benchmarks/, so the module's examples run here.
    assert doctest.testmod(run_all, optionflags=doctest.ELLIPSIS).failed == 0


def test_bad_flags_name_the_value_and_the_range(run_all, capsys):
    with pytest.raises(SystemExit):
        run_all.main(["--threads", "0"])
    assert "--threads 0: must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown benchmark.*sweeps.*valid are"):
        run_all.main(["--only", "sweeps"])
