"""Logit lens and attribution patching: what each layer's residual stream would predict, and a
gradient estimate of every layer x position (and head) patch's effect, from `analyses`."""

import streamlit as st

from ui import chart, model_sidebar, table_view, user_errors

from analyses.attribution import attribution_patching
from analyses.figures import attribution_figure, lens_figure
from analyses.lens import logit_lens


@st.cache_data(show_spinner="Decoding every layer…", max_entries=16)
def lens(_hm, key: tuple, text: str, target: str, top_k: int):
    return logit_lens(_hm, text, top_k=top_k, target=target or None)


@st.cache_data(show_spinner="One forward and one backward…", max_entries=16)
def attribute(_hm, key: tuple, base: str, source: str, target: str, foil: str):
    return attribution_patching(_hm, base, source, target=target, foil=foil)


st.title("Logit lens and attribution")
name, hm = model_sidebar()
model_key = (name, str(hm.device), str(hm.dtype)) if hm is not None else None
lens_tab, attribution_tab = st.tabs(["Logit lens", "Attribution patching"])

with lens_tab:
    st.caption("Each layer's resid_post decoded through the final norm and the unembedding "
               "(`analyses.lens.logit_lens`); the last layer is the model's own prediction.")
    c1, c2, c3 = st.columns([4, 2, 1])
    text = c1.text_input("Text", "The Eiffel Tower is in the city of", key="lens_text")
    target = c2.text_input("Target token (optional)", " Paris", key="lens_target")
    top_k = c3.number_input("Top k", 1, 20, 5, key="lens_k")
    if hm is not None and st.button("Decode", key="lens_run", type="primary"):
        st.session_state["lens_args"] = (text, target.strip("\n"), int(top_k))
    if hm is not None and st.session_state.get("lens_args"):
        with user_errors():
            table = lens(hm, model_key, *st.session_state["lens_args"])
            chart(lens_figure(table), key="lens_chart", table=table.drop(columns=["top_tokens", "top_probs"],
                                                                         errors="ignore"), name="logit-lens")
            with st.expander("Every row"):
                table_view(table.astype({c: str for c in ("top_tokens", "top_probs") if c in table}),
                           key="lens_table", name="logit-lens")

with attribution_tab:
    st.caption("Attribution patching (`analyses.attribution.attribution_patching`): (source − base) · "
               "∂metric/∂base at every site, from one backward pass; metric = logit(target) − logit(foil), "
               "normalized as the patching sweeps are (1 = the whole source's effect).")
    left, right = st.columns(2)
    base = left.text_input("Base prompt", "Paris is in the country of", key="attr_base")
    source = right.text_input("Source prompt (same number of tokens)", "Rome is in the country of", key="attr_source")
    target = left.text_input("Target token (the base's answer)", " France", key="attr_target")
    foil = right.text_input("Foil token (the source's answer)", " Italy", key="attr_foil")
    if hm is not None and st.button("Attribute", key="attr_run", type="primary"):
        st.session_state["attr_args"] = (base, source, target, foil)
    if hm is not None and st.session_state.get("attr_args"):
        with user_errors():
            positions, heads = attribute(hm, model_key, *st.session_state["attr_args"])
            chart(attribution_figure(positions, heads, value="normalized"), key="attr_chart", table=positions,
                  name="attribution")
            if heads is not None:
                table_view(heads, key="attr_heads", name="attribution-heads")
