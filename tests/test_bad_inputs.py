"""Bad inputs, table-driven: every CLI flag and API argument given an invalid value gets a clear error.

A case is (area, what is given, the value, the call, the expected error type, and three regexes the
message must match: it names the bad value, the valid range or options, and the fix). A "clear"
error is one of CLEAR_TYPES (a CLI run: exit code 2 with an ``error:`` line) whose message matches
all three. A case marked ``unclear`` documents a known gap: the test only asserts that it raises.

``docs/bad_inputs.md`` is generated from these cases (``test_table_is_up_to_date`` fails when it
drifts):

    WORKBENCH_WRITE_BAD_INPUT_TABLE=1 pytest tests/test_bad_inputs.py
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from unittest import mock

import pytest
import torch

from conftest import FAMILIES, tiny_model

from workbench import AddVector, Patch, PlanItem, Site, ZeroAblation
from workbench.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
WRITE = os.environ.get("WORKBENCH_WRITE_BAD_INPUT_TABLE") == "1"
CLEAR_TYPES = (ValueError, IndexError, FileNotFoundError, TypeError, FloatingPointError)
FIX = (r"(?i)\b(use|give|pass|choose|pick|try|run|fetch|lower|load|save|shorten|restore|check|build|raise|"
       r"re-save|split|reinstall|name|list|select|fill|generate fewer|e\.g\.)\b")
m = importlib.import_module
LONG = " ".join(["the cat"] * 50)  # 100 tokens; the tiny models' context is 64


class CliError(Exception):
    """A CLI run that exited non-zero; the message is its ``error:`` line on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Case:
    area: str
    given: str             # what is given, in words
    value: str             # the bad value as typed
    call: Callable         # call(tmp) raises
    error: type            # expected exception type (CliError for the CLI)
    value_re: str          # the message names the bad value
    valid_re: str          # ... the valid range or options
    fix_re: str = FIX      # ... and the fix
    unclear: str = ""      # why this case has no clear error yet (the test then only wants an exception)

    @property
    def id(self) -> str:
        return re.sub(r"\W+", "-", f"{self.area} {self.given} {self.value}").strip("-")[:90]


# ---- helpers ---------------------------------------------------------------------------------
def cli(*argv: str, model: str | None = "llama") -> Callable:
    """A CLI call with ``workbench.models.load_model`` stubbed by a tiny model (None: the real one)."""
    def call(tmp: Path) -> None:
        args = [a.replace("TMP", str(tmp)) for a in argv]
        if not (tmp / "t.txt").exists():  # a text for --text / --texts
            (tmp / "t.txt").write_text("the cat sat on the mat .\n" * 20)
        err = io.StringIO()
        stub = mock.patch("workbench.models.load_model", lambda *a, **k: tiny_model(model)) if model else \
            contextlib.nullcontext()
        with stub, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(args)
            except SystemExit as exit:
                code = exit.code
        if code:
            lines = [line for line in err.getvalue().splitlines() if "error:" in line]
            raise CliError(code, lines[-1].strip() if lines else err.getvalue()[-300:])
    return call


def llama():
    return tiny_model("llama")


def reft_folder(tmp: Path, family: str = "llama") -> Path:
    from reft import ReftConfig, get_reft_model
    from reft.saving import save_reft
    folder = tmp / f"reft-{family}"
    if not (folder / "reft_config.json").exists():
        save_reft(get_reft_model(tiny_model(family), ReftConfig(layers=(1,), rank=2)), folder)
    return folder


def das_folder(tmp: Path) -> Path:
    from safetensors.torch import save_file
    from workbench.das import build_intervention
    folder = tmp / "das"
    folder.mkdir(exist_ok=True)
    m = build_intervention("das", 32, 2)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(folder / "intervention.safetensors"))
    (folder / "intervention.json").write_text(json.dumps({"method": "das", "site": "L1.resid_post", "d": 32, "k": 2}))
    return folder


def steering_folder(tmp: Path) -> Path:
    from workbench.steering import save_steering
    return save_steering(tmp / "steer", "L1.resid_post", torch.ones(32), scale=2.0)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damaged(folder_of: Callable, name: str, how: Callable) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        folder = folder_of(tmp)
        how(folder / name)
        return folder
    return make


def bad_json(path: Path) -> None:
    path.write_text('{"format": "workbench-reft/2", "config": {"layers": [1],')  # cut mid-object


def wrong_shape(path: Path) -> None:
    from safetensors.torch import load_file, save_file
    state = load_file(str(path))
    key = sorted(state)[0]
    state[key] = torch.zeros(*[s + 1 for s in state[key].shape])
    save_file(state, str(path))


def load_reft_from(make: Callable, **kwargs) -> Callable:
    def call(tmp):
        from reft import load_reft
        load_reft(make(tmp), llama(), **kwargs)
    return call


def load_das_from(make: Callable) -> Callable:
    def call(tmp):
        from workbench.das.saving import load_das
        load_das(make(tmp))
    return call


def load_steering_from(make: Callable) -> Callable:
    def call(tmp):
        from workbench.steering import load_steering
        load_steering(make(tmp))
    return call


def ravel_folder(tmp: Path, **override) -> Path:
    files = {"entity_attributes": {"Paris": {"Country": "France"}, "Rome": {"Country": "Italy"}},
             "attribute_to_prompts": {"Country": ["the %s is in the country of"]},
             "entity_to_split": {"Paris": "train", "Rome": "train"},
             "prompt_to_split": {"the %s is in the country of": "train"}}
    folder = tmp / "ravel"
    folder.mkdir(exist_ok=True)
    for name, obj in {**files, **override}.items():
        path = folder / f"ravel_city_{name}.json"
        path.unlink(missing_ok=True)
        if obj is not None:
            path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return folder


def reft_train(config=None, rows=None, lr=4e-3, family="llama", nan=False) -> Callable:
    def call(tmp):
        from reft import ReftConfig, get_reft_model
        from reft.data import tokenize_pairs
        from reft.train import TrainConfig, train
        hm = tiny_model(family)
        if nan:  # a NaN in the output weights: every logit, and the loss, is NaN
            hm.model.get_output_embeddings().weight.data[0, 0] = float("nan")
        reft = get_reft_model(hm, ReftConfig(layers=(1,), rank=2))
        data = tokenize_pairs(reft.tokenizer, [("the cat sat", "on the mat")] * 4, chat_template=False) \
            if rows is None else rows
        cfg = config() if config else TrainConfig(epochs=20, batch_size=2, lr=lr, progress=False, warmup_ratio=0.0,
                                                  max_grad_norm=None)
        train(reft, data, cfg)
    return call


def reft_trainer(**kwargs) -> Callable:
    def call(tmp):
        from transformers import TrainingArguments

        from reft import ReftConfig, get_reft_model
        from reft.hf_trainer import ReftTrainer
        reft = get_reft_model(tiny_model("llama"), ReftConfig(layers=(1,), rank=2))
        fsdp = kwargs.pop("fsdp", "")
        args = TrainingArguments(str(tmp / "hf"), report_to=[], use_cpu=True, fsdp=fsdp,
                                 fsdp_config={"fsdp_version": 2} if fsdp else None)
        ReftTrainer(model=reft, args=args, train_dataset=[], **kwargs)
    return call


def counterfactuals(n: int = 4):
    from workbench.das import CounterfactualData
    return CounterfactualData([[3, 5, 6]] * n, [[-1]] * n, [[3, 5, 7]] * n, [[-1]] * n, torch.full((n,), 9))


def das_train(config=None, data=None, nan=False) -> Callable:
    def call(tmp):
        from workbench.das import LowRankRotatedSpaceIntervention, TrainConfig, train_alignment
        cfg = config() if config else TrainConfig(epochs=5, batch_size=4, lr=1e-2, progress=False)
        hm = llama()
        if nan:  # a NaN in the output weights: the answer logits, and the loss, are NaN (cached path too)
            hm.model.get_output_embeddings().weight.data[0, 0] = float("nan")
        train_alignment(hm, "L1.resid_post", LowRankRotatedSpaceIntervention(32, 2),
                        counterfactuals() if data is None else data(), None, cfg)
    return call


def memorize_with(lr: float = 1e-2, nan: bool = False, **config) -> Callable:
    def call(tmp):
        from reft.memorize import MemorizeConfig, memorize
        from reft.memorize.targets import build_task
        task = build_task(list(range(5, 60)), lambda key: [3, 4, 5, 6], n_tokens=6, n_pairs=1, variant="natural",
                          seed=0)
        hm = llama()
        if nan:
            hm.model.get_output_embeddings().weight.data[0, 0] = float("nan")
        memorize(hm, task, MemorizeConfig(**{"n_tokens": 6, "layer": 1, "lr": lr, "max_steps": 50,
                                                  "verify": False, **config}), progress=False)
    return call


