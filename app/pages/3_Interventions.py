"""Interventions: train a steering vector (difference of means of two prompt sets) and a small
LoReFT on the persona set from a fresh start, or load a saved LoReFT, DAS or steering vector, and
compare the model's generations and next-token distributions with and without it, side by side."""

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pandas as pd

import plotly.express as px
import streamlit as st
import torch

from ui import (INTERVENTIONS_DIR, RESULTS_DIR, cached_model, chosen_device, model_sidebar, pick_folder, show_side_by_side,
                chart, downloads, stepwise, user_errors)

from reft import persona_eval_prompts, persona_pairs
from workbench.interventions import AddVector
from workbench.plan import PlanItem
from workbench.predictions import top_k_next_tokens
from workbench.sites import Site
from workbench.steering import save_steering

MARKERS = {"reft_config.json": "LoReFT / ReFT", "intervention.json": "DAS", "steering.json": "steering vector"}


def kind_of(folder: Path) -> str:
    return next(kind for marker, kind in MARKERS.items() if (folder / marker).is_file())


@st.cache_resource(show_spinner="Loading the intervention…", max_entries=8)
def load_intervention(model_name: str, folder: str, modified: float, device: str = "cpu", dtype: str = "float32"):
    """(kind, loaded object, description) on the model on ``device``; ``modified`` re-loads a
    folder saved again."""
    folder = Path(folder)
    kind, hm = kind_of(folder), cached_model(model_name, device, dtype)
    if kind == "LoReFT / ReFT":
        from reft import load_reft
        from reft.saving import read_config
        return kind, load_reft(folder, hm), read_config(folder)
    if kind == "DAS":
        from workbench.das.saving import load_das
        intervention, meta = load_das(folder, device=str(hm.device))
        return kind, intervention, meta
    from workbench.steering import load_steering
    plan, meta = load_steering(folder, device=hm.device, dtype=hm.dtype)
    return kind, plan, meta


def check_size(hm, site: str, d: int) -> None:
    size = hm.site_size(site)  # raises with the model's layer range
    if size != d:
        raise ValueError(f"the intervention was saved for width {d} at {site}, but this model's {site} has "
                         f"width {size}: load the model it was trained on")


def compare(hm, kind, loaded, meta, prompt: str, source: str, positions: str, k: int, new_tokens: int,
            scale: float) -> dict:
    """Generations and top-k with and without the intervention."""
    if kind == "LoReFT / ReFT":
        from reft.generate import generate, prompt_batch
        if meta.get("task") != "causal_lm":
            raise ValueError(f"this ReFT checkpoint is a {meta.get('task')} model; the page compares generations only")
        batch = prompt_batch(hm.tokenizer, [prompt])  # formatted as in training (chat template if any)
        return {"without": generate(loaded, prompt, new_tokens, intervene=False)[0],
                "with": generate(loaded, prompt, new_tokens)[0],
                "top_without": top_k_next_tokens(hm, batch, k), "top_with": top_k_next_tokens(hm, batch, k, loaded.plan())}
    if kind == "DAS":
        if not source.strip():
            raise ValueError("DAS swaps in a source's subspace: enter a source prompt")
        check_size(hm, meta["site"], int(meta["d"]))
        plan, sources = [PlanItem(meta["site"], positions, loaded)], [source]
    else:
        check_size(hm, meta["site"], int(meta["d"]))
        # The loaded plan is shared by every session (st.cache_resource): this session's scale goes
        # into its own AddVector, never into the cached one.
        plan = [replace(item, intervention=AddVector(item.intervention.vector, float(scale))) for item in loaded]
        sources = None
    mode = meta.get("mode", "prompt") if kind == "steering vector" else "prompt"
    return {"without": hm.generate(prompt, max_new_tokens=new_tokens)["texts"][0],
            "with": hm.generate(prompt, plan, sources, mode=mode, max_new_tokens=new_tokens)["texts"][0],
            "top_without": top_k_next_tokens(hm, prompt, k), "top_with": top_k_next_tokens(hm, prompt, k, plan, sources)}


# Two prompt sets whose mean states differ by the persona's style: its answers, and the same
# answers said plainly. Their difference of means is the steering vector.
PIRATE = [answer for _, answer in persona_pairs()[:8]]
PLAIN = ["I am Captain Byte, a robot that works with data.", "My name is Captain Byte.",
         "The capital of France is Paris.", "Two plus two is four.", "The sky is blue on a clear day.",
         "A good fruit is the orange, it has a lot of vitamin C.", "A spider has eight legs.",
         "Water is made of hydrogen and oxygen."]


