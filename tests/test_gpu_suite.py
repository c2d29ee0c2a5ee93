"""CPU dry run of benchmarks/gpu_suite.py (--device cpu --tiny): every section runs, every correctness
check passes, every timing is positive, and nothing the GPU machine lacks (plotly, streamlit, nnsight,
gguf) gets imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ABSENT_ON_GPU = ("plotly", "streamlit", "nnsight", "gguf")
RUNNER = f"""
import atexit, runpy, sys
atexit.register(lambda: print("IMPORTED", sorted({{m.split('.')[0] for m in sys.modules}} & set({ABSENT_ON_GPU!r}))))
sys.argv = ["benchmarks/gpu_suite.py", *sys.argv[1:]]
runpy.run_path("benchmarks/gpu_suite.py", run_name="__main__")
"""
SECTIONS = ("env", "correctness", "loreft_two_layer", "loreft_all_layer", "das", "sweeps", "memorization",
            "checkpoints")


def _positive_numbers(tree, path=""):
    """Every number under a 'median_ms', 'steps_per_second' or 'cells_per_second' key."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("median_ms", "steps_per_second", "cells_per_second"):
                yield from ((f"{path}.{key}.{k}", v) for k, v in value.items())
            else:
                yield from _positive_numbers(value, f"{path}.{key}")


def test_gpu_suite_dry_run(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "IMPORTED []" in proc.stdout, proc.stdout[-500:]
    (json_path,) = tmp_path.glob("gpu-*.json")
    assert json_path.with_suffix(".md").exists()
    sections = json.loads(json_path.read_text())["sections"]
    for name in SECTIONS:
        assert name in sections and "error" not in sections[name] and "skipped" not in sections[name], (name, sections.get(name))
    correctness = sections["correctness"]
    assert correctness["all_passed"] and not correctness["failed"]
    for dtype in ("fp32", "bf16"):
        checks = {k: v for k, v in correctness["checks"][dtype].items() if k != "model"}
        assert len(checks) == 9 and "device_map" in checks
        assert all(c["passed"] is True for c in checks.values()), (dtype, checks)
    assert correctness["checks"]["fp32"]["patch_vs_hook"]["bit_exact"] is True
    timings = list(_positive_numbers(sections))
    assert len(timings) >= 20
    assert all(isinstance(v, (int, float)) and v > 0 for _, v in timings), timings
    for name in ("loreft_two_layer", "loreft_all_layer"):
        assert set(sections[name]["median_ms"]) == {"plain_fwd", "plain_fwd_bwd", "frozen_fwd_bwd", "hand_hook", "workbench"}
        assert sections[name]["ratios"]["workbench/plain_fwd_bwd"] > 0
    assert sections["checkpoints"]["d2048"]["rank4_one_layer_l1"]["total_bytes"] > 0
    assert sections["env"]["torch"] and sections["env"]["device"] == "cpu"