def write(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def sst_folder(tmp: Path, dev: str = "") -> Path:
    folder = tmp / "sst"
    folder.mkdir(exist_ok=True)
    for split in ("train", "dev", "test"):
        (folder / f"sst_{split}.txt").write_text(dev)
    return folder


def run_plan(item, text="the cat", sources=None, family="llama"):
    return lambda tmp: tiny_model(family).run(text, [item() if callable(item) else item], sources=sources)


# ---- the table -------------------------------------------------------------------------------
L = r"layer 7 out of range"
CASES: list[Case] = [
    # sites, positions, plans
    Case("sites", "Site.parse: unknown component", "'L3.resid'", lambda t: Site.parse("L3.resid"), ValueError,
         r"'resid'", r"expected one of \[", r"e\.g\."),
    Case("sites", "Site.parse: not a site string", "'3.resid_post'", lambda t: Site.parse("3.resid_post"),
         ValueError, r"'3\.resid_post'", r"L<layer>\.<component>", r"e\.g\."),
    Case("sites", "Site: a head on a non-head component", "Site(1, 'resid_post', head=0)",
         lambda t: Site(1, "resid_post", head=0), ValueError, r"head=0", r"component 'z'"),
    Case("sites", "Site: negative head", "Site(1, 'z', head=-1)", lambda t: Site(1, "z", head=-1), ValueError,
         r"-1", r">= 0"),
    Case("positions", "parse_positions: bad spec", "'f1+x'",
         lambda t: m("workbench.positions").parse_positions("f1+x"), ValueError, r"'f1\+x'",
         r"'l1', 'f1\+l1'", r"e\.g\."),
    Case("positions", "parse_positions: empty spec", "''",
         lambda t: m("workbench.positions").parse_positions(""), ValueError, r"''", r"'f1\+l1'"),
    Case("positions", "parse_positions: no tokens", "'f0+l0'",
         lambda t: m("workbench.positions").parse_positions("f0+l0"), ValueError, r"'f0\+l0'",
         r"first \+ last must be at least 1"),
    Case("positions", "index beyond the sequence", "[5] on 2 tokens",
         run_plan(lambda: PlanItem("L1.resid_post", [5], ZeroAblation())), IndexError, r"\[5\]",
         r"0\.\.1 or -2\.\.-1", r"use a shorter"),
    Case("positions", "Indices rows != batch", "3 rows for 2 examples",
         lambda t: llama().run(["the cat", "a dog"], [PlanItem("L1.resid_post", [[0], [1], [0]], ZeroAblation())]),
         ValueError, r"3 rows", r"batch of 2", r"give one row per example"),
    Case("plans", "PlanItem: not an Intervention", "torch.nn.Linear",
         lambda t: PlanItem("L1.resid_post", "l1", torch.nn.Linear(2, 2)), TypeError, r"Linear",
         r"workbench Intervention", r"e\.g\."),
    Case("plans", "PlanItem: source index beyond the sources", "source=1 with one source",
         run_plan(lambda: PlanItem("L1.resid_post", "l1", Patch(), source=1), sources=["a dog"]), ValueError,
         r"source 1", r"1 source input", r"pass|give"),
    # hooked model
    Case("hooked model", "run: Patch without sources", "sources=None",
         run_plan(lambda: PlanItem("L1.resid_post", "l1", Patch())), ValueError, r"read a source run",
         r"sources=", r"pass sources="),
    Case("hooked model", "run: source batch != base batch", "2 sources for 3 bases",
         lambda t: llama().run(["the cat", "a dog", "the mat"], [PlanItem("L1.resid_post", "l1", Patch())],
                               sources=[["the cat", "a dog"]]), ValueError, r"source batch size 2", r"base's 3",
         r"give one source per base"),
    Case("hooked model", "run: intervention of another hidden size", "AddVector(16) at d=32",
         run_plan(lambda: PlanItem("L1.resid_post", "l1", AddVector(torch.ones(16)))), ValueError,
         r"hidden size 16", r"the site has 32", r"build the intervention with hidden size 32"),
    Case("hooked model", "run: empty prompt", "''", lambda t: llama().run("", []), ValueError, r"''",
         r"at least one non-empty", r"give"),
    Case("hooked model", "run: unknown backend", "backend='pyvene'",
         lambda t: llama().run("the cat", [], backend="pyvene"), ValueError, r"'pyvene'", r"'hooks', 'nnsight'",
         r"use backend='hooks'"),
    Case("hooked model", "run: remote with the hooks backend", "remote=True",
         lambda t: llama().run("the cat", [], remote=True), ValueError, r"remote=True", r"backend='hooks'",
         r"pass backend='nnsight'"),
    Case("hooked model", "run: unknown remote value", "remote='yes'",
         lambda t: llama().run("the cat", [], backend="nnsight", remote="yes"), ValueError, r"remote='yes'",
         r"False, True, 'local'", r"use remote=True"),
    Case("hooked model", "patch_sweep: unknown backend", "backend='nnsite'",
         lambda t: __import__("workbench.sweeps").sweeps.patch_sweep(llama(), "the cat", "a dog", target="cat",
                                                                     foil="dog", backend="nnsite"),
         ValueError, r"'nnsite'", r"'hooks', 'nnsight'", r"use backend="),
    Case("hooked model", "intervene: unknown generation mode", "mode='always'",
         lambda t: llama().generate("the cat", [], mode="always"), ValueError, r"'always'", r"'prompt', 'every_step'"),
    Case("hooked model", "generate every_step with a Patch", "mode='every_step' + Patch",
         lambda t: llama().generate("the cat", [PlanItem("L1.resid_post", "l1", Patch())], sources=["a dog"],
                                    mode="every_step"), ValueError, r"every_step", r"source-free",
         r"steering|use"),
    Case("hooked model", "cache: unknown site", "'L1.mlp'", lambda t: llama().cache("the cat", ["L1.mlp"]),
         ValueError, r"'mlp'", r"expected one of", r"e\.g\."),
    Case("sweeps", "patch_sweep: unknown path", "path='fast'",
         lambda t: __import__("workbench.sweeps").sweeps.patch_sweep(llama(), "the cat", "a dog", target="cat",
                                                                      foil="dog", path="fast"),
         ValueError, r"'fast'", r"'auto', 'stepped', 'prefix', 'copies'", r"use 'auto'"),
    Case("sweeps", "patch_sweep: layer stepping on a model it cannot run", "path='stepped' on BERT",
         lambda t: __import__("workbench.sweeps").sweeps.patch_sweep(tiny_model("bert"), "the cat", "a dog",
                                                                      target="cat", foil="dog", path="stepped"),
         ValueError, r"path='stepped'", r"model type 'bert' is not one of", r"use path='auto'"),
    Case("sweeps", "head_sweep: prefix path", "path='prefix'",
         lambda t: __import__("workbench.sweeps").sweeps.head_sweep(llama(), "the cat", "a dog", target="cat",
                                                                     foil="dog", path="prefix"),
         ValueError, r"path='prefix'", r"layer x position sweeps of causal models", r"use path='auto'"),
    Case("context length", "run: prompt longer than the context", "100 tokens, context 64",
         lambda t: llama().run(LONG), ValueError, r"100 tokens", r"context of 64", r"shorten the prompt"),
    Case("context length", "cache: prompt longer than the context", "100 tokens, context 64",
         lambda t: llama().cache(LONG, ["L1.resid_post"]), ValueError, r"100 tokens", r"context of 64",
         r"shorten"),
    Case("context length", "generate: prompt longer than the context", "100 tokens, context 64",
         lambda t: llama().generate(LONG, max_new_tokens=2), ValueError, r"100 tokens", r"context of 64",
         r"shorten"),
    Case("context length", "generate: prompt + new tokens beyond the context (GPT-2)", "2 + 80 new tokens",
         lambda t: tiny_model("gpt2").generate("the cat", max_new_tokens=80), ValueError,
         r"max_new_tokens 80", r"context of 64", r"generate fewer tokens"),
    Case("context length", "patch_sweep: prompt longer than the context", "100 tokens, context 64",
         lambda t: __import__("workbench.sweeps").sweeps.patch_sweep(llama(), LONG, LONG, target="cat", foil="dog"),
         ValueError, r"100 tokens", r"context of 64", r"shorten"),
    Case("context length", "tokenized input_ids longer than the context", "input_ids (1, 100)",
         lambda t: llama().forward({"input_ids": torch.ones(1, 100, dtype=torch.long)}), ValueError,
         r"100 tokens", r"context of 64", r"shorten"),
    # interventions
    Case("interventions", "Patch: empty dims", "dims=[]", lambda t: Patch(dims=[]), ValueError, r"dims is empty",
         r"None for all dimensions|at least one index", r"pass None"),
    Case("interventions", "Patch: negative dim", "dims=[-1]", lambda t: Patch(dims=[-1]), ValueError, r"-1",
         r">= 0|0\.\.", r"give|use"),
    Case("interventions", "Patch: dim beyond the site", "dims=[40] at d=32",
         run_plan(lambda: PlanItem("L1.resid_post", "l1", Patch(dims=[40])), sources=["a dog"]), ValueError,
         r"40", r"32", r"use|give"),
    Case("interventions", "MeanAblation: not a vector", "mean (2, 32)",
         lambda t: __import__("workbench").MeanAblation(torch.zeros(2, 32)), ValueError, r"\(2, 32\)",
         r"\(d,\) vector", r"e\.g\.|give|pass"),
    Case("interventions", "AddVector: not a vector", "vector (2, 32)", lambda t: AddVector(torch.zeros(2, 32)),
         ValueError, r"\(2, 32\)", r"\(d,\) vector", r"e\.g\.|give|pass"),
    Case("interventions", "DAS: k > hidden size", "k=40, d=32",
         lambda t: __import__("workbench.das").das.LowRankRotatedSpaceIntervention(32, 40), ValueError, r"= 40",
         r"between 0 and the hidden size 32", r"choose|use|e\.g\."),
    Case("interventions", "DAS: unknown method", "'pca'",
         lambda t: __import__("workbench.das").das.build_intervention("pca", 32, 2), ValueError, r"'pca'",
         r"'das', 'rotated', 'boundless'", r"choose"),
    Case("interventions", "Boundless DAS: init_size > max_rank", "init_size=9, max_rank=4",
         lambda t: __import__("workbench.das").das.BoundlessRotatedSpaceIntervention(32, 4, init_size=9), ValueError,
         r"init_size = 9", r"between 1 and max_rank 4", r"choose|use|e\.g\."),
    Case("interventions", "Boundless DAS: temperature 0", "set_temperature(0)",
         lambda t: __import__("workbench.das").das.BoundlessRotatedSpaceIntervention(32, 4).set_temperature(0),
         ValueError, r"temperature 0", r"> 0", r"e\.g\."),
    Case("interventions", "OrthonormalRows: rank 0", "r=0, d=32",
         lambda t: __import__("workbench.orthogonal").orthogonal.OrthonormalRows(32, 0), ValueError, r"rank 0",
         r"between 1 and the hidden size 32", r"choose|use|e\.g\."),
    Case("interventions", "OrthonormalRows.set_: wrong shape", "(3, 32) for r=2",
         lambda t: __import__("workbench.orthogonal").orthogonal.OrthonormalRows(32, 2).set_(torch.eye(3, 32)),
         ValueError, r"\(3, 32\)", r"\(2, 32\)", r"give r x d rows"),
    Case("interventions", "OrthonormalRows.set_: rows not orthonormal", "2 * eye(2, 32)",
         lambda t: __import__("workbench.orthogonal").orthogonal.OrthonormalRows(32, 2).set_(2 * torch.eye(2, 32)),
         ValueError, r"max \|M M.* I\| = 3", r"tolerance 1e-4", r"orthonormalize|QR|use|give"),
    # ReFT config and model
    Case("reft", "ReftConfig: no layers", "layers=()", lambda t: __import__("reft").ReftConfig(layers=()), ValueError,
         r"layers is empty", r"at least one layer", r"e\.g\."),
    Case("reft", "ReftConfig: a repeated layer", "layers=(1, 1)",
         lambda t: __import__("reft").ReftConfig(layers=(1, 1)), ValueError, r"\(1, 1\)", r"each layer once",
         r"list"),
    Case("reft", "ReftConfig: unknown kind", "kind='lora'",
         lambda t: __import__("reft").ReftConfig(layers=(1,), kind="lora"), ValueError, r"'lora'",
         r"\['consreft', 'direft', 'loreft'\]", r"use|choose|expected one of"),
    Case("reft", "ReftConfig: per-head component", "component='z'",
         lambda t: __import__("reft").ReftConfig(layers=(1,), component="z"), ValueError, r"'z'",
         r"'resid_post'", r"use|choose|expected one of"),
    Case("reft", "ReftConfig: rank 0", "rank=0", lambda t: __import__("reft").ReftConfig(layers=(1,), rank=0),
         ValueError, r"rank 0", r"at least 1", r"e\.g\.|use"),
    Case("reft", "ReftConfig: dropout 1.5", "dropout=1.5",
         lambda t: __import__("reft").ReftConfig(layers=(1,), dropout=1.5), ValueError, r"1\.5", r"0 <= dropout < 1",
         r"use|e\.g\."),
    Case("reft", "ReftConfig: unknown activation", "activation='gelu2'",
         lambda t: __import__("reft").ReftConfig(layers=(1,), activation="gelu2"), ValueError, r"'gelu2'",
         r"expected one of \[", r"use|choose|expected one of"),
    Case("reft", "ReftConfig: positions that are not first/last", "positions='all'",
         lambda t: __import__("reft").ReftConfig(layers=(1,), positions="all"), ValueError, r"'all'",
         r"first/last prompt tokens", r"e\.g\."),
    Case("reft", "ReftConfig.from_dict: unknown field", "{'rnk': 2}",
         lambda t: __import__("reft").ReftConfig.from_dict({"layers": [1], "rnk": 2}), ValueError, r"\['rnk'\]",
         r"known: \[", r"use|rename|remove|known"),
    Case("reft", "get_reft_model: rank > hidden size", "rank=40, d=32",
         lambda t: __import__("reft").get_reft_model(llama(), __import__("reft").ReftConfig(layers=(1,), rank=40)),
         ValueError, r"rank 40", r"hidden size is 32", r"choose|use|e\.g\."),
    Case("reft", "get_reft_model: not a model", "a string",
         lambda t: __import__("reft").get_reft_model("llama", __import__("reft").ReftConfig(layers=(1,))), TypeError,
         r"str", r"HookedModel or a Hugging Face model", r"pass|give|load"),
    # training
    Case("reft train", "TrainConfig: epochs 0", "epochs=0",
         lambda t: m("reft.train").TrainConfig(epochs=0), ValueError, r"got 0", r">= 1", r"e\.g\.|use"),
    Case("reft train", "TrainConfig: unknown mixed precision", "mixed_precision='fp8'",
         lambda t: m("reft.train").TrainConfig(mixed_precision="fp8"), ValueError, r"'fp8'",
         r"'auto', 'no', 'bf16', 'fp16'", r"use|choose|expected one of"),
    Case("reft train", "TrainConfig: unknown parallel strategy", "parallel='zero3'",
         lambda t: m("reft.train").TrainConfig(parallel="zero3"), ValueError, r"'zero3'",
         r"'ddp', 'fsdp'", r"use 'ddp'"),
    Case("das", "train_distributed: unknown parallel strategy", "parallel='zero3'",
         lambda t: m("workbench.das.module").train_distributed(None, {}, parallel="zero3"), ValueError, r"'zero3'",
         r"'ddp', 'fsdp'", r"use 'ddp'"),
    Case("reft hf trainer", "ReftTrainer: unknown parallel strategy", "parallel='zero3'",
         reft_trainer(parallel="zero3"), ValueError, r"'zero3'", r"'ddp', 'fsdp'", r"use 'ddp'"),
    Case("reft hf trainer", "ReftTrainer: Accelerate's FSDP plugin", "TrainingArguments(fsdp='full_shard')",
         reft_trainer(fsdp="full_shard"), ValueError, r"fsdp=", r"parallel='fsdp'", r"drop fsdp= and pass"),
    Case("reft train", "TrainConfig: warmup_ratio 1", "warmup_ratio=1.0",
         lambda t: m("reft.train").TrainConfig(warmup_ratio=1.0), ValueError, r"1\.0",
         r"0 <= warmup_ratio < 1", r"use|e\.g\."),
    Case("reft train", "TrainConfig: lr 0", "lr=0", lambda t: m("reft.train").TrainConfig(lr=0),
         ValueError, r"got 0", r"> 0", r"e\.g\."),
    Case("empty data", "reft train: no rows", "rows=[]", reft_train(rows=[]), ValueError, r"no training rows",
         r"at least one", r"give"),
    Case("NaN loss", "reft train: loss becomes NaN", "a NaN output weight", reft_train(nan=True), FloatingPointError,
         r"loss is (nan|inf) at step \d+ \(lr 0\.004\)", r"training stopped", r"Lower the learning rate.*float32"),
    Case("das train", "TrainConfig: batch_size 0", "batch_size=0",
         lambda t: __import__("workbench.das").das.TrainConfig(batch_size=0), ValueError, r"got 0", r">= 1",
         r"e\.g\."),
    Case("das train", "TrainConfig: lr -1", "lr=-1", lambda t: __import__("workbench.das").das.TrainConfig(lr=-1),
         ValueError, r"got -1", r"> 0", r"e\.g\."),
    Case("empty data", "train_alignment: empty CounterfactualData", "0 examples",
         das_train(data=lambda: counterfactuals(0)), ValueError, r"no training examples", r"'task'",
         r"check the filtering"),
    Case("NaN loss", "train_alignment: loss becomes NaN", "a NaN output weight", das_train(nan=True),
         FloatingPointError, r"loss is (nan|inf) at step \d+ \(lr 0\.01\)", r"training stopped", r"Lower the learning rate.*float32"),
    Case("data", "CounterfactualData: lengths differ", "3 labels for 4 examples",
         lambda t: __import__("workbench.das").das.CounterfactualData([[1]] * 4, [[0]] * 4, [[1]] * 4, [[0]] * 4,
                                                                      torch.zeros(3)), ValueError, r"labels has 3",
         r"4 base inputs", r"give one per example"),
    Case("memorize", "MemorizeConfig: unknown variant", "variant='reversed'",
         lambda t: m("reft.memorize").MemorizeConfig(variant="reversed"), ValueError,
         r"'reversed'", r"'natural', 'shuffled', 'random'", r"use|choose|expected one of"),
    Case("memorize", "MemorizeConfig: lr 0", "lr=0", lambda t: m("reft.memorize").MemorizeConfig(lr=0),
         ValueError, r"got 0", r"> 0", r"e\.g\.|use"),
    Case("memorize", "memorize: layer out of range", "layer=7 of 3", memorize_with(layer=7), ValueError, L,
         r"3 layers \(0-2\)"),
    Case("memorize", "memorize: key position out of range", "position=9 on a 4-token key",
         memorize_with(position=9), IndexError, r"position 9", r"valid 0\.\.3"),
    Case("NaN loss", "memorize: loss becomes NaN", "a NaN output weight", memorize_with(nan=True), FloatingPointError,
         r"loss is (nan|inf) at step \d+ \(lr 0\.01\)", r"training stopped", r"Lower the learning rate.*float32"),
    # checkpoints
    Case("checkpoints", "load_reft: folder without a checkpoint", "an empty folder",
         load_reft_from(lambda t: t), FileNotFoundError, r"no reft_config\.json in TMP", r"not a saved ReFT model",
         r"save with reft\.save"),
    Case("damaged checkpoint", "load_reft: reft_config.json is not valid JSON", "cut mid-object",
         load_reft_from(damaged(reft_folder, "reft_config.json", bad_json)), ValueError, r"reft_config\.json",
         r"not valid JSON", r"save the model again"),
    Case("damaged checkpoint", "load_reft: interventions.safetensors truncated", "half the bytes",
         load_reft_from(damaged(reft_folder, "interventions.safetensors", truncate)), ValueError,
         r"interventions\.safetensors.*\d+ bytes", r"damaged or truncated", r"save the model again"),
    Case("damaged checkpoint", "load_reft: interventions.safetensors missing", "deleted",
         load_reft_from(damaged(reft_folder, "interventions.safetensors", Path.unlink)), FileNotFoundError,
         r"no interventions\.safetensors", r"incomplete", r"save it again"),
    Case("wrong-shaped safetensors", "load_reft: a tensor of the wrong shape", "each dim + 1",
         load_reft_from(damaged(reft_folder, "interventions.safetensors", wrong_shape)), ValueError,
         r"is \([\d, ]+\), expected \([\d, ]+\)", r"wrong shape for its config", r"save the model again"),
    Case("another base model", "load_reft: checkpoint of another base model", "fingerprint differs",
         lambda t: __import__("reft").load_reft(reft_folder(t, "llama"), tiny_model("llama", seed=1)), ValueError,
         r"given model's fingerprint is [0-9a-f]{16}", r"trained on 'tiny-llama' \(weights fingerprint [0-9a-f]{16}\)",
         r"load the same base model, or pass check_base=False"),
    Case("another base model", "load_reft: checkpoint of another family", "llama checkpoint on gpt2",
         lambda t: __import__("reft").load_reft(reft_folder(t, "llama"), tiny_model("gpt2")), ValueError,
         r"fingerprint is [0-9a-f]{16}", r"trained on 'tiny-llama'", r"load the same base model"),
    Case("checkpoints", "load_reft: unknown format", "format 'workbench-reft/9'",
         load_reft_from(damaged(reft_folder, "reft_config.json", lambda p: p.write_text(
             json.dumps({**json.loads(p.read_text()), "format": "workbench-reft/9"})))), ValueError,
         r"'workbench-reft/9'", r"reads 'workbench-reft/2'", r"re-save"),
    Case("checkpoints", "load_das: folder without a run", "an empty folder", load_das_from(lambda t: t),
         FileNotFoundError, r"no intervention\.json in TMP", r"not a saved DAS intervention", r"workbench das --out"),
    Case("damaged checkpoint", "load_das: intervention.json is not valid JSON", "cut mid-object",
         load_das_from(damaged(das_folder, "intervention.json", bad_json)), ValueError, r"intervention\.json",
         r"not valid JSON", r"run `workbench das --out FOLDER` again"),
    Case("damaged checkpoint", "load_das: intervention.safetensors truncated", "half the bytes",
         load_das_from(damaged(das_folder, "intervention.safetensors", truncate)), ValueError,
         r"intervention\.safetensors.*\d+ bytes", r"damaged or truncated", r"run `workbench das"),
    Case("wrong-shaped safetensors", "load_das: a tensor of the wrong shape", "each dim + 1",
         load_das_from(damaged(das_folder, "intervention.safetensors", wrong_shape)), ValueError,
         r"is \([\d, ]+\), expected \([\d, ]+\)", r"wrong shape", r"do not match intervention\.json"),
    Case("checkpoints", "load_das: description without k", "{'method', 'site', 'd'}",
         load_das_from(damaged(das_folder, "intervention.json", lambda p: p.write_text(
             json.dumps({"method": "das", "site": "L1.resid_post", "d": 32})))), ValueError, r"\['k'\]",
         r"expected method, site, d, k", r"run|give|add|expected method"),
    Case("damaged checkpoint", "load_steering: steering.json is not valid JSON", "cut mid-object",
         load_steering_from(damaged(steering_folder, "steering.json", bad_json)), ValueError, r"steering\.json",
         r"not valid JSON", r"save it again"),
    Case("damaged checkpoint", "load_steering: steering.safetensors truncated", "half the bytes",
         load_steering_from(damaged(steering_folder, "steering.safetensors", truncate)), ValueError,
         r"steering\.safetensors.*\d+ bytes", r"damaged or truncated", r"save it again"),
    Case("wrong-shaped safetensors", "load_steering: vector of the wrong shape", "(2, 32) for d=32",
         load_steering_from(damaged(steering_folder, "steering.safetensors", lambda p: __import__(
             "safetensors.torch").torch.save_file({"vector": torch.zeros(2, 32)}, str(p)))), ValueError,
         r"'vector': \(2, 32\)", r"shape \(32,\)", r"save it again"),
    Case("checkpoints", "load_steering: folder without a vector", "an empty folder",
         load_steering_from(lambda t: t), FileNotFoundError, r"in TMP", r"not a saved steering vector",
         r"save_steering|save"),
    # data
    Case("data", "registry: unknown dataset", "'imdb'",
         lambda t: __import__("workbench.data.registry").data.registry.get("imdb"), ValueError, r"'imdb'",
         r"known datasets: \[", r"workbench data list"),
    Case("data", "RAVEL: folder does not exist", "TMP/nope",
         lambda t: __import__("workbench.data").data.load_ravel(t / "nope"), FileNotFoundError, r"TMP/nope",
         r"does not exist", r"pass the folder"),
    Case("data", "RAVEL: a file is missing", "no entity_to_split",
         lambda t: __import__("workbench.data").data.load_ravel(ravel_folder(t, entity_to_split=None)),
         FileNotFoundError, r"ravel_city_entity_to_split\.json", r"not found", r"needs|fetch|give|pass"),
    Case("data", "RAVEL: a file is not JSON", "entity_attributes = '{oops'",
         lambda t: __import__("workbench.data").data.load_ravel(ravel_folder(t, entity_attributes="{oops")),
         ValueError, r"ravel_city_entity_attributes\.json", r"not valid JSON", r"fetch|restore|fix|give"),
    Case("data", "RAVEL: a field of the wrong type", "entity_to_split = []",
         lambda t: __import__("workbench.data").data.load_ravel(ravel_folder(t, entity_to_split=[])), ValueError,
         r"got list", r"must be a JSON object", r"fetch|restore|fix|give"),
    Case("empty data", "RAVEL: no usable entities", "entity_attributes = {}",
         lambda t: __import__("workbench.data").data.load_ravel(ravel_folder(t, entity_attributes={})), ValueError,
         r"no usable city entities", r"TMP/ravel", r"fetch|check|give"),
    Case("data", "RAVEL: unknown attribute", "'Population'",
         lambda t: __import__("workbench.data").data.load_ravel(ravel_folder(t)).resolve(["Population"]), ValueError,
         r"'Population'", r"available: \['Country'\]", r"use|choose|available"),
    Case("data", "RAVEL: unknown split", "split='dev'",
         lambda t: __import__("workbench.data").data.load_ravel(ravel_folder(t)).entities("dev"), ValueError,
         r"'dev'", r"\('train', 'val', 'test'\)", r"None for all|use"),
    Case("empty data", "SST: a split with no sentences", "empty sst_dev.txt",
         lambda t: __import__("workbench.data.sst").data.sst.load_sst(sst_folder(t)), ValueError, r"sst_dev\.txt",
         r"no SST sentences found", r"expected '__label__N"),
    Case("data", "SST: unknown split", "split='validation'",
         lambda t: __import__("workbench.data.sst").data.sst.load_sst(sst_folder(t), "validation"), ValueError,
         r"'validation'", r"expected one of", r"use|choose|expected one of"),
    Case("data", "text: no such file", "TMP/none.txt",
         lambda t: __import__("workbench.data.texts").data.texts.load_text(t / "none.txt"), FileNotFoundError,
         r"none\.txt", r"named texts \[", r"give a path"),
    Case("data", "concept: unparsable", "'good,great'",
         lambda t: __import__("probes.neurons").neurons.Concept.parse("good,great"), ValueError, r"'good,great'",
         r"'words:good,great' or 'regex:<pattern>'", r"expected"),
    # CLI: patch
    Case("cli patch", "--grid", "diag", cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil", "y",
                                            "--grid", "diag"), CliError, r"'diag'", r"position'?, '?head", r"choose from"),
    Case("cli patch", "--component", "resid", cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil",
                                                  "y", "--component", "resid"), CliError, r"'resid'",
         r"attn_out'?, '?mlp_act", r"choose from"),
    Case("cli patch", "--backend", "pyvene", cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil",
                                                 "y", "--backend", "pyvene"), CliError, r"'pyvene'",
         r"hooks'?, '?nnsight", r"choose from"),
    Case("cli patch", "--batch-size", "0", cli("patch", "--base", "the cat", "--source", "a dog", "--target", "cat",
                                               "--foil", "dog", "--batch-size", "0"), CliError, r"batch_size 0|batch-size 0",
         r">= 1", r"e\.g\.|use|give"),
    Case("cli patch", "--top", "-1", cli("patch", "--base", "the cat", "--source", "a dog", "--target", "cat",
                                         "--foil", "dog", "--top", "-1"), CliError, r"--top -1", r">= 0", r"e\.g\.|use|give"),
    Case("cli patch", "--target of two tokens", "'the cat'",
         cli("patch", "--base", "the cat", "--source", "a dog", "--target", "the cat", "--foil", "dog"), CliError,
         r"'the cat' is 2 tokens", r"single token", r"try a leading space"),
    Case("cli patch", "--base empty", "''", cli("patch", "--base", "", "--source", "a dog", "--target", "cat",
                                                "--foil", "dog"), CliError, r"''", r"at least one non-empty", r"give"),
    Case("cli patch", "--source of another length", "3 tokens vs 2",
         cli("patch", "--base", "the cat", "--source", "a dog sat", "--target", "cat", "--foil", "dog"), CliError,
         r"source has 3", r"base has 2", r"same number of tokens|give|use"),
    Case("cli patch", "--shard out of range", "2/2",
         cli("patch", "--base", "the cat", "--source", "a dog", "--target", "cat", "--foil", "dog", "--shard", "2/2",
             "--out", "TMP/p"), CliError, r"shard 2/2", r"0 <= RANK < WORLD", r"e\.g\. --shard 0/2"),
    Case("cli patch", "--shard without --out", "--shard 0/2",
         cli("patch", "--base", "the cat", "--source", "a dog", "--target", "cat", "--foil", "dog", "--shard", "0/2"),
         CliError, r"shard 0/2", r"the folder every shard writes", r"give --out"),
    Case("cli memorize-sweep", "--shard not RANK/WORLD", "a/b",
         cli("memorize-sweep", "--text", "TMP/t.txt", "--shard", "a/b", "--out", "TMP/m"), CliError, r"'a/b'",
         r"RANK/WORLD such as 0/2", r"expected"),
    Case("cli patch", "--base longer than the context", "100 tokens",
         cli("patch", "--base", LONG, "--source", LONG, "--target", "cat", "--foil", "dog"), CliError,
         r"100 tokens", r"context of 64", r"shorten"),
    Case("cli patch", "--out is a file", "TMP/file.txt",
         lambda t: (write(t, "file.txt", "x"), cli("patch", "--base", "the cat", "--source", "a dog", "--target",
                                                    "cat", "--foil", "dog", "--out", "TMP/file.txt")(t)), CliError,
         r"file\.txt", r"is a file|not a folder", r"give|use|choose"),
    Case("cli patch", "--model folder that does not exist", "TMP/no-model",
         cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil", "y", "--model", "TMP/no-model",
             model=None), CliError, r"'TMP/no-model'", r"no such folder", r"give a Hugging Face model folder"),
    Case("cli patch", "--dtype", "float64", cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil", "y",
                                                "--dtype", "float64"), CliError, r"'float64'",
         r"bfloat16'?, '?float16'?, '?float32", r"choose from"),
    Case("cli patch", "--device not a device", "tpu9",
         cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil", "y", "--device", "tpu9", model=None),
         CliError, r"'tpu9'", r"not a torch device", r"use e\.g\. cpu, cuda"),
    Case("cli patch", "--device without CUDA", "cuda:7",
         cli("patch", "--base", "a", "--source", "b", "--target", "x", "--foil", "y", "--device", "cuda:7",
             model=None), CliError, r"'cuda:7'", r"CUDA is not available|CUDA device\(s\)", r"use --device cpu|cuda:0"),
    # CLI: das and ravel
    Case("cli das", "--method", "pca", cli("das", "--attribute", "Country", "--method", "pca"), CliError, r"'pca'",
         r"das'?, '?rotated'?, '?boundless", r"choose from"),
    Case("cli das", "--attribute unknown", "Population", cli("das", "--attribute", "Population"), CliError,
         r"'Population'", r"available: \[", r"use|choose|available"),
    Case("cli das", "--others unknown", "Population", cli("das", "--attribute", "Country", "--others", "Population"),
         CliError, r"'Population'", r"available: \[", r"use|choose|available"),
    Case("cli das", "--data folder that does not exist", "TMP/none",
         cli("das", "--attribute", "Country", "--data", "TMP/none"), CliError, r"TMP/none", r"does not exist",
         r"pass the folder"),
    Case("cli das", "--entity-type not in the city set", "verb", cli("das", "--attribute", "Country",
                                                                     "--entity-type", "verb"), CliError,
         r"--entity-type verb", r"has only cities", r"use --data ravel"),
    Case("cli das", "--layer out of range", "7", cli("das", "--attribute", "Country", "--layer", "7"), CliError, L,
         r"3 layers \(0-2\)", r"use a layer"),
    Case("cli das", "--component", "resid", cli("das", "--attribute", "Country", "--component", "resid"), CliError,
         r"'resid'", r"attn_out", r"choose from"),
    Case("cli das", "--position", "first", cli("das", "--attribute", "Country", "--position", "first"), CliError,
         r"'first'", r"entity-last", r"choose from"),
    Case("cli das", "--k > hidden size", "40", cli("das", "--attribute", "Country", "--layer", "1", "--k", "40"),
         CliError, r"--k 40", r"0-32|0 and .*32", r"use|choose"),
    Case("cli das", "--k negative", "-1", cli("das", "--attribute", "Country", "--layer", "1", "--k", "-1"), CliError,
         r"--k -1", r"0-32|0 and .*32", r"use|choose"),
    Case("cli das", "--epochs", "0", cli("das", "--attribute", "Country", "--layer", "1", "--epochs", "0"), CliError,
         r"epochs must be >= 1, got 0", r">= 1", r"e\.g\."),
    Case("cli das", "--batch-size", "0", cli("das", "--attribute", "Country", "--layer", "1", "--batch-size", "0"),
         CliError, r"batch_size must be >= 1, got 0", r">= 1", r"e\.g\."),
    Case("cli das", "--lr", "0", cli("das", "--attribute", "Country", "--layer", "1", "--lr", "0"), CliError,
         r"got 0\.0", r"> 0", r"e\.g\."),
    Case("cli das", "--patience", "0", cli("das", "--attribute", "Country", "--layer", "1", "--patience", "0"),
         CliError, r"patience must be >= 1, got 0", r">= 1", r"e\.g\."),
    Case("cli das", "--examples negative", "-1 2 2", cli("das", "--attribute", "Country", "--layer", "1",
                                                         "--examples", "-1", "2", "2"), CliError, r"-1",
         r">= 0|>= 1", r"e\.g\.|give|use"),
    Case("cli das", "--entities negative", "-5 2 2", cli("das", "--attribute", "Country", "--layer", "1",
                                                         "--entities", "-5", "2", "2"), CliError, r"-5",
         r">= 0|>= 1", r"e\.g\.|give|use"),
    Case("cli das", "--max-templates", "0", cli("das", "--attribute", "Country", "--layer", "1", "--max-templates",
                                                "0"), CliError, r"max-templates 0|max_templates 0", r">= 1",
         r"e\.g\.|give|use"),
    Case("cli das", "--threads negative", "-2", cli("das", "--attribute", "Country", "--threads", "-2"), CliError,
         r"--threads -2", r">= 0|>= 1", r"e\.g\.|give|use"),
    Case("empty data", "cli das: --min-population above every city", "10**12",
         cli("das", "--attribute", "Country", "--min-population", "1000000000000"), CliError,
         r"1000000000000", r"no city has population >=", r"lower min_population"),
    Case("empty data", "cli das: data the model does not know", "2 cities, tiny model",
         lambda t: cli("das", "--data", str(ravel_folder(t)), "--attribute", "Country", "--examples", "4", "2", "2",
                       "--layer", "1", "--k", "2", "--out", "TMP/out")(t), CliError, r"no training examples",
         r"answers|kept|filter", r"raise|check|use|give"),
    Case("cli ravel", "--methods", "sae", cli("ravel", "--methods", "sae"), CliError, r"'sae'", r"choose from .*pca",
         r"choose from"),
    Case("cli ravel", "--attributes unknown", "Population", cli("ravel", "--attributes", "Population"), CliError,
         r"'Population'", r"available: \[", r"use|choose|available"),
    Case("cli ravel", "--layer out of range", "7", cli("ravel", "--layer", "7"), CliError, L, r"3 layers \(0-2\)",
         r"use a layer"),
    Case("cli ravel", "--k > hidden size", "40", cli("ravel", "--layer", "1", "--k", "40"), CliError, r"--k 40",
         r"0-32|0 and .*32", r"use|choose"),
    # CLI: sentiment, neuron
    Case("cli sentiment run", "--layers not numbers", "a,b", cli("sentiment", "run", "--layers", "a,b"), CliError,
         r"'a,b'", r"comma-separated layer numbers", r"such as '0,6,12'"),
    Case("cli sentiment run", "--layers out of range", "0,7", cli("sentiment", "run", "--layers", "0,7",
                                                                  "--sst-limit", "0"), CliError, r"\[7\]",
         r"3 layers \(0-2\)", r"use|choose"),
    Case("cli sentiment run", "--das-layers out of range", "9", cli("sentiment", "run", "--layers", "0",
                                                                    "--das-layers", "9", "--sst-limit", "0"),
         CliError, r"\[9\]", r"3 layers \(0-2\)", r"use|choose"),
    Case("cli sentiment run", "--ablation-layers out of range", "5", cli("sentiment", "run", "--layers", "0",
                                                                         "--ablation-layers", "5"), CliError,
         r"\[5\]", r"3 layers \(0-2\)", r"use|choose"),
    Case("cli sentiment run", "--layer-step", "0", cli("sentiment", "run", "--layer-step", "0", "--sst-limit", "0"),
         CliError, r"layer.step 0|layer_step 0", r">= 1", r"e\.g\.|use"),
    Case("cli sentiment run", "--component", "resid", cli("sentiment", "run", "--component", "resid",
                                                          "--sst-limit", "0"), CliError, r"'resid'",
         r"expected one of|choose from", r"e\.g\.|choose"),
    Case("cli sentiment run", "--methods", "lda", cli("sentiment", "run", "--layers", "0", "--methods", "lda",
                                                      "--sst-limit", "0"), CliError, r"'lda'",
         r"mean_diff.*probe|choose from", r"choose|use"),
    Case("cli sentiment run", "--positions", "verbs", cli("sentiment", "run", "--layers", "0", "--positions", "verbs",
                                                          "--sst-limit", "0"), CliError, r"'verbs'",
         r"expected one of \['all', 'comma'", r"such as 'l1'"),
    Case("cli sentiment run", "--sst folder that does not exist", "TMP/none",
         cli("sentiment", "run", "--sst", "TMP/none"), CliError, r"TMP/none", r"does not exist", r"pass the folder holding sst_train"),
    Case("cli sentiment run", "--sst-split", "validation", cli("sentiment", "run", "--layers", "0", "--sst-split",
                                                               "validation"), CliError, r"'validation'",
         r"train'?, '?dev'?, '?test", r"choose from"),
    Case("cli sentiment run", "--ablation-value", "median", cli("sentiment", "run", "--ablation-value", "median"),
         CliError, r"'median'", r"mean'?, '?zero", r"choose from"),
    Case("cli sentiment run", "--sst-limit negative", "-5", cli("sentiment", "run", "--sst-limit", "-5"), CliError,
         r"-5", r">= 0", r"e\.g\.|use|give"),
    Case("cli sentiment run", "--batch-size", "0", cli("sentiment", "run", "--batch-size", "0", "--sst-limit", "0"),
         CliError, r"batch.size 0|batch_size 0", r">= 1", r"e\.g\.|use"),
    Case("cli sentiment project", "--directions file that does not exist", "TMP/none.safetensors",
         cli("sentiment", "project", "--text", "the cat", "--directions", "TMP/none.safetensors", "--layer", "1"),
         CliError, r"none\.safetensors", r"not found|no such|does not exist", r"sentiment run|give|pass"),
    Case("cli sentiment project", "--layer without a direction", "7",
         lambda t: (__import__("safetensors.torch").torch.save_file({"L1.mean_diff": torch.ones(32)},
                                                                     str(t / "d.safetensors")),
                    cli("sentiment", "project", "--text", "the cat", "--directions", "TMP/d.safetensors",
                        "--layer", "7")(t)), CliError, r"L7\.mean_diff", r"available: \['L1\.mean_diff'\]",
         r"choose|use|available"),
    Case("cli neuron", "--site", "L1.mlp", cli("neuron", "--site", "L1.mlp", "--index", "0", "--concept", "words:cat",
                                               "--texts", "TMP/t.txt"), CliError, r"'mlp'", r"expected one of",
         r"e\.g\."),
    Case("cli neuron", "--index out of range", "99",
         lambda t: (write(t, "t.txt", "the cat\na dog\n"),
                    cli("neuron", "--site", "L1.mlp_act", "--index", "99", "--concept", "words:cat",
                        "--texts", "TMP/t.txt")(t)), CliError, r"index 99", r"48 neurons \(0-47\)", r"use|choose"),
    Case("cli neuron", "--concept", "good", cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept", "good"),
         CliError, r"'good'", r"'words:good,great' or 'regex:<pattern>'", r"expected"),
    Case("cli neuron", "--concept regex that does not compile", "regex:(",
         cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept", "regex:("), CliError, r"'\('",
         r"does not compile", r"check|fix|use|give"),
    Case("empty data", "cli neuron: --texts with no lines", "an empty file",
         lambda t: (write(t, "empty.txt", "\n\n"), cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept",
                                                        "words:cat", "--texts", "TMP/empty.txt")(t)), CliError,
         r"empty\.txt has no non-empty lines", r"one text per line", r"give"),
    Case("cli neuron", "--quantile", "1.5",
         lambda t: (write(t, "t.txt", "the cat\na dog\n"),
                    cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept", "words:cat", "--texts",
                        "TMP/t.txt", "--quantile", "1.5")(t)), CliError, r"quantile=1\.5",
         r"strictly between 0 and 1", r"e\.g\."),
    Case("cli neuron", "--random more than the layer has", "99",
         lambda t: (write(t, "t.txt", "the cat\na dog\n"),
                    cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept", "words:cat", "--texts",
                        "TMP/t.txt", "--random", "99")(t)), CliError, r"n_random=99|--random 99",
         r"only 47 other neurons", r"use|choose|give"),
    Case("cli neuron", "--limit", "0", cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept", "words:cat",
                                           "--limit", "0"), CliError, r"'0'", r">= 1", r"give"),
    Case("cli neuron", "--batch-size", "0", cli("neuron", "find", "--site", "L1.mlp_act", "--concept", "words:cat",
                                                "--batch-size", "0"), CliError, r"'0'", r">= 1", r"give"),
    Case("cli neuron", "--random", "-1", cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept",
                                             "words:cat", "--random", "-1"), CliError, r"'-1'", r">= 0", r"give"),
    Case("cli neuron", "--top-k", "0", cli("neuron", "find", "--site", "L1.mlp_act", "--concept", "words:cat",
                                           "--top-k", "0"), CliError, r"'0'", r">= 1", r"give"),
    Case("cli neuron", "--index", "-3", cli("neuron", "score", "--site", "L1.mlp_act", "--index", "-3", "--concept",
                                            "words:cat"), CliError, r"'-3'", r">= 0", r"give"),
    Case("cli neuron", "--threshold", "nan", cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept",
                                                 "words:cat", "--threshold", "nan"), CliError, r"'nan'",
         r"finite number", r"give"),
    Case("cli neuron", "--sst-split", "validation", cli("neuron", "--site", "L1.mlp_act", "--index", "0", "--concept",
                                                        "words:cat", "--sst-split", "validation"), CliError,
         r"'validation'", r"train'?, '?dev'?, '?test", r"choose from"),
    # CLI: reft
    Case("cli reft train", "--kind", "lora", cli("reft", "train", "--kind", "lora"), CliError, r"'lora'",
         r"loreft'?, '?direft'?, '?consreft", r"choose from"),
    Case("cli reft train", "--layers out of range", "1,7", cli("reft", "train", "--layers", "1,7"), CliError, L,
         r"3 layers \(0-2\)", r"use a layer"),
    Case("cli reft train", "--layers not numbers", "a", cli("reft", "train", "--layers", "a"), CliError, r"'a'",
         r"comma-separated|layer numbers", r"e\.g\.|such as"),
    Case("cli reft train", "--rank > hidden size", "40", cli("reft", "train", "--layers", "1", "--rank", "40"),
         CliError, r"rank 40", r"hidden size is 32", r"choose|use|e\.g\."),
    Case("cli reft train", "--rank", "0", cli("reft", "train", "--layers", "1", "--rank", "0"), CliError, r"rank 0",
         r"at least 1", r"e\.g\.|use"),
    Case("cli reft train", "--positions", "all", cli("reft", "train", "--layers", "1", "--positions", "all"),
         CliError, r"'all'", r"first/last prompt tokens", r"e\.g\."),
    Case("cli reft train", "--component", "z", cli("reft", "train", "--layers", "1", "--component", "z"), CliError,
         r"'z'", r"'resid_post'", r"use|choose|expected one of"),
    Case("cli reft train", "--dropout", "1.0", cli("reft", "train", "--layers", "1", "--dropout", "1.0"), CliError,
         r"dropout 1\.0", r"0 <= dropout < 1", r"use|e\.g\."),
    Case("cli reft train", "--epochs", "0", cli("reft", "train", "--layers", "1", "--epochs", "0"), CliError,
         r"epochs must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli reft train", "--batch-size", "0", cli("reft", "train", "--layers", "1", "--batch-size", "0"), CliError,
         r"batch_size must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli reft train", "--grad-accum", "0", cli("reft", "train", "--layers", "1", "--grad-accum", "0"), CliError,
         r"grad_accum must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli reft train", "--lr", "-1", cli("reft", "train", "--layers", "1", "--lr", "-1"), CliError, r"got -1",
         r"> 0", r"e\.g\."),
    Case("cli reft train", "--max-length", "0", cli("reft", "train", "--layers", "1", "--max-length", "0"), CliError,
         r"max.length 0", r">= 1|at least", r"e\.g\.|use|give"),
    Case("cli reft train", "--mixed-precision", "fp8", cli("reft", "train", "--mixed-precision", "fp8"), CliError,
         r"'fp8'", r"auto'?, '?no'?, '?bf16'?, '?fp16", r"choose from"),
    Case("cli reft train", "--save-every negative", "-1", cli("reft", "train", "--layers", "1", "--save-every", "-1"),
         CliError, r"save.every -1|got -1", r">= 0", r"e\.g\.|use"),
    Case("cli reft train", "--max-new-tokens negative", "-1", cli("reft", "train", "--layers", "1",
                                                                  "--max-new-tokens", "-1"), CliError,
         r"max.new.tokens -1|-1", r">= 0|>= 1|positive", r"e\.g\.|use|give"),
    Case("cli reft train", "--dataset neither built-in nor a file", "TMP/none.jsonl",
         cli("reft", "train", "--dataset", "TMP/none.jsonl"), CliError, r"none\.jsonl", r"neither a built-in \(\['persona'\]\)",
         r"give|use|pass|neither"),
    Case("cli reft train", "--dataset of the wrong shape", "[{'q': ...}]",
         lambda t: (write(t, "bad.json", json.dumps([{"q": "a", "a": "b"}])),
                    cli("reft", "train", "--layers", "1", "--dataset", "TMP/bad.json")(t)), CliError, r"bad\.json",
         r"'instruction' and 'response' keys", r"expected a list|give"),
    Case("empty data", "cli reft train: --dataset with no pairs", "an empty JSONL file",
         lambda t: (write(t, "empty.jsonl", ""), cli("reft", "train", "--layers", "1", "--dataset",
                                                      "TMP/empty.jsonl")(t)), CliError, r"empty\.jsonl",
         r"no instruction/response pairs", r"give"),
    Case("cli reft generate", "--reft folder without a checkpoint", "TMP",
         cli("reft", "generate", "--reft", "TMP"), CliError, r"no reft_config\.json in TMP",
         r"not a saved ReFT model", r"save with reft\.save"),
    Case("cli reft generate", "--reft of another base model", "fingerprint differs",
         lambda t: cli("reft", "generate", "--reft", str(reft_folder(t, "gpt2")), "--prompt", "the cat")(t), CliError,
         r"fingerprint is [0-9a-f]{16}", r"trained on 'tiny-gpt2'", r"load the same base model"),
    Case("cli reft generate", "--max-new-tokens negative", "-1",
         lambda t: cli("reft", "generate", "--reft", str(reft_folder(t)), "--prompt", "the cat",
                       "--max-new-tokens", "-1")(t), CliError, r"-1", r">= 0|>= 1|positive", r"e\.g\.|use|give"),
    Case("cli reft generate", "--prompt longer than the context", "100 tokens",
         lambda t: cli("reft", "generate", "--reft", str(reft_folder(t)), "--prompt", LONG)(t), CliError,
         r"\d{3} tokens", r"context of 64", r"shorten"),
    # CLI: memorize
    Case("cli memorize", "--kind", "lora", cli("memorize", "--kind", "lora"), CliError, r"'lora'",
         r"consreft'?, '?loreft'?, '?direft", r"choose from"),
    Case("cli memorize", "--variant", "reversed", cli("memorize", "--variant", "reversed"), CliError, r"'reversed'",
         r"natural'?, '?shuffled'?, '?random", r"choose from"),
    Case("cli memorize", "--path", "slow", cli("memorize", "--path", "slow"), CliError, r"'slow'",
         r"auto'?, '?fast'?, '?naive", r"choose from"),
    Case("cli memorize", "--tokens", "0", cli("memorize", "--tokens", "0", "--layer", "1"), CliError,
         r"n_tokens must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli memorize", "--rank", "0", cli("memorize", "--rank", "0", "--layer", "1"), CliError,
         r"rank must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli memorize", "--pairs", "0", cli("memorize", "--pairs", "0", "--layer", "1"), CliError,
         r"n_pairs must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli memorize", "--max-steps", "0", cli("memorize", "--max-steps", "0", "--layer", "1"), CliError,
         r"max_steps must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli memorize", "--lr", "0", cli("memorize", "--lr", "0", "--layer", "1"), CliError, r"got 0\.0", r"> 0",
         r"e\.g\.|use"),
    Case("cli memorize", "--layer out of range", "7",
         lambda t: cli("memorize", "--text", write(t, "t.txt", "the cat sat on the mat . " * 20), "--tokens", "4",
                       "--layer", "7", "--quiet")(t), CliError, L, r"3 layers \(0-2\)", r"use a layer"),
    Case("cli memorize", "--position out of range", "9",
         lambda t: cli("memorize", "--text", write(t, "t.txt", "the cat sat on the mat . " * 20), "--tokens", "4",
                       "--layer", "1", "--key", "the cat", "--position", "9", "--quiet")(t), CliError,
         r"position 9", r"valid 0\.\.1", r"use|choose|give"),
    Case("cli memorize", "--text no such file", "TMP/none.txt", cli("memorize", "--text", "TMP/none.txt"), CliError,
         r"none\.txt", r"named texts \[", r"give a path"),
    Case("empty data", "cli memorize: --text with no words", "an empty file",
         lambda t: cli("memorize", "--text", write(t, "empty.txt", ""), "--tokens", "4", "--layer", "1",
                       "--quiet")(t), CliError, r"has 0 tokens", r"fewer than 1 x 4 = 4", r"choose fewer tokens"),
    Case("cli memorize", "--max-seconds", "-1", cli("memorize", "--max-seconds", "-1", "--layer", "1"), CliError,
         r"max_seconds.*-1|-1\.0", r"> 0", r"e\.g\.|use|give"),
    Case("cli memorize", "--patience negative", "-1", cli("memorize", "--patience", "-1", "--layer", "1"), CliError,
         r"patience.*-1", r">= 0", r"e\.g\.|use|give"),
    Case("cli memorize-sweep", "--tokens not numbers", "16,x", cli("memorize-sweep", "--tokens", "16,x"), CliError,
         r"'16,x'", r"comma-separated integers", r"like 16,32,64"),
    Case("cli memorize-sweep", "--kinds unknown", "lora", cli("memorize-sweep", "--text", "TMP/t.txt", "--kinds", "lora"), CliError,
         r"'lora'", r"\['consreft', 'direft', 'loreft'\]", r"use|choose|expected one of"),
    Case("cli memorize-sweep", "--variants unknown", "reversed", cli("memorize-sweep", "--text", "TMP/t.txt", "--variants", "reversed"),
         CliError, r"'reversed'", r"'natural', 'shuffled', 'random'", r"use|choose|expected one of"),
    Case("cli memorize-sweep", "--layers out of range", "1,7",
         lambda t: cli("memorize-sweep", "--text", write(t, "t.txt", "the cat sat on the mat . " * 20), "--tokens",
                       "2", "--layers", "1,7", "--max-steps", "2", "--out", "TMP/sweep", "--quiet")(t), CliError,
         r"7", r"3 layers \(0-2\)", r"use a layer"),
    Case("cli memorize-sweep", "--ranks", "0", cli("memorize-sweep", "--text", "TMP/t.txt", "--ranks", "0"), CliError,
         r"rank must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli memorize-sweep", "--pairs", "0", cli("memorize-sweep", "--text", "TMP/t.txt", "--pairs", "0"), CliError,
         r"n_pairs must be >= 1, got 0", r">= 1", r"e\.g\.|use"),
    Case("cli memorize-sweep", "--text no such file", "TMP/none.txt", cli("memorize-sweep", "--text", "TMP/none.txt"),
         CliError, r"none\.txt", r"named texts \[", r"give a path"),
    # CLI: data
    Case("cli data", "data fetch: unknown name", "imdb", cli("data", "fetch", "imdb", model=None), CliError,
         r"'imdb'", r"known datasets: \[", r"workbench data list"),
    Case("cli data", "data fetch --from: path that does not exist", "TMP/none",
         cli("data", "fetch", "sst", "--from", "TMP/none", model=None), CliError, r"TMP/none",
         r"does not exist|not found|no such", r"give|pass|use"),
    Case("cli data", "data path: unknown name", "imdb", cli("data", "path", "imdb", model=None), CliError, r"'imdb'",
         r"known datasets: \[", r"workbench data list"),
    Case("cli data", "data verify: unknown name", "imdb", cli("data", "verify", "imdb", model=None), CliError,
         r"'imdb'", r"known datasets: \[", r"workbench data list"),
    Case("cli data", "data: unknown action", "download", cli("data", "download", "sst", model=None), CliError,
         r"'download'", r"list'?, '?fetch'?, '?path'?, '?verify", r"choose from"),
    Case("cli", "unknown command", "train", cli("train", model=None), CliError, r"'train'", r"choose from .*patch",
         r"choose from"),
]
for family in FAMILIES:  # sites and heads out of range on every family
    CASES += [
        Case(f"sites ({family})", "layer out of range", "L7.resid_post of 3 layers",
             run_plan(lambda: PlanItem("L7.resid_post", "l1", ZeroAblation()), family=family), ValueError, L,
             r"3 layers \(0-2\)", r"use a layer in that range"),
        Case(f"sites ({family})", "head out of range", "L1.head4.z of 4 heads",
             lambda t, f=family: tiny_model(f).cache("the cat", ["L1.head4.z"]), ValueError, r"head 4 out of range",
             r"4 heads \(0-3\)", r"use a head in that range"),
        Case(f"sites ({family})", "negative layer", "L-1.mlp_out",
             lambda t, f=family: tiny_model(f).cache("the cat", ["L-1.mlp_out"]), ValueError, r"layer -1",
             r"3 layers \(0-2\)", r"use a layer in that range"),
    ]