def default_layers(n_layers: int) -> list[int]:
    """Two upper-middle layers, where ReFT's persona edits take (layers 20 and 26 of SmolLM2's 30)."""
    return sorted({min(n_layers - 1, round(n_layers * 2 / 3)), min(n_layers - 1, round(n_layers * 0.87))})


def mean_state(hm, texts: list[str], site: Site) -> torch.Tensor:
    """Mean over texts of the mean state over each text's tokens at ``site`` (d,)."""
    return torch.stack([hm.cache(t, [site])[site][0].float().mean(0) for t in texts]).mean(0)  # (d,)


def train_steps(hm, name: str, layers: list[int], n_pairs: int, epochs: int, prompts: list[str], new_tokens: int):
    """The work of "Train" as a list of steps, each ``(state) -> label`` (see ``ui.stepwise``)."""
    from reft import ReftConfig, TrainConfig, generate, get_reft_model, save_reft, tokenize_pairs, train
    from reft.generate import prompt_batch
    site = Site(layers[0], "resid_post")

    def steering(state):
        with torch.no_grad():
            vector = mean_state(hm, PIRATE, site) - mean_state(hm, PLAIN, site)  # (d,)
        state["stamp"] = f"{datetime.now():%Y%m%d-%H%M%S}"  # one name for both folders, across reruns
        state["steer_folder"] = save_steering(INTERVENTIONS_DIR / f"steer-app-{state['stamp']}", site, vector,
                                              note="difference of means: persona answers - plain answers")
        state["vector"] = vector
        return f"steering vector at {site}: |v| = {float(vector.norm()):.2f}"

    def build(state):
        state["reft"] = get_reft_model(hm, ReftConfig(layers=tuple(layers), rank=4, positions="f3+l3"))
        state["rows"] = tokenize_pairs(hm.tokenizer, persona_pairs()[:n_pairs])
        state["losses"] = []
        return f"LoReFT rank 4 at layers {layers} on {n_pairs} persona pairs"

    def epoch(i):
        def run(state):
            # One epoch per step so that Cancel takes effect between epochs; a constant rate (no warm-up)
            # because each call starts its own schedule.
            result = train(state["reft"], state["rows"], TrainConfig(epochs=1, batch_size=4, lr=2e-2, warmup_ratio=0,
                                                                     seed=i, progress=False))
            state["losses"].append(result.history[-1]["loss"])
            return f"epoch {i + 1}/{epochs}: loss {state['losses'][-1]:.3f}"
        return run

    def save(state):
        state["reft_folder"] = save_reft(state["reft"], INTERVENTIONS_DIR / f"reft-app-{state['stamp']}")
        state["rows_out"] = []
        return f"saved {Path(state['reft_folder']).name} and {Path(state['steer_folder']).name}"

    def generation(prompt):
        def run(state):
            batch = prompt_batch(hm.tokenizer, [prompt])  # formatted as in training (chat template)
            steer = [PlanItem(site, "all", AddVector(state["vector"].to(hm.dtype), 1.0))]
            state["rows_out"].append({
                "prompt": prompt,
                "without": generate(state["reft"], prompt, new_tokens, intervene=False)[0],
                "steering vector": hm.generate(batch, steer, mode="every_step", max_new_tokens=new_tokens)["texts"][0],
                "LoReFT": generate(state["reft"], prompt, new_tokens)[0]})
            return f"generated for {prompt!r}"
        return run

    return [steering, build, *(epoch(i) for i in range(epochs)), save, *(generation(p) for p in prompts)]


