"""GPU suite: correctness on CUDA (fp32, bf16) and interleaved step timings, in one run (< 8 min on an H200).

Sections (each prints its progress and rewrites the JSON atomically when done, so a timeout still
leaves results in ``--out``):
  env            torch/transformers versions, device name, threads, TF32 flags, date
  correctness    per dtype, on a random Llama (d=512, 4 layers): empty plan == plain forward and Patch ==
                 a hand-written hook (bit-exact), workbench LoReFT == a hand-written hook at equal
                 weights, LoReFT (reft.train) and DAS (train_alignment) losses fall, save -> load exact,
                 batched cached generation == the no-cache reference, patch_sweep == per-cell runs
  loreft_*       random Llama d=2048, 16 layers, vocab 32k, batch 8 x seq 256 (prompt = first half,
                 labels on the second), bf16: interleaved plain fwd+bwd / hand-written hook /
                 workbench LoReFT steps (plus plain fwd and frozen fwd+bwd), warm-up, medians, ratios
                 and the peers README's pyreft anchors. two_layer: rank 4 at layers 4 and 12, f1+l1
                 untied (goal <= 0.8x plain fwd+bwd); all_layer: rank 8 on all 16 layers, f7+l7 tied
                 (goal <= 1.0x). Definitions of each timed step: benchmarks/_gpu_timing.py.
  das            one DAS step (k=64 at L8, cached sources, Adam) on the same model and batch
  sweeps         cells per second of patch_sweep / head_sweep / one run per cell, on SmolLM2
  memorization   steps per second of the cached and the naive memorization paths, SmolLM2, N=256, and
                 run-steps per second of 8 runs batched in one cached forward (one edit per row)
  checkpoints    bytes of saved rank-4 LoReFTs at d=2048 and d=576 (SmolLM2's width)
Outputs: ``<out>/gpu-<date>.json`` and ``<out>/gpu-<date>.md`` (default out: benchmarks/results).
``--tiny --device cpu`` shrinks everything (d=64 models, batch 2 x seq 32, a few steps, a random
Llama with a word tokenizer instead of SmolLM2): the dry run of tests/test_gpu_suite.py.

The GPU machine has no network and no gguf package; SmolLM2 travels as a GGUF in two parts
(../shared/gpu/README.md). On the development machine: ``bash benchmarks/gpu_prepare.sh`` builds
.gpu-model/ (part_aa, part_ab, whl/) and prints the two ``run`` commands, which are:
  run 1 (carry [".gpu-model/part_aa"]):
    mkdir -p /tmp/keep && cp .gpu-model/part_aa /tmp/keep/
  run 2 at once (carry [".gpu-model/part_ab", ".gpu-model/whl"], timeout_s 560):
    cat /tmp/keep/part_aa .gpu-model/part_ab > /tmp/SmolLM2-135M-Instruct.Q4_1.gguf &&
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu-model/whl/*.whl &&
    PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_suite.py
        --smollm2-gguf /tmp/SmolLM2-135M-Instruct.Q4_1.gguf --out $OUT --time-budget 420
Locally:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gpu_suite.py --device cpu --tiny --out /tmp/gpu-dry
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # _gpu_* helpers and the workbench/reft packages

import torch  # noqa: E402

from _gpu_common import BIG, BIG_TINY, DTYPES, LlamaShape, lm_batch, load_smollm2, random_llama, word_tokenizer  # noqa: E402
from _gpu_report import markdown  # noqa: E402

DEFAULT_GGUF = "/tmp/SmolLM2-135M-Instruct.Q4_1.gguf"
WORKBENCH_FOLDER = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "smollm2-135m"
SMOLLM2_SHAPE = LlamaShape(d=576, layers=30, vocab=49152, heads=9, kv_heads=3, intermediate=1536)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="fp32,bf16", help="dtypes of the correctness checks")
    p.add_argument("--timing-dtype", default="bf16")
    p.add_argument("--tiny", action="store_true", help="tiny models and few steps (CPU dry run)")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--smollm2", help="SmolLM2 as a Hugging Face folder")
    p.add_argument("--smollm2-gguf", help=f"SmolLM2 as a GGUF file (default: {DEFAULT_GGUF}, else the prepared workbench folder, when they exist)")
    p.add_argument("--steps", type=int, help="timed steps per method (default 30; 3 with --tiny)")
    p.add_argument("--time-budget", type=float, default=420.0, help="seconds; later sections stop early")
    p.add_argument("--sections", default="env,correctness,loreft,das,sweeps,memorization,checkpoints")
    return p.parse_args(argv)


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.started = args, time.monotonic()
        self.deadline = self.started + args.time_budget
        self.device = torch.device(args.device)
        self.steps = args.steps or (3 if args.tiny else 30)
        self.warmup = 1 if args.tiny else 5
        self.stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"suite": "gpu_suite", "tiny": args.tiny, "argv": sys.argv[1:], "sections": {}}
        self._big = self._smol = None

    # ---- bookkeeping ------------------------------------------------------------------------
    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.started, 1)
        for suffix, text in ((".json", json.dumps(self.results, indent=1, default=str)), (".md", markdown(self.results))):
            path = self.out / f"gpu-{self.stamp}{suffix}"
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, path)  # atomic: a reader (or a timeout) never sees half a file

    def section(self, name: str, fn) -> None:
        if time.monotonic() > self.deadline:
            self.results["sections"][name] = {"skipped": "time budget spent"}
            self.log(f"{name}: skipped (time budget)")
        else:
            self.log(f"{name} ...")
            started = time.monotonic()
            try:
                result = fn()
            except Exception as error:  # one broken section must not lose the others
                result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-3000:]}
                self.log(f"{name}: ERROR {type(error).__name__}: {error}")
            result["seconds"] = round(time.monotonic() - started, 1)
            self.results["sections"][name] = result
            self.log(f"{name} done in {result['seconds']} s")
        self.write()

    # ---- models -----------------------------------------------------------------------------
    def big(self):
        if self._big is None:
            shape = BIG_TINY if self.args.tiny else BIG
            seq, batch = (32, 2) if self.args.tiny else (256, 8)
            model = random_llama(shape, DTYPES[self.args.timing_dtype], self.device)
            self._big = (shape, model, lm_batch(shape.vocab, batch, seq, self.device))
        return self._big

    def smol(self):
        """(HookedModel fp32, description): SmolLM2 if given or found, else a random Llama stand-in."""
        from workbench import HookedModel
        if self._smol is None:
            a = self.args
            folder, gguf = a.smollm2, a.smollm2_gguf
            if not (a.tiny or folder or gguf):  # defaults: the reassembled GGUF (GPU), the prepared folder (dev)
                gguf = DEFAULT_GGUF if Path(DEFAULT_GGUF).exists() else None
                folder = None if gguf or not (WORKBENCH_FOLDER / "config.json").exists() else str(WORKBENCH_FOLDER)
            if folder or gguf:
                started = time.monotonic()
                model, tok = load_smollm2(folder, gguf)
                self._smol = (HookedModel(model.to(self.device), tok, name="SmolLM2-135M-Instruct"),
                              {"model": "SmolLM2-135M-Instruct", "source": folder or gguf,
                               "load_s": round(time.monotonic() - started, 1)})
            else:
                shape = LlamaShape(d=64, layers=4, vocab=512, heads=4, kv_heads=2, intermediate=128) if a.tiny else SMOLLM2_SHAPE
                model = random_llama(shape, torch.float32, self.device)
                self._smol = (HookedModel(model, word_tokenizer(), name="random-llama"),
                              {"model": f"random Llama d={shape.d}, {shape.layers} layers, vocab {shape.vocab} "
                                        f"(word tokenizer; no SmolLM2 given)", "shape": shape.describe()})
        return self._smol

    # ---- sections ---------------------------------------------------------------------------
    def env(self) -> dict:
        import transformers
        cuda = self.device.type == "cuda"
        return {"date": datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                "transformers": transformers.__version__, "python": sys.version.split()[0],
                "device": torch.cuda.get_device_name(self.device) if cuda else "cpu",
                "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
                "timing_dtype": self.args.timing_dtype, "correctness_dtypes": self.args.dtype.split(","),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "steps": self.steps, "warmup": self.warmup, "time_budget_s": self.args.time_budget}

    def correctness(self) -> dict:
        from _gpu_checks import failed_checks, run_checks
        out = {}
        for name in self.args.dtype.split(","):
            out[name] = run_checks(DTYPES[name], self.device, self.args.tiny, 8 if self.args.tiny else 20)
            self.log(f"  {name}: failed {failed_checks({name: out[name]}) or 'none'}")
        return {"checks": out, "failed": failed_checks(out), "all_passed": not failed_checks(out)}

    def loreft(self, name: str) -> dict:
        from _gpu_timing import time_loreft
        shape, model, batch = self.big()
        if name == "two_layer":
            layers, rank, n, tied = ((1, 3) if self.args.tiny else (4, 12)), 4, 1, False
        else:
            layers, rank, n, tied = tuple(range(shape.layers)), 8, 7, True
        result = time_loreft(model, batch, name, layers, rank, n, n, tied, self.warmup, self.steps, self.deadline)
        self.log(f"  {result['median_ms']} ratios {result['ratios']}")
        return {"model": shape.describe(), "dtype": self.args.timing_dtype,
                "batch": list(batch["input_ids"].shape), **result}

    def das(self) -> dict:
        from _gpu_timing import time_das
        shape, model, batch = self.big()
        result = time_das(model, batch, shape.layers // 2, 8 if self.args.tiny else 64, self.warmup, self.steps,
                          self.deadline)
        self.log(f"  {result['median_ms']}")
        return {"model": shape.describe(), "dtype": self.args.timing_dtype, **result}

    def sweeps(self) -> dict:
        from _gpu_timing import cast_copy, time_sweeps
        from workbench import HookedModel
        hm, info = self.smol()
        half = HookedModel(cast_copy(hm.model, DTYPES[self.args.timing_dtype]), hm.tokenizer, name=hm.name)
        result = time_sweeps(half, max(3, self.steps // 5), self.deadline)
        self.log(f"  cells/s {result['cells_per_second']}")
        return {**info, "dtype": self.args.timing_dtype, **result}

    def memorization(self) -> dict:
        from _gpu_timing import cast_copy, time_memorization
        from workbench import HookedModel
        hm, info = self.smol()
        n_tokens, out = (16 if self.args.tiny else 256), {**info}
        layer = hm.n_layers // 2
        for name in dict.fromkeys([self.args.timing_dtype, "fp32"]):
            model = hm.model if name == "fp32" else cast_copy(hm.model, DTYPES[name])
            run = HookedModel(model, hm.tokenizer, name=hm.name)
            out[name] = time_memorization(run, n_tokens, layer, self.warmup, self.steps, self.deadline)
            self.log(f"  {name}: steps/s {out[name]['steps_per_second']}")
        return out

    def checkpoints(self) -> dict:
        from _gpu_timing import checkpoint_bytes
        return {f"d{d}": checkpoint_bytes(d, self.device) for d in (2048, 576)}

    def run(self) -> dict:
        wanted = self.args.sections.split(",")
        plan = [("env", self.env), ("correctness", self.correctness),
                ("loreft_two_layer", lambda: self.loreft("two_layer")),
                ("loreft_all_layer", lambda: self.loreft("all_layer")),
                ("das", self.das), ("sweeps", self.sweeps), ("memorization", self.memorization),
                ("checkpoints", self.checkpoints)]
        for name, fn in plan:
            if name in wanted or name.split("_")[0] in wanted:
                self.section(name, fn)
        self.log(f"wrote {self.out / f'gpu-{self.stamp}.json'} and .md")
        print(markdown(self.results), flush=True)
        return self.results


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    results = Suite(args).run()
    broken = [n for n, s in results["sections"].items() if "error" in s]
    failed = results["sections"].get("correctness", {}).get("failed", [])
    return 1 if broken or failed else 0


if __name__ == "__main__":
    sys.exit(main())
