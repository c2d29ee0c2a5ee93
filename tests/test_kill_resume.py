"""kill -9 at random points, then resume: the results equal an uninterrupted run's, and after
every kill no file in the output is half-written.

One child process runs every long job in turn (tests/kill_jobs.py): data fetch (from a throttled
server on 127.0.0.1), ReFT training with our loop and with the HF Trainer, DAS training, a RAVEL
comparison, a sentiment run and a memorization sweep. The reference child runs them all
uninterrupted and records when each starts; then, for each job, a child is killed (SIGKILL) at a
random moment inside that job's time span, and the next child resumes. Kill times come from a
seeded generator (``WORKBENCH_KILL_SEED``, default 0) so that a failure can be replayed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

DRIVER = Path(__file__).with_name("kill_jobs.py")
sys.path.insert(0, str(DRIVER.parent))
from kill_jobs import JOBS  # noqa: E402


def archive() -> bytes:
    """A RAVEL-layout data.tgz (synthetic files: no shared data needed), large enough to take a while."""
    from ravel_fixtures import quirky_nobel_release
    import tempfile
    folder = quirky_nobel_release(Path(tempfile.mkdtemp()) / "nobel")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=f"data/{path.name}")
        padding = os.urandom(400_000)  # incompressible bulk so the transfer spans many chunks
        info = tarfile.TarInfo("data/padding.bin")
        info.size = len(padding)
        tar.addfile(info, io.BytesIO(padding))
    return buffer.getvalue()


class Slow(BaseHTTPRequestHandler):
    """Serves the archive in 8 KB chunks 10 ms apart, honouring Range (so fetches resume)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body, start = self.server.payload, 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        try:
            for at in range(start, len(body), 8192):
                self.wfile.write(body[at:at + 8192])
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.payload = archive()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def child(out: Path, server) -> subprocess.Popen:
    payload = server.payload
    url = f"http://127.0.0.1:{server.server_port}/data.tgz"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, str(DRIVER), str(out), url, hashlib.sha256(payload).hexdigest(),
                             str(len(payload))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_to_end(out: Path, server) -> dict[str, tuple[float, float]]:
    """Run a child to completion; returns each job's (start, end) time since the child started."""
    proc, spans, opened = child(out, server), {}, time.monotonic()
    for line in proc.stdout:
        word, _, job = line.strip().partition(" ")
        if word in ("START", "END"):
            spans.setdefault(job, [0.0, 0.0])[word == "END"] = time.monotonic() - opened
    stderr = proc.stderr.read()
    assert proc.wait() == 0, stderr[-3000:]
    return {job: tuple(span) for job, span in spans.items()}


def kill_inside(out: Path, server, job: str, fraction: float, duration: float) -> None:
    """Start a child, wait until it starts ``job``, SIGKILL it ``fraction`` of the job's duration later."""
    proc = child(out, server)
    for line in proc.stdout:
        if line.strip() == f"START {job}":
            break
    else:
        proc.wait()
        return  # everything was already done
    time.sleep(fraction * duration)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


def check_nothing_half_written(out: Path) -> list[str]:
    """Every final-named file parses; returns the hidden temporaries (allowed only until resumed)."""
    temps = []
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        hf = next((p for p in path.parents if p.name.startswith("checkpoint-")), None)
        if hf is not None and not _readable(hf / "trainer_state.json"):
            temps.append(str(path.relative_to(out)))  # HF writes checkpoints file by file; ReftTrainer
            continue  # never resumes from one without its (last-written) trainer_state.json, and deletes it
        if any(part.startswith(".") for part in path.relative_to(out).parts):
            if path.name != ".sweep.lock" and ".partial" not in path.parts:
                temps.append(str(path.relative_to(out)))
            continue
        if path.suffix == ".json":
            assert _readable(path), path
        elif path.suffix == ".safetensors":
            load_file(str(path))
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".csv" and path.stat().st_size:
            pd.read_csv(path)
    return temps


def untimed(table: pd.DataFrame) -> str:
    """A table without its wall-clock columns, as comparable text (NaN == NaN)."""
    clocks = [c for c in table.columns if re.search(r"seconds|ms_per|per_second|_at$", c)]
    return table.drop(columns=clocks).to_csv(index=False)


def _readable(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def results_of(out: Path) -> dict:
    """What each job produced (timings and clocks dropped)."""
    found = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if not path.is_file() or any(p.startswith(".") or p.startswith("checkpoint") or p in ("resume", ".partial")
                                     for p in rel.parts) or path.name in ("DONE", "story.txt"):
            continue
        if path.suffix == ".safetensors":
            found[str(rel)] = {k: v.tolist() for k, v in load_file(str(path)).items()}
        elif path.suffix == ".parquet":
            found[str(rel)] = untimed(pd.read_parquet(path))
        elif path.name in ("config.json", "summary.json", "sweep_config.json", "MANIFEST.json",
                           "trainer_state.json", "training_args.json", "train_config.json"):
            data = json.loads(path.read_text().replace(str(out), "<out>"))  # the two runs' folders differ
            if isinstance(data, dict):
                for clock in [k for k in data if re.search(r"seconds|_at$|ms_per|per_second", k)]:
                    data.pop(clock, None)
            found[str(rel)] = data
        elif path.suffix in (".csv", ".html") and "figure" not in path.name:
            found[str(rel)] = path.read_bytes() if path.suffix == ".html" else untimed(pd.read_csv(path))
        elif path.suffix in (".json", ".txt", ".tsv", ".bin"):
            found[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_kill_anywhere_then_resume_equals_an_uninterrupted_run(tmp_path, server):
    reference = tmp_path / "reference"
    spans = run_to_end(reference, server)
    assert set(spans) == set(JOBS)
    rng = random.Random(int(os.environ.get("WORKBENCH_KILL_SEED", "0")))
    killed = tmp_path / "killed"
    for job in JOBS:
        start, end = spans[job]
        kill_inside(killed, server, job, rng.uniform(0.1, 0.9), end - start)
        check_nothing_half_written(killed)  # final-named files all parse; temporaries are hidden
    run_to_end(killed, server)
    assert check_nothing_half_written(killed) == []  # resumed runs cleaned up what the kills left
    expected, got = results_of(reference), results_of(killed)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
