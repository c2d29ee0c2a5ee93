"""Memorization: capacity curves (share recited exactly vs N, per layer) from saved sweeps."""

import streamlit as st

from ui import RESULTS_DIR, command_of, model_sidebar, pick_folder, read_json, read_table, user_errors

from reft.memorize import capacity_figure, capacity_table

st.title("Memorization")
model_sidebar()
st.caption("Sweeps saved by `workbench memorize-sweep` (`reft.memorize.memorize_sweep`) under the results folder.")
folder = pick_folder("Saved sweep", {"results": RESULTS_DIR}, ("results.jsonl",), key="sweep",
                     keep=lambda f: command_of(f) == "memorize-sweep", describe=lambda lab, n: n)
if folder is not None:
    with user_errors():
        df = read_table(folder)
        setup = read_json(folder, "sweep_config.json") if (folder / "sweep_config.json").is_file() else {}
        st.caption(f"model {setup.get('model', '?')}, text {setup.get('text', '?')}, "
                   f"{len(df)} runs finished")
        c1, c2 = st.columns(2)
        layers = c1.multiselect("Layers", sorted(df["layer"].unique()), default=sorted(df["layer"].unique()),
                                key="layers")
        variants = c2.multiselect("Variants", sorted(df["variant"].unique()), default=sorted(df["variant"].unique()),
                                  key="variants")
        shown = df[df["layer"].isin(layers) & df["variant"].isin(variants)]
        if shown.empty:
            st.info("Choose at least one layer and one variant.")
        else:
            st.plotly_chart(capacity_figure(shown), key="capacity")
            st.markdown("**Capacity**: the largest N recited exactly, per setting")
            st.dataframe(capacity_table(shown), hide_index=True)
            with st.expander("Every run"):
                st.dataframe(shown, hide_index=True)