# analyses (attribute, path-patch, lens, dla, concepts)
PAIR = ("--base", "Paris is in the country of", "--source", "Rome is in the country of", "--target", "France",
        "--foil", "Italy")
CASES += [
    Case("cli attribute", "--layers out of range", "1,7", cli("attribute", *PAIR, "--layers", "1,7"), CliError,
         r"\[7\]", r"3 layers \(0-2\)", r"give layers in that range"),
    Case("cli attribute", "--layers not a list", "x", cli("attribute", *PAIR, "--layers", "x"), CliError, r"'x'",
         r"comma-separated integers", r"e\.g\."),
    Case("cli attribute", "--components", "mlp_act", cli("attribute", *PAIR, "--components", "mlp_act"), CliError,
         r"'mlp_act'", r"resid_pre'?, '?attn_out'?, '?mlp_out", r"choose from"),
    Case("cli attribute", "--source of another length", "4 tokens for 6",
         cli("attribute", *PAIR, "--source", "Rome is in the"), CliError, r"source has 4", r"same token count",
         r"give prompts"),
    Case("cli path-patch", "--receivers not a stream site", "L1.mlp_act",
         cli("path-patch", *PAIR, "--receivers", "L1.mlp_act"), CliError, r"L1\.mlp_act", r"receivers are one of \[",
         r"give e\.g\."),
    Case("cli path-patch", "--senders downstream of the receivers", "L2.head0.z -> L1.head0.z",
         cli("path-patch", *PAIR, "--senders", "L2.head0.z", "--receivers", "L1.head0.z"), CliError, r"L2\.head0\.z",
         r"upstream of the receivers", r"give senders in earlier layers"),
    Case("cli path-patch", "--senders not a head or MLP", "L0.resid_pre",
         cli("path-patch", *PAIR, "--senders", "L0.resid_pre"), CliError, r"L0\.resid_pre",
         r"single heads .* or MLPs", r"give one of those"),
    Case("cli lens", "--sites not a stream site", "L1.mlp_act",
         cli("lens", "--text", "the cat sat", "--sites", "L1.mlp_act"), CliError, r"L1\.mlp_act",
         r"'resid_pre', 'resid_post'", r"use one of"),
    Case("cli lens", "--top-k", "0", cli("lens", "--text", "the cat", "--top-k", "0"), CliError,
         r"argument --top-k: '0'", r"integer >= 1", r"\bgive\b"),
    Case("cli lens", "a model without a final norm", "BERT", cli("lens", "--text", "the cat", model="bert"), CliError,
         r"BERT", r"need a decoder", r"use a causal LM"),
    Case("cli dla", "a family whose heads do not sum into the stream", "Gemma 2",
         cli("dla", "--prompts", "the cat", "--target", "cat", "--foil", "dog", model="gemma2"), CliError,
         r"Gemma2", r"supports GPT-2, the Llama family, Gemma and GPT-NeoX", r"use one of those"),
    Case("cli dla", "--target of two tokens", "'the cat'",
         cli("dla", "--prompts", "the cat", "--target", "the cat", "--foil", "dog"), CliError, r"'the cat' is 2 tokens",
         r"a single token", r"try a leading space"),
    Case("cli concepts", "--concept-words without --other-words", "good great",
         cli("concepts", "--concept-words", "good", "great"), CliError, r"--concept-words",
         r"go together", r"give both"),
    Case("cli concepts", "--layer out of range", "7",
         cli("concepts", "--concept-words", "good", "great", "awful", "bad", "--other-words", "cat", "dog", "mat",
             "city", "--layer", "7"), CliError, L, r"3 layers \(0-2\)", r"use a layer"),
    Case("cli concepts", "--factors", "nan", cli("concepts", "--factors", "nan"), CliError,
         r"argument --factors: 'nan'", r"finite number", r"\bgive\b"),
    Case("cli concepts", "--max-loss-increase", "0", cli("concepts", "--max-loss-increase", "0"), CliError,
         r"argument --max-loss-increase: '0'", r"finite number > 0", r"\bgive\b"),
    Case("cli concepts", "--words", "2", cli("concepts", "--words", "2"), CliError, r"argument --words: '2'",
         r"integer >= 4", r"\bgive\b"),
    Case("cli concepts", "--methods", "sae", cli("concepts", "--methods", "sae"), CliError, r"'sae'",
         r"diffmean'?, '?probe'?, '?pca'?, '?reft_r1", r"choose from"),
    Case("concepts", "too few words for the splits", "2 words",
         lambda t: m("analyses.concept_data").concept_texts(["good", "great"], ["cat", "dog"]), ValueError,
         r"2 words", r"train/val/test splits", r"give at least 3 words"),
]

