"""Memory and state: repeated patch/cache/generate runs keep RSS flat, nothing keeps a model alive after
``del``, and two app sessions keep their own state.

RSS is read from /proc/self/statm (Linux) or psutil. Runs use a tiny model, so a leak of even a
few tensors per call (hidden states, hook closures, Collect values) would show as steady growth.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import warnings
import weakref
from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from workbench import AddVector, Collect, Patch, PlanItem

RUNS, WARMUP = 1000, 100
BASE, SOURCE = "the cat sat on the mat", "a dog sat in a city"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: 1 torch thread for the module


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import psutil
        return psutil.Process().memory_info().rss


def live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated reduce_op warns
        warnings.simplefilter("ignore", FutureWarning)
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def release_free_heap() -> None:
    """Hand malloc's free pages back to the OS (glibc), so RSS counts live memory only.

    Without it a leak can hide: memory freed by earlier tests stays resident in malloc's free lists
    and the leaked tensors reuse it, so RSS does not move (seen in CI: start == end)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS is then an upper bound, and the checks coarser
        pass


def growth_over(runs: int, step) -> tuple[int, int, int, int]:
    """RSS and live tensors after WARMUP calls of ``step`` and after ``runs`` in all."""
    for _ in range(WARMUP):
        step()
    release_free_heap()
    start, tensors = rss_bytes(), live_tensors()
    for _ in range(runs - WARMUP):
        step()
    release_free_heap()
    return start, rss_bytes(), tensors, live_tensors()


@pytest.mark.parametrize("what", ["patch", "cache", "generate"])
def test_a_thousand_runs_keep_rss_within_five_percent(what):
    hm = tiny_model("llama")
    plan = [PlanItem("L1.resid_post", "l1", Patch()), PlanItem("L0.mlp_act", "all", Patch(dims=[0, 3]))]
    steer = [PlanItem("L1.resid_post", "all", AddVector(torch.ones(32), scale=2.0))]
    steps = {
        "patch": lambda: hm.run(BASE, plan, sources=[SOURCE]),
        "cache": lambda: hm.cache([BASE, SOURCE], ["L0.resid_pre", "L1.mlp_act", "L2.head1.z"]),
        "generate": lambda: hm.generate(BASE, steer, max_new_tokens=2),
    }
    with torch.no_grad():
        start, end, tensors_before, tensors_after = growth_over(RUNS, steps[what])
    assert end <= start * 1.05, f"{what}: RSS grew from {start / 2**20:.1f} MiB to {end / 2**20:.1f} MiB over {RUNS} runs"
    # RSS is dominated by torch itself (~500 MB): also no tensor may survive a run, however small.
    assert tensors_after <= tensors_before, f"{what}: {tensors_after - tensors_before} more live tensors after {RUNS} runs"


def test_the_checks_see_a_real_leak():
    """Both measurements fail on a leak: 10% of the process's RSS spread over the runs (so the check
    is sensitive whatever else the test session holds), and one small tensor per run (count)."""
    kept, few = [], []
    per_run = max(32_000, int(0.10 * rss_bytes() / 4 / RUNS))  # float32 elements kept per run
    start, end, _, _ = growth_over(RUNS, lambda: kept.append(torch.ones(per_run)))
    assert end > start * 1.05
    hm = tiny_model("llama")
    with torch.no_grad():
        _, _, before, after = growth_over(200, lambda: few.append(hm.run(BASE, [])[0, -1, :2].clone()))
    assert after - before == 200 - WARMUP


