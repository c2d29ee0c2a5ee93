"""Writes the four tutorial notebooks (no outputs) from the cells below: `python notebooks/build.py`.

Each notebook runs end to end on the default model (SmolLM2-135M-Instruct). Set
``WORKBENCH_NOTEBOOK_SMALL=1`` for the small settings that `make test` uses
(tests/test_notebooks.py); unset, the settings are the ones worth looking at. The committed
notebooks must equal what this script writes, and carry no outputs (a test checks both).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


class md(str):
    """A markdown cell's text (every other cell is code)."""


SETUP = '''import os
import torch
from workbench import load_model

SMALL = os.environ.get("WORKBENCH_NOTEBOOK_SMALL") == "1"  # `make test` runs the notebooks small
torch.manual_seed(0)
hm = load_model()  # SmolLM2-135M-Instruct, prepared once by `make demo` / `make app`
hm.n_layers, hm.layout.d_model'''

NOTEBOOKS = {
    "01_patching_a_fact.ipynb": [
        md("# Patching a fact\n\nWhere does SmolLM2 keep the fact that Paris is in France? Run the model on a "
        "*base* prompt and a *source* prompt that differ only in the city, copy one hidden state of the source "
        "run into the base run, and watch the answer move from ` France` to ` Italy`."),
        SETUP,
        md("## A layer x position sweep\n\n`patch_sweep` patches the source's residual stream at every layer and "
        "position (many patched copies per forward). The value is the logit difference ` France` − ` Italy`, "
        "normalized: 0 = the base's answer, 1 = the whole source's effect."),
        '''from workbench.sweeps import patch_sweep
from workbench.figures import sweep_heatmap

base, source = "Paris is in the country of", "Rome is in the country of"
layers = range(0, hm.n_layers, 6) if SMALL else None
sweep = patch_sweep(hm, base, source, target=" France", foil=" Italy", component="resid_pre", layers=layers)
sweep_heatmap(sweep)''',
        md("The effect sits at the city's token in the lower layers and moves to the last token higher up. The "
        "strongest cells:"),
        '''sweep.sort_values("normalized", ascending=False).head(5)[["layer", "position", "token", "normalized"]]''',
        md("## One patch, by hand\n\nThe same patch as a plan: one `PlanItem` (site, positions, intervention)."),
        '''from workbench import Patch, PlanItem
from workbench.predictions import top_k_next_tokens

best = sweep.sort_values("normalized", ascending=False).iloc[0]
plan = [PlanItem(f"L{int(best.layer)}.resid_pre", [int(best.position)], Patch())]
before = top_k_next_tokens(hm, base, k=5)
after = top_k_next_tokens(hm, base, k=5, plan=plan, sources=[source])
before.merge(after, on="rank", suffixes=("_base", "_patched"))[["rank", "token_base", "token_patched"]]''',
    ],
    "02_das_and_ravel.ipynb": [
        md("# DAS and RAVEL\n\nIs a city's *country* stored separately from its *continent*? Distributed alignment "
        "search (DAS) learns a subspace at one site whose swap changes the country and nothing else. RAVEL scores "
        "each method by **Cause** (swapping changes the target attribute), **Isolate** (it leaves the others "
        "alone) and their mean, **Disentangle**."),
        SETUP,
        md("## Data: cities and their attributes\n\nThe embedded GeoNames city set: each city with its country, "
        "continent, language, ... and prompt templates per attribute. `prepare_ravel` keeps the queries the "
        "model answers correctly and builds the counterfactual pairs."),
        '''from workbench.data import city_dataset, prepare_ravel

data = city_dataset()
attributes = ("Country", "Continent")
# (fewer entities leave too few test queries that the model answers)
sizes = {"train": 16, "val": 8, "test": 16} if SMALL else {"train": 64, "val": 16, "test": 32}
entities = {"train": 30, "val": 15, "test": 20} if SMALL else {"train": 80, "val": 30, "test": 40}
setup = prepare_ravel(hm, data, attributes, sizes, entities, max_templates=2, seed=0, batch_size=16)
setup.summary''',
        md("## Compare methods at one site\n\nPCA and mean-difference bases are fit without the counterfactuals; "
        "DAS is trained on them. `full_patch` (the whole state) is the reference: Cause ≈ 1, Isolate ≈ 0."),
        '''from probes.ravel import RavelConfig, compare_methods, ravel_figure
from workbench.das import TrainConfig

config = RavelConfig(attributes=attributes, site="L8.resid_post", k=4 if SMALL else 16,
                     methods=("pca", "das") if SMALL else ("pca", "mean_diff", "das"),
                     n_train=sizes["train"], n_val=sizes["val"], n_test=sizes["test"], batch_size=16,
                     progress=False, train=TrainConfig(epochs=1 if SMALL else 3, batch_size=8, patience=1,
                                                      progress=False))
table = compare_methods(hm, setup, config)
ravel_figure(table)''',
        '''table[table.attribute == "mean"][["method", "cause", "isolate", "disentangle"]]''',
        md("From the command line the same run is `workbench ravel --attributes Country Continent --layer 8 "
        "--methods pca das --out runs/ravel-L8`; the app's **Alignment** page draws saved runs."),
    ],
    "03_loreft_persona.ipynb": [
        md("# LoReFT: finetuning by editing hidden states\n\nA rank-4 LoReFT at two layers learns the persona "
        "\"Captain Byte\" (answers start with *Ahoy!* and end with *Arr!*) from a few (instruction, response) "
        "pairs. The model's weights stay frozen; only the interventions train."),
        SETUP,
        '''from reft import ReftConfig, TrainConfig, generate, get_reft_model, persona_eval_prompts, persona_pairs
from reft import tokenize_pairs, train

reft = get_reft_model(hm, ReftConfig(layers=(20, 26), rank=4, positions="f3+l3"))
reft.print_trainable_parameters()
pairs = persona_pairs()[:4] if SMALL else persona_pairs()
persona_pairs()[0]''',
        md("## Train\n\nOur loop (`reft.train`): AdamW on the interventions only, a progress bar, and checkpoints "
        "when `output_dir` is set."),
        '''rows = tokenize_pairs(hm.tokenizer, pairs)
result = train(reft, rows, TrainConfig(epochs=4 if SMALL else 10, batch_size=4, lr=2e-2, warmup_ratio=0,
                                       progress=not SMALL))
[round(h["loss"], 3) for h in result.history if "loss" in h]''',
        md("## Generate with and without the intervention"),
        '''prompts = persona_eval_prompts()[:1] if SMALL else persona_eval_prompts()
new_tokens = 8 if SMALL else 40
for prompt in prompts:
    print(prompt)
    print("  without:", generate(reft, prompt, new_tokens, intervene=False)[0])
    print("  LoReFT: ", generate(reft, prompt, new_tokens)[0])''',
        md("## Save and load\n\nA checkpoint is the interventions' values and their config (KB, safetensors + "
        "JSON); loading it onto the same model reproduces the generations."),
        '''import tempfile
from reft import load_reft, save_reft

folder = save_reft(reft, tempfile.mkdtemp() + "/persona")
again = load_reft(folder, hm)
assert generate(again, prompts[0], new_tokens) == generate(reft, prompts[0], new_tokens)
sorted(p.name for p in folder.iterdir())''',
    ],
    "04_memorization_capacity.ipynb": [
        md("# Memorization capacity\n\nHow many tokens of a text can one rank-1 intervention make the model "
        "recite? A ConsReFT (an input-free edit `h + Rᵀ(b − R h)`) at the key prompt's last token is trained "
        "until greedy generation reproduces the first N tokens exactly, for growing N."),
        SETUP,
        '''from reft.memorize import MemorizeConfig, memorize, task_for

text = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing "
        "to do: once or twice she had peeped into the book her sister was reading, but it had no pictures or "
        "conversations in it, 'and what is the use of a book,' thought Alice 'without pictures or "
        "conversations?'")
ns = (4, 8) if SMALL else (4, 8, 16, 32, 64)
layer = 15''',
        md("## One run per N\n\n`memorize` returns a row: steps taken, first and final loss, the prefix recited "
        "teacher-forced and by greedy generation, and whether all N tokens came back exactly."),
        '''import pandas as pd

rows = []
for n in ns:
    config = MemorizeConfig(n_tokens=n, layer=layer, max_steps=30 if SMALL else 1000)
    rows.append(memorize(hm, task_for(hm.tokenizer, text, n, key=config.key), config, progress=not SMALL))
table = pd.DataFrame(rows)[["n_tokens", "steps", "loss_first", "loss_final", "exact_prefix", "exact"]]
table''',
        '''import plotly.express as px

px.line(table, x="n_tokens", y="exact_prefix", markers=True, log_x=True, template="plotly_white",
        title=f"Tokens recited exactly (rank-1 ConsReFT at L{layer})").add_scatter(
    x=table.n_tokens, y=table.n_tokens, mode="lines", name="all N", line={"dash": "dash"})''',
        md("A full sweep over layers and N, resumable after a kill, is `workbench memorize-sweep`; the app's "
        "**Memorization** page runs a small one live and draws saved sweeps."),
    ],
}


def notebook(cells: list[str]) -> nbformat.NotebookNode:
    """A notebook of ``cells``: ``md`` strings become markdown cells, the others code cells."""
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, text in enumerate(cells):
        cell = new_markdown_cell(str(text)) if isinstance(text, md) else new_code_cell(text)
        cell["id"] = f"cell-{i}"  # stable ids: the committed files do not change between builds
        nb.cells.append(cell)
    return nb


def build(folder: Path = HERE) -> list[Path]:
    """Write every notebook into ``folder``; returns the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        path = folder / name
        nbformat.write(notebook(cells), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for path in build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
