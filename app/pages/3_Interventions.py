"""Interventions: load a saved LoReFT, DAS or steering intervention and compare the model's
generations and next-token distributions with and without it, side by side."""

from dataclasses import replace
from pathlib import Path

import streamlit as st

from ui import INTERVENTIONS_DIR, RESULTS_DIR, cached_model, chosen_device, model_sidebar, pick_folder, show_side_by_side, user_errors

from workbench.interventions import AddVector
from workbench.plan import PlanItem
from workbench.predictions import top_k_next_tokens

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


st.title("Interventions")
name, hm = model_sidebar()
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