# causal abstraction (workbench align): checked before any data is derived or a run folder made
CASES += [
    Case("cli align", "task", "mystery", cli("align", "mystery"), CliError, r"'mystery'",
         r"addition'?, '?ioi'?, '?ravel'?, '?hierarchical_equality", r"choose from"),
    Case("cli align", "--featurizers", "pca", cli("align", "ioi", "--featurizers", "pca"), CliError, r"'pca'",
         r"full'?, '?das'?, '?boundless'?, '?dbm'?, '?localist", r"choose from"),
    Case("cli align", "--k", "0", cli("align", "ioi", "--k", "0"), CliError, r"'0'", r">= 1", r"\bgive\b"),
    Case("cli align", "--sparsity", "-1", cli("align", "ioi", "--sparsity", "-1"), CliError, r"'-1'",
         r"finite number >= 0", r"\bgive\b"),
    Case("cli align", "--mask-lr", "0", cli("align", "ioi", "--mask-lr", "0"), CliError, r"'0'",
         r"finite number > 0", r"\bgive\b"),
    Case("cli align", "--layers out of range", "7", cli("align", "ioi", "--layers", "7", "--out", "TMP/a"),
         CliError, r"--layers 7", r"3 layers \(0-2\)", r"give layers in that range"),
    Case("cli align", "--positions", "nowhere", cli("align", "ioi", "--positions", "nowhere", "--out", "TMP/a"),
         CliError, r"--positions nowhere", r"choose from .*last", r"choose from"),
    Case("cli align", "--variables", "colour", cli("align", "addition", "--variables", "colour", "--out", "TMP/a"),
         CliError, r"--variables colour", r"choose from", r"choose from"),
]

