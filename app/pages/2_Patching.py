"""Patching: a layer x position heatmap of what patching the source into the base does."""

import streamlit as st

from ui import cached_model, chart, chosen_device, downloads, model_sidebar, user_errors

from workbench import COMPONENTS, Site
from workbench.figures import sweep_heatmap
from workbench.predictions import cell_plan, top_k_next_tokens
from workbench.sweeps import patch_sweep


@st.cache_data(show_spinner="Running the sweep…", max_entries=32)
def sweep(model_name: str, base: str, source: str, target: str, foil: str, component: str):
    return patch_sweep(cached_model(model_name, *chosen_device()), base, source, target=target, foil=foil, component=component)


st.title("Activation patching")
name, hm = model_sidebar()
left, right = st.columns(2)
base = left.text_input("Base prompt", "Paris is in the country of", key="base")
source = right.text_input("Source prompt (same number of tokens)", "Rome is in the country of", key="source")
target = left.text_input("Target token (the base's answer)", " France", key="target")
foil = right.text_input("Foil token (the source's answer)", " Italy", key="foil")
component = st.selectbox("Component", list(COMPONENTS), key="component",
                         help="; ".join(f"{c}: {what}" for c, what in COMPONENTS.items()))

if hm is not None and st.button("Run sweep", key="run"):
    if not base.strip() or not source.strip():
        st.error("Enter both a base and a source prompt.")
    else:
        st.session_state["sweep_args"] = (name, base, source, target, foil, component)

args = st.session_state.get("sweep_args")
if hm is not None and args is not None:
    with user_errors():
        df = sweep(*args)
        chart(sweep_heatmap(df), key="heatmap", table=df, name="patching-sweep")
        st.caption(f"logit diff on the base {df.base_value[0]:.3f}, on the source {df.source_value[0]:.3f}; "
                   "normalized 1 = the whole source's effect")
        st.subheader("One cell")
        c1, c2 = st.columns(2)
        layer = c1.selectbox("Layer", sorted(df.layer.unique()), key="cell_layer")
        positions = df.drop_duplicates("position")
        position = c2.selectbox("Position", positions.position.tolist(), key="cell_position",
                                format_func=lambda p: f"{p}: {positions.set_index('position').token[p]!r}")
        plan = cell_plan(Site(int(layer), args[5]), int(position))
        base_top = top_k_next_tokens(hm, args[1], k=10)
        patched_top = top_k_next_tokens(hm, args[1], k=10, plan=plan, sources=[args[2]])
        b, p = st.columns(2)
        b.markdown("**Base run**")
        b.dataframe(base_top[["rank", "token", "probability"]], hide_index=True)
        p.markdown(f"**Patched at L{layer}, position {position}**")
        p.dataframe(patched_top[["rank", "token", "probability"]], hide_index=True)
        cols = ["rank", "token", "probability"]
        downloads("cell_tables", base_top[cols].merge(patched_top[cols], on="rank", suffixes=("_base", "_patched")),
                  None, f"patched-L{layer}-pos{position}")
