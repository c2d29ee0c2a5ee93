"""Sentiment: each token coloured by its projection on a saved sentiment direction, what ablating
the direction does to the next token, and the saved run's patching and ablation effects."""

import html

import pandas as pd
import plotly.express as px
import streamlit as st

from ui import RESULTS_DIR, model_sidebar, pick_folder, read_json, read_table, show_side_by_side, user_errors

from probes.sentiment.causal import DirectionalAblation
from probes.sentiment.figures import recovery_figure, token_projections
from probes.sentiment.fit import load_directions
from workbench.plan import PlanItem
from workbench.predictions import top_k_next_tokens
from workbench.sites import Site


def coloured_text(tokens: list[str], values: list[float]) -> str:
    """HTML: each token on a background from red (negative) through white to blue (positive)."""
    limit = max((abs(v) for v in values), default=1.0) or 1.0
    spans = []
    for token, value in zip(tokens, values):
        alpha = min(1.0, abs(value) / limit)
        rgb = "33, 102, 172" if value >= 0 else "178, 24, 43"  # RdBu ends, as in token_projection_figure
        spans.append(f'<span title="{value:+.3f}" style="background: rgba({rgb}, {alpha:.2f}); white-space: pre; '
                     f'padding: 2px 2px; margin: 0 1px; border-radius: 3px; color: {"white" if alpha > 0.6 else "inherit"}">'
                     f"{html.escape(token.replace(chr(10), '⏎'))}</span>")
    return '<div style="font-size: 1.25rem; line-height: 2.2rem">' + "".join(spans) + "</div>"


def direction_order(name: str):
    layer, method = name.split(".", 1)
    return int(layer.removeprefix("L")), method


st.title("Sentiment")
name, hm = model_sidebar()
st.caption("Directions saved by `workbench sentiment run` (`probes.sentiment.run.run_sentiment`) under the results folder.")
folder = pick_folder("Saved sentiment run", {"results": RESULTS_DIR}, ("directions.safetensors",), key="run",
                     describe=lambda lab, n: n)
vectors, component = {}, "resid_post"
if folder is not None:
    with user_errors():
        fitted = load_directions(str(folder / "directions.safetensors"))
        vectors = {f"L{layer}.{method}": d.vector for layer, named in fitted.directions.items()
                   for method, d in named.items()}
        if (folder / "directions" / "config.json").is_file():
            component = read_json(folder / "directions").get("component", component)

if hm is not None and vectors:
    choice = st.selectbox("Direction (layer · method)", sorted(vectors, key=direction_order), key="direction")
    site = Site(direction_order(choice)[0], component)
    vector = vectors[choice].float()  # (d,)
    text = st.text_area("Text", "I thought this movie was great, I loved it. Conclusion: This movie is", key="text")
    if st.button("Project", key="project"):
        with user_errors():
            if not text.strip():
                raise ValueError("the text is empty: enter a sentence to colour")
            if hm.site_size(site) != vector.shape[0]:
                raise ValueError(f"the direction has {vector.shape[0]} dimensions but {site} of this model has "
                                 f"{hm.site_size(site)}: load the model the run was made with")
            tokens, values = token_projections(hm, text, site, vector)
            st.session_state["projection"] = pd.DataFrame({"token": tokens, "projection": values})
    projection = st.session_state.get("projection")
    if projection is not None:
        st.markdown(coloured_text(list(projection.token), list(projection.projection)), unsafe_allow_html=True)
        st.caption(f"Projection on {choice} at {site}: blue = positive sentiment side, red = negative; "
                   "hover a token for its value.")
        with st.expander("Values"):
            st.dataframe(projection, hide_index=True)

    st.subheader("Ablate the direction on this text")
    st.caption("The direction's component is projected out of every token's state at its layer.")
    k = st.slider("Top k", 1, 20, 8, key="k")
    if st.button("Ablate", key="ablate"):
        with user_errors():
            if not text.strip():
                raise ValueError("the text is empty: enter a sentence")
            hm.site_size(site)  # layer range
            plan = [PlanItem(site, "all", DirectionalAblation(vector))]
            before, after = top_k_next_tokens(hm, text, k), top_k_next_tokens(hm, text, k, plan)
            cols = ["rank", "token", "probability"]
            show_side_by_side("Next token", f"With {choice} ablated",
                              before[cols], after[cols])

if folder is not None:
    st.subheader("Saved effects")
    with user_errors():
        parts = [p for p in ("patching", "sst", "directions") if (folder / p / "results.parquet").is_file()]
        if not parts:
            st.info("This run saved no effect tables.")
        for part, tab in zip(parts, st.tabs(parts)):
            table = read_table(folder / part)
            if part == "patching":
                tab.plotly_chart(recovery_figure(table).update_xaxes(dtick=1), key="recovery")
                tab.caption("Patching the direction's component from the opposite-sentiment prompt: "
                            "1 = the whole flip, 0 = no effect.")
            elif part == "sst":
                tab.plotly_chart(px.bar(table, x="positions", y="accuracy", color="direction", barmode="group",
                                        template="plotly_white", title="SST accuracy with the direction ablated"),
                                 key="sst")
            else:
                test = table[table.split == "test"].pivot(index="layer", columns="method", values="accuracy")
                tab.caption("Held-out accuracy of each direction as a classifier, per layer")
                table = test.reset_index()
            tab.dataframe(table, hide_index=True)