# The CLI's count and rate flags reject out-of-range numbers in argparse: "argument --epochs: '0' is out of
# range; give an integer >= 1".
NUMERIC_FLAGS = {"--batch-size", "--top", "--k negative", "--epochs", "--lr", "--patience", "--examples negative",
                 "--entities negative", "--max-templates", "--threads negative", "--layer-step", "--sst-limit negative",
                 "--rank", "--grad-accum", "--max-length", "--save-every negative", "--max-new-tokens negative",
                 "--tokens", "--pairs", "--max-steps", "--max-seconds"}
for case in CASES:
    if case.area.startswith("cli") and case.area != "cli memorize-sweep" and case.given in NUMERIC_FLAGS:
        flag = case.given.split()[0]
        case.value_re = rf"argument {re.escape(flag)}: '{re.escape(case.value.split()[0])}'"
        case.valid_re = r"integer >= \d+|finite number > 0"
        case.fix_re = r"\bgive\b"


# ---- running and recording -------------------------------------------------------------------
RECORDS: dict[str, dict] = {}


def _normalize(message: str, tmp: Path) -> str:
    message = message.replace(str(tmp), "TMP")
    return re.sub(r"\s+", " ", message).strip()


def run_case(case: Case, tmp: Path) -> dict:
    """Run one case; the record says what was raised and whether it was clear."""
    try:
        case.call(tmp)
    except Exception as error:  # noqa: BLE001 - recording what each bad input raises is the point
        message = _normalize(str(error), tmp)
        if isinstance(error, CliError):
            kind = f"exit {error.code}"
            typed = error.code == 2
        else:
            kind = type(error).__name__
            typed = isinstance(error, case.error) and isinstance(error, CLEAR_TYPES)
        checks = {what: bool(re.search(pattern, message)) for what, pattern in
                  (("value", case.value_re), ("valid", case.valid_re), ("fix", case.fix_re))}
        return {"case": case, "raised": error, "kind": kind, "message": message, "typed": typed,
                "checks": checks, "clear": typed and all(checks.values()) and not case.unclear}
    return {"case": case, "raised": None, "kind": "no error", "message": "", "typed": False,
            "checks": {}, "clear": False}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case, tmp_path):
    record = run_case(case, tmp_path)
    RECORDS[case.id] = record
    assert record["raised"] is not None, f"{case.given} = {case.value}: no error at all"
    if case.unclear:
        return  # a known gap, listed as unclear in the table
    if isinstance(record["raised"], CliError):
        assert record["raised"].code == 2, record["message"]
    else:
        assert isinstance(record["raised"], case.error), f"{record['kind']}: {record['message']}"
    failed = [what for what, ok in record["checks"].items() if not ok]
    assert not failed, f"the message does not name the {', '.join(failed)}: {record['message']}"