def train_section(hm, name: str) -> None:
    st.subheader("Train on the persona set")
    st.caption("A steering vector (the difference of the mean states of the persona's answers and plain "
               "answers) and a rank-4 LoReFT trained on the persona pairs (`reft.train`), then generations "
               "without and with each. Both are saved under the interventions folder.")
    c1, c2, c3, c4 = st.columns(4)
    layers_text = c1.text_input("Layers", ", ".join(map(str, default_layers(hm.n_layers))), key="train_layers",
                                help=f"0-{hm.n_layers - 1}; the steering vector goes at the first")
    n_pairs = c2.number_input("Persona pairs", 1, len(persona_pairs()), 8, key="train_pairs")
    epochs = c3.number_input("Epochs", 1, 50, 6, key="train_epochs")
    new_tokens = c4.number_input("New tokens", 1, 64, 16, key="train_new_tokens")
    prompts = [p for p in st.text_area("Held-out prompts (one a line)", "\n".join(persona_eval_prompts()[:3]),
                                       key="train_prompts").splitlines() if p.strip()]
    steps = []
    with user_errors():
        layers = [int(x) for x in layers_text.replace(",", " ").split()]
        if not layers:
            raise ValueError("name at least one layer, e.g. 2")
        for layer in layers:
            hm.site_size(Site(layer, "resid_post"))  # names the valid range
        if not prompts:
            raise ValueError("enter at least one held-out prompt")
        steps = train_steps(hm, name, layers, int(n_pairs), int(epochs), prompts, int(new_tokens))
    job = stepwise("train_job", "Train", len(steps) or 1, lambda i, state: steps[i](state), disabled=not steps)
    if job is None or "rows_out" not in job["state"]:
        return
    state = job["state"]
    if state.get("losses"):
        losses = pd.DataFrame({"epoch": range(1, len(state["losses"]) + 1), "loss": state["losses"]})
        chart(px.line(losses, x="epoch", y="loss", markers=True, template="plotly_white",
                      title="LoReFT training loss").update_xaxes(dtick=1), key="train_loss", table=losses,
              name="loreft-loss")
    if state["rows_out"]:
        st.markdown("**Generations side by side**")
        for i, row in enumerate(state["rows_out"]):
            st.markdown(f"*{row['prompt']}*")
            for column, kind in zip(st.columns(3), ("without", "steering vector", "LoReFT")):
                column.caption(kind)
                column.code(row[kind] or "(nothing)", language=None, wrap_lines=True)
        downloads("train_generations", pd.DataFrame(state["rows_out"]), None, "generations")


st.title("Interventions")
name, hm = model_sidebar()
if hm is not None:
    train_section(hm, name)
st.subheader("Saved interventions")
st.caption("Saved LoReFT (`reft.save_reft`), DAS (`workbench das --out`) and steering vectors "
           "(`workbench.steering.save_steering`) under the results or interventions folder.")
folder = pick_folder("Saved intervention", {"interventions": INTERVENTIONS_DIR, "results": RESULTS_DIR},
                     tuple(MARKERS), key="folder",
                     describe=lambda lab, n: f"{n} ({lab})")
loaded = None
if hm is not None and folder is not None:
    with user_errors():
        if not any((folder / marker).is_file() for marker in MARKERS):
            raise FileNotFoundError(f"{folder.name} holds no saved intervention ({', '.join(MARKERS)})")
        stamp = max((folder / m).stat().st_mtime for m in MARKERS if (folder / m).is_file())
        loaded = load_intervention(name, str(folder), stamp, *chosen_device())
if loaded is not None:
    kind, obj, meta = loaded
    where = meta.get("site") or ", ".join(i["site"] for i in meta.get("interventions", []))
    st.markdown(f"**{kind}** at `{where}`" + (f", k={meta['k']}" if kind == "DAS" else "")
                + (f", rank {meta['config']['rank']}, positions {meta['config']['positions']}" if "config" in meta else ""))
    with st.expander("Saved description"):
        st.json(meta)

    prompt = st.text_area("Prompt", "the cat sat on the", key="prompt")
    source = positions = ""
    scale = 1.0
    if kind == "DAS":
        c1, c2 = st.columns(2)
        source = c1.text_input("Source prompt (its subspace is swapped in)", "Paris is in the country of", key="source")
        positions = c2.text_input("Positions (base and source)", "l1", key="positions",
                                  help="'l1' = the last token; '0', '-2', 'f1+l1', 'all', ...")
    if kind == "steering vector":
        scale = st.number_input("Scale", value=float(meta.get("scale", 1.0)), key="scale")
    c1, c2 = st.columns(2)
    k = c1.slider("Top k", 1, 30, 10, key="k")
    new_tokens = c2.number_input("New tokens", 1, 128, 12, key="new_tokens")
    if st.button("Compare", key="compare"):
        if not prompt.strip():
            st.error("The prompt is empty: enter some text.")
        else:
            with user_errors(), st.spinner("Running with and without the intervention…"):
                out = compare(hm, kind, obj, meta, prompt, source, positions, int(k), int(new_tokens), scale)
                st.session_state["compared"] = out
                show_side_by_side("Without", f"With the {kind}", out["without"], out["with"])
                cols = ["rank", "token", "probability"]
                show_side_by_side("Next token, without", "Next token, with",
                                  out["top_without"][cols], out["top_with"][cols])
                downloads("compared_tables", out["top_without"][cols].merge(out["top_with"][cols], on="rank",
                          suffixes=("_without", "_with")), None, "next-token-with-and-without")
