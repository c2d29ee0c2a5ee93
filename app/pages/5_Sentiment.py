"""Sentiment: fit sentiment directions here (ToyMovieReview prompts, `fit_sentiment_directions`)
or load a saved run; each token coloured by its projection on a direction, what ablating the
direction does to the next token, and a saved run's patching and ablation effects."""

import html

import pandas as pd
import plotly.express as px
import streamlit as st

from ui import (RESULTS_DIR, chart, downloads, model_sidebar, pick_folder, read_json, read_table, show_side_by_side, stepwise,
                table_view, user_errors)

from probes.sentiment.causal import DirectionalAblation
from probes.sentiment.figures import recovery_figure, token_projection_figure, token_projections
from probes.sentiment.fit import fit_sentiment_directions, load_directions
from workbench.data import reviews as review_data
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


def fit_section(hm) -> dict:
    """Fit mean-difference and probe directions layer by layer (one progress step per layer)."""
    c1, c2 = st.columns(2)
    default = ", ".join(str(x) for x in sorted({hm.n_layers // 3, hm.n_layers // 2, (2 * hm.n_layers) // 3}))
    layers_text = c1.text_input("Layers", default, key="fit_layers", help=f"0-{hm.n_layers - 1}")
    methods = c2.multiselect("Methods", ["mean_diff", "probe", "pca", "kmeans"], default=["mean_diff", "probe"],
                             key="fit_methods")
    with st.expander("Words (empty: the sentiment lexicons' single-token words)"):
        c1, c2 = st.columns(2)
        words = {(kind, sign): (c1 if sign > 0 else c2).text_input(f"{'Positive' if sign > 0 else 'Negative'} {kind}s",
                                                                   key=f"fit_{kind}_{sign:+d}")
                 for kind in ("adjective", "verb") for sign in (1, -1)}
    layers = []
    with user_errors():
        lists = {key: value.replace(",", " ").split() for key, value in words.items()}
        chosen = {}
        if any(lists.values()):
            for kind in ("adjective", "verb"):
                rows = [(w, sign) for sign in (1, -1) for w in lists[(kind, sign)]]
                if len({sign for _, sign in rows}) < 2:
                    raise ValueError(f"give positive and negative {kind}s (or leave all four boxes empty)")
                chosen[kind] = pd.DataFrame(rows, columns=["word", "sentiment"])
        layers = [int(x) for x in layers_text.replace(",", " ").split()]
        for layer in layers:
            hm.site_size(Site(layer, "resid_post"))  # names the valid range
        if not layers or not methods:
            raise ValueError("choose at least one layer and one method")

    def step(i, state):
        if "reviews" not in state:  # one prompt per adjective, its verb of the same sentiment
            state["reviews"] = review_data.toy_movie_reviews(hm.tokenizer, 0.3 if not chosen else 0.5,
                                                             max_per_sentiment=40, adjectives=chosen.get("adjective"),
                                                             verbs=chosen.get("verb"))
        fitted = fit_sentiment_directions(hm, state["reviews"], [layers[i]], methods=methods)
        state.setdefault("vectors", {}).update({f"L{layer}.{m}": d.vector for layer, named in fitted.directions.items()
                                                for m, d in named.items()})
        state["scores"] = pd.concat([state.get("scores"), fitted.scores], ignore_index=True)
        return f"fitted layer {layers[i]} ({i + 1}/{len(layers)})"

    st.caption("ToyMovieReview prompts (`workbench.data.reviews`): directions are fit on the adjective and "
               "verb states of the train adjectives and scored as classifiers on held-out ones.")
    job = stepwise("fit_job", "Fit directions", max(len(layers), 1), step, disabled=not (layers and methods))
    if job is None or not job["state"].get("vectors"):
        return {}
    scores = job["state"]["scores"]
    test = scores[scores.split == "test"]
    chart(px.line(test, x="layer", y="accuracy", color="method", markers=True, range_y=[0, 1.02],
                  template="plotly_white", title="Held-out accuracy of each direction as a classifier").update_xaxes(dtick=1),
          key="fit_scores", table=scores, name="sentiment-direction-accuracy")
    return job["state"]["vectors"]


st.title("Sentiment")
name, hm = model_sidebar()
origin = st.radio("Directions", ["Fit here", "A saved run"], horizontal=True, key="origin")
folder, vectors, component = None, {}, "resid_post"
if origin == "Fit here" and hm is not None:
    vectors = fit_section(hm)
elif origin == "A saved run":
    st.caption("Directions saved by `workbench sentiment run` (`probes.sentiment.run.run_sentiment`) under the "
               "results folder.")
    folder = pick_folder("Saved sentiment run", {"results": RESULTS_DIR}, ("directions.safetensors",), key="run",
                         describe=lambda lab, n: n)
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
        with st.expander("As a figure, and the values"):
            chart(token_projection_figure(list(projection.token), list(projection.projection), title=f"Projection on {choice}"),
                  key="projection_chart", name="projection")
            table_view(projection, key="projection_table", name="projection")

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
            st.session_state["ablation"] = (choice, before[cols], after[cols])
    if st.session_state.get("ablation") is not None:
        ablated, before, after = st.session_state["ablation"]
        show_side_by_side("Next token", f"With {ablated} ablated", before, after)
        both = before.merge(after, on="rank", suffixes=("", "_ablated"))
        downloads("ablation_table", both, None, "ablation")

if folder is not None:
    st.subheader("Saved effects")
    with user_errors():
        parts = [p for p in ("patching", "sst", "directions") if (folder / p / "results.parquet").is_file()]
        if not parts:
            st.info("This run saved no effect tables.")
        for part, tab in zip(parts, st.tabs(parts)):
            table = read_table(folder / part)
            if part == "patching":
                with tab:
                    chart(recovery_figure(table).update_xaxes(dtick=1), key="recovery", table=table, name="patching")
                tab.caption("Patching the direction's component from the opposite-sentiment prompt: "
                            "1 = the whole flip, 0 = no effect.")
            elif part == "sst":
                with tab:
                    chart(px.bar(table, x="positions", y="accuracy", color="direction", barmode="group",
                                 template="plotly_white", title="SST accuracy with the direction ablated"),
                          key="sst", table=table, name="sst-ablation")
            else:
                test = table[table.split == "test"].pivot(index="layer", columns="method", values="accuracy")
                tab.caption("Held-out accuracy of each direction as a classifier, per layer")
                table = test.reset_index()
            with tab:
                table_view(table, key=f"saved_{part}", name=part)