def render(records: list[dict]) -> str:
    clear = sum(r["clear"] for r in records)
    lines = ["# Bad inputs and the errors they get", "",
             "Generated from `tests/test_bad_inputs.py` (`WORKBENCH_WRITE_BAD_INPUT_TABLE=1 pytest "
             "tests/test_bad_inputs.py`); a test fails when this file drifts from the cases.", "",
             "A clear error is a `ValueError`, `IndexError`, `FileNotFoundError`, `TypeError` or "
             "`FloatingPointError` (on the command line: exit code 2 and an `error:` line) whose message names "
             "the bad value, the valid range or options, and the fix. `TMP` stands for the test's folder.", "",
             f"**{len(records)} inputs tried, {clear} with a clear error.**", "",
             "| area | input | value given | error type | message | clear? |",
             "| --- | --- | --- | --- | --- | --- |"]

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    for r in records:
        case, message = r["case"], r["message"]
        short = message if len(message) <= 200 else message[:197] + "..."
        verdict = "yes" if r["clear"] else f"no: {case.unclear or 'message lacks ' + ', '.join(k for k, v in r['checks'].items() if not v)}"
        lines.append(f"| {cell(case.area)} | {cell(case.given)} | `{cell(case.value)}` | {r['kind']} | "
                     f"{cell(short)} | {verdict} |")
    return "\n".join(lines) + "\n"


def test_table_is_up_to_date(tmp_path):
    """docs/bad_inputs.md is what the cases give (cases not run in this session run here)."""
    for i, case in enumerate(CASES):
        if case.id not in RECORDS:
            folder = tmp_path / f"case{i}"
            folder.mkdir()
            RECORDS[case.id] = run_case(case, folder)
    text = render([RECORDS[c.id] for c in CASES])
    if WRITE:
        DOC.parent.mkdir(exist_ok=True)
        DOC.write_text(text)
    assert DOC.exists() and DOC.read_text() == text, (
        "docs/bad_inputs.md is out of date: run WORKBENCH_WRITE_BAD_INPUT_TABLE=1 pytest tests/test_bad_inputs.py")


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
