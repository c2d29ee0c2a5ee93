"""Memorization: a small capacity run live (one intervention per N, trained with
`reft.memorize.memorize`; the final loss and the recited prefix drawn as curves as each N finishes),
and capacity curves (share recited exactly vs N, per layer) from saved sweeps."""

from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from ui import (RESULTS_DIR, chart, command_of, model_sidebar, pick_folder, read_json, read_table, stepwise,
                table_view, user_errors)

from reft.memorize import MemorizeConfig, capacity_figure, capacity_table, memorize, task_for
from workbench.runs import save_run

# The opening of Alice's Adventures in Wonderland (public domain), the text the capacity runs recite.
ALICE = ("Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: "
         "once or twice she had peeped into the book her sister was reading, but it had no pictures or "
         "conversations in it, 'and what is the use of a book,' thought Alice 'without pictures or conversations?' "
         "So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy "
         "and stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and "
         "picking the daisies, when suddenly a White Rabbit with pink eyes ran close by her.")


def live_figure(rows: list[dict]) -> go.Figure:
    """Final loss and recited prefix (greedy, exact) against N, one point per finished run."""
    # plain lists (not arrays): the figure's JSON then holds the drawn numbers as they are
    df = {key: [row[key] for row in rows] for key in ("n_tokens", "loss_first", "loss_final", "exact_prefix")}
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss after training", "Recited prefix (tokens)"))
    figure.add_scatter(x=df["n_tokens"], y=df["loss_final"], mode="lines+markers", name="final loss", row=1, col=1)
    figure.add_scatter(x=df["n_tokens"], y=df["loss_first"], mode="lines+markers", name="first loss",
                       line={"dash": "dot"}, row=1, col=1)
    figure.add_scatter(x=df["n_tokens"], y=df["exact_prefix"], mode="lines+markers", name="recited prefix", row=1, col=2)
    figure.add_scatter(x=df["n_tokens"], y=df["n_tokens"], mode="lines", name="all N tokens", line={"dash": "dash",
                       "color": "gray"}, row=1, col=2)
    figure.update_xaxes(title_text="N (target tokens)", type="log", dtick=0.30103)  # ticks at powers of 2
    return figure.update_layout(template="plotly_white", height=420, margin={"t": 40},  # legend below: clear of the titles
                                legend={"orientation": "h", "y": -0.25, "x": 0})


def live_section(hm, name: str) -> None:
    st.subheader("Run a small capacity run")
    st.caption("One rank-1 ConsReFT per N at the key's last token, trained until it recites the first N tokens "
               "of the text exactly (greedy) or runs out of steps.")
    c1, c2, c3 = st.columns(3)
    layer = c1.number_input("Layer", 0, hm.n_layers - 1, hm.n_layers // 2, key="live_layer",
                            help=f"0-{hm.n_layers - 1}")
    ns_text = c2.text_input("N values", "4, 8, 16, 32", key="live_ns")
    max_steps = c3.number_input("Steps per N (at most)", 1, 2000, 150, key="live_steps")
    text = st.text_area("Text to recite", ALICE, key="live_text", height=100)
    ns = []
    with user_errors():
        ns = sorted({int(x) for x in ns_text.replace(",", " ").split()})
        if not ns or ns[0] < 1:
            raise ValueError(f"N values {ns_text!r}: give positive whole numbers, e.g. 4, 8, 16")
        if not text.strip():
            raise ValueError("the text is empty: paste the text to recite")
    live = st.empty()

    def step(i, state):
        config = MemorizeConfig(n_tokens=ns[i], layer=int(layer), max_steps=int(max_steps))
        task = task_for(hm.tokenizer, text, ns[i], key=config.key)
        with hm.lock:  # memorize calls the model directly: take turns with other sessions
            row = memorize(hm, task, config, progress=False)
        state.setdefault("rows", []).append(row)
        live.plotly_chart(live_figure(state["rows"]))  # redrawn as each N finishes
        return f"N={ns[i]}: recited {row['exact_prefix']} tokens in {row['steps']} steps"

    job = stepwise("live_job", "Run", max(len(ns), 1), step, disabled=not ns)
    if job is None or not job["state"].get("rows"):
        return
    live.empty()
    rows = job["state"]["rows"]
    table = pd.DataFrame(rows)
    chart(live_figure(rows), key="live_curves", table=table, name="memorization-live")
    if job["status"] == "done" and "saved" not in job["state"]:
        out = RESULTS_DIR / f"memorize-app-{datetime.now():%Y%m%d-%H%M%S}"
        save_run(out, table, {"command": "memorize-live", "model": name, "layer": int(layer), "n_values": ns,
                              "max_steps": int(max_steps), "text": text}, figure=live_figure(rows))
        job["state"]["saved"] = out
    if "saved" in job["state"]:
        st.caption(f"Saved to {job['state']['saved'].relative_to(RESULTS_DIR)}")
    table_view(table[["n_tokens", "steps", "loss_first", "loss_final", "exact_prefix", "exact", "seconds"]],
               key="live_table", name="memorization-live")


st.title("Memorization")
name, hm = model_sidebar()
if hm is not None:
    live_section(hm, name)

st.subheader("Saved sweeps")
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
            chart(capacity_figure(shown), key="capacity", table=shown, name="capacity-curves")
            st.markdown("**Capacity**: the largest N recited exactly, per setting")
            table_view(capacity_table(shown), key="capacity_table", name="capacity")
            with st.expander("Every run"):
                table_view(shown, key="every_run", name="runs")