def _all_hooks_gone(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_no_reference_cycle_keeps_a_model_alive():
    from reft import ReftConfig, get_reft_model
    from workbench.das import LowRankRotatedSpaceIntervention

    hm = tiny_model("llama")
    alive = weakref.ref(hm.model)
    collect = Collect()
    plan = [PlanItem("L1.resid_post", "l1", Patch()), PlanItem("L0.resid_post", "all", collect),
            PlanItem("L2.resid_post", "l1", LowRankRotatedSpaceIntervention(32, 2))]
    with torch.no_grad():
        hm.run(BASE, plan, sources=[SOURCE])
        with hm.intervene(plan, sources=[SOURCE]):
            hm.forward(BASE)
        hm.generate(BASE, [PlanItem("L1.resid_post", "all", AddVector(torch.ones(32)))], max_new_tokens=2)
        reft = get_reft_model(hm, ReftConfig(layers=(0, 2), rank=2, positions="f1+l1"))
        reft(**hm.tokenize([BASE, SOURCE]))
    assert _all_hooks_gone(hm.model)
    assert collect.values  # the plan ran; its interventions hold no model reference
    del hm, reft, plan
    gc.collect()
    assert alive() is None, f"the model is still referenced by {[type(r).__name__ for r in gc.get_referrers(alive())]}"
    assert collect.values[0].shape == (1, 6, 32)


def test_the_gc_check_sees_a_kept_reference():
    hm = tiny_model("llama")
    alive = weakref.ref(hm.model)
    keep = [hm]
    del hm
    gc.collect()
    assert alive() is not None
    del keep
    gc.collect()
    assert alive() is None


# ---- two app sessions at once ----------------------------------------------------------------
PAGES = Path(__file__).resolve().parents[1] / "app" / "pages"
PROMPT = "the cat sat on the"
SCALES = {"a": 2.0, "b": 40.0}


@pytest.fixture(scope="module")
def steering_app(tmp_path_factory):
    """A tiny model folder and one saved steering vector (the page with a steering scale)."""
    from app_helpers import save_tiny_model
    from workbench.steering import save_steering
    root = tmp_path_factory.mktemp("sessions")
    model_folder = save_tiny_model(root / "tiny-llama")
    results = root / "runs"
    save_steering(results / "interventions" / "steer", "L1.resid_post", torch.linspace(-1, 1, 32), scale=1.0)
    return model_folder, results


@pytest.fixture
def app_env(steering_app, monkeypatch):
    model_folder, results = steering_app
    monkeypatch.setenv("WORKBENCH_APP_MODEL", str(model_folder))
    monkeypatch.setenv("WORKBENCH_RESULTS_DIR", str(results))
    monkeypatch.delenv("WORKBENCH_INTERVENTIONS_DIR", raising=False)
    monkeypatch.delitem(sys.modules, "ui", raising=False)  # ui reads the folders from the env on import
    monkeypatch.syspath_prepend(str(PAGES.parent))
    return steering_app


def expected_top(model_folder: Path, results: Path, scale: float):
    """The page's "with" next-token table computed directly, outside the app."""
    from workbench import load_model
    from workbench.predictions import top_k_next_tokens
    from workbench.steering import load_steering
    hm = load_model(str(model_folder))
    plan, _ = load_steering(results / "interventions" / "steer")
    plan[0].intervention.scale = scale
    with torch.no_grad():
        return top_k_next_tokens(hm, PROMPT, 10, plan)


def session(scale: float):
    """One Interventions page session with the steering vector chosen and its scale set."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(PAGES / "3_Interventions.py"), default_timeout=90)
    at.run()
    box = at.selectbox(key="folder")
    box.select_index(next(i for i, o in enumerate(box.options) if "steer" in o)).run()
    at.text_area(key="prompt").input(PROMPT)
    at.number_input(key="new_tokens").set_value(2)
    at.number_input(key="scale").set_value(scale).run()
    assert not at.exception, at.exception
    return at


def compare(at) -> None:
    at.button(key="compare").click().run()
    assert not at.exception and not at.error, (at.exception, at.error)


def test_two_sessions_keep_their_own_steering_scale(app_env):
    model_folder, results = app_env
    a, b = session(SCALES["a"]), session(SCALES["b"])
    compare(a)
    compare(b)
    compare(a)  # after the other session ran with its own scale
    for name, at in (("a", a), ("b", b)):
        assert at.number_input(key="scale").value == SCALES[name]
        got = at.session_state["compared"]["top_with"]
        want = expected_top(model_folder, results, SCALES[name])
        assert got["token"].tolist() == want["token"].tolist(), name
        assert got["probability"].tolist() == pytest.approx(want["probability"].tolist(), abs=1e-6), name
    assert a.session_state["compared"]["top_with"]["probability"].tolist() != \
        b.session_state["compared"]["top_with"]["probability"].tolist()


def test_two_concurrent_sessions_keep_their_own_steering_scale(app_env, monkeypatch):
    """Both sessions press Compare at once. Model calls are serialized here (one lock), so the
    only interaction left is shared state: each must still see its own scale."""
    import threading
    from contextlib import contextmanager

    from workbench.hooked import HookedModel
    model_folder, results = app_env
    sessions = {name: session(scale) for name, scale in SCALES.items()}
    barrier, lock, local = threading.Barrier(2, timeout=60), threading.RLock(), threading.local()
    original = HookedModel.intervene

    @contextmanager
    def serialized(self, plan, sources=None, mode="prompt"):
        if plan and not getattr(local, "met", False):  # both sessions have set their scale by now
            local.met = True
            barrier.wait()
        with lock, original(self, plan, sources, mode):
            yield self

    monkeypatch.setattr(HookedModel, "intervene", serialized)
    threads = [threading.Thread(target=compare, args=(at,)) for at in sessions.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    monkeypatch.setattr(HookedModel, "intervene", original)
    for name, at in sessions.items():
        assert "compared" in at.session_state, f"session {name} did not finish"
        got = at.session_state["compared"]["top_with"]["probability"].tolist()
        want = expected_top(model_folder, results, SCALES[name])["probability"].tolist()
        assert got == pytest.approx(want, abs=1e-6), f"session {name} (scale {SCALES[name]}) got another scale's output"
