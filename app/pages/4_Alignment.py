"""Alignment: RAVEL-style Cause / Isolate / Disentangle and IIA per layer from saved runs, and a
button that runs a small RAVEL comparison on the loaded model."""

from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from ui import (RESULTS_DIR, chart, command_of, model_sidebar, pick_folder, read_json, read_table, saved_folders, table_view,
                user_errors)

from probes.ravel import METHODS, REFERENCE, RavelConfig, compare_methods, ravel_figure
from workbench.das import TrainConfig
from workbench.data import city_dataset, load_ravel, prepare_ravel
from workbench.data.registry import complete_groups
from workbench.runs import save_run
from workbench.sites import Site

GEONAMES = "geonames (embedded city set)"
RAVEL_CACHE = "RAVEL (data cache): "  # + entity type, from `workbench data fetch ravel`
SCORES = ["cause", "isolate", "disentangle"]


@st.cache_data(show_spinner=False, max_entries=16)
def iia_per_layer(root: str, stamp: tuple) -> pd.DataFrame:
    """Test IIA per layer from every saved `workbench das` and `workbench ravel` run under ``root``."""
    rows = []
    for name in saved_folders(Path(root), "config.json"):
        folder, command = Path(root) / name, command_of(Path(root) / name)
        if command == "das":
            config = read_json(folder)
            for kind, iia in (config.get("test_iia") or {}).items():
                rows.append({"layer": Site.parse(config["site"]).layer, "IIA": iia, "run": name,
                             "series": f"DAS {config.get('attribute')} · {kind}"})
        elif command == "ravel":
            site = Site.parse(read_json(folder)["ravel_config"]["site"])
            table = read_table(folder)
            for row in table[table.attribute == "mean"].itertuples():
                rows.append({"layer": site.layer, "IIA": row.disentangle, "run": name,
                             "series": f"RAVEL {row.method} · disentangle"})
    return pd.DataFrame(rows, columns=["layer", "IIA", "run", "series"])


@st.cache_resource(show_spinner="Loading the entity data…", max_entries=4)
def entity_data(source: str):
    if source == GEONAMES:
        return city_dataset()
    if source.startswith(RAVEL_CACHE):
        return load_ravel("ravel", source.removeprefix(RAVEL_CACHE))
    folder = Path(source)
    entity_type = next(folder.glob("ravel_*_entity_attributes.json")).name.removeprefix("ravel_").removesuffix(
        "_entity_attributes.json")
    return load_ravel(folder, entity_type)


def run_small(hm, model_name: str, data, config: RavelConfig) -> tuple[pd.DataFrame, Path]:
    """prepare_ravel, then compare_methods one method at a time (a progress step each); saved."""
    steps = len(config.methods) + 2
    bar = st.progress(0.0, text="Filtering the queries the model answers…")
    try:
        return _run_steps(hm, model_name, data, config, bar, steps)
    except BaseException:
        bar.empty()  # the error message replaces the bar
        raise


def _run_steps(hm, model_name: str, data, config: RavelConfig, bar, steps: int) -> tuple[pd.DataFrame, Path]:
    setup = prepare_ravel(hm, data, config.attributes, {"train": config.n_train, "val": config.n_val,
                          "test": config.n_test}, config.entities_per_split, config.max_templates, config.seed,
                          config.batch_size, False, config.max_entity_tokens)
    parts = []
    for i, method in enumerate(list(config.methods) + [REFERENCE], start=1):
        bar.progress(i / steps, text=f"{method}: fitting and scoring ({i}/{steps - 1})…")
        one = replace(config, methods=(method,) if method != REFERENCE else (), reference=method == REFERENCE)
        parts.append(compare_methods(hm, setup, one))
    table = pd.concat(parts, ignore_index=True)
    out = RESULTS_DIR / f"ravel-app-{datetime.now():%Y%m%d-%H%M%S}"
    save_run(out, table, {"command": "ravel", "source": "app", "model": model_name, "data_origin": data.origin,
                          "ravel_config": asdict(config)}, figure=ravel_figure(table))
    setup.summary.to_csv(out / "kept.csv", index=False)
    bar.progress(1.0, text=f"Done: saved {out.name}")
    return table, out


def show_ravel(table: pd.DataFrame, key: str) -> None:
    chart(ravel_figure(table), key=f"{key}_figure", table=table, name="ravel-scores")
    shown = table[["method", "attribute", *SCORES, *(c for c in ("k_used", "n_cause", "n_isolate") if c in table)]]
    bars = {s: st.column_config.ProgressColumn(s.capitalize(), min_value=0.0, max_value=1.0, format="%.3f")
            for s in SCORES}
    table_view(shown, key=f"{key}_table", name="ravel-scores", column_config=bars)


st.title("Alignment")
name, hm = model_sidebar()
st.caption(f"Saved runs of `workbench das` and `workbench ravel` under {RESULTS_DIR}.")

st.subheader("Interchange-intervention accuracy per layer")
with user_errors():
    runs = saved_folders(RESULTS_DIR, "config.json")
    stamp = tuple((r, (RESULTS_DIR / r / "config.json").stat().st_mtime) for r in runs)
    per_layer = iia_per_layer(str(RESULTS_DIR), stamp)
    if per_layer.empty:
        st.info("No saved DAS or RAVEL runs yet: run `workbench das --out runs/...` or the button below.")
    else:
        figure = px.line(per_layer.sort_values("layer"), x="layer", y="IIA", color="series", markers=True,
                         hover_data=["run"], range_y=[-0.02, 1.02], template="plotly_white",
                         title="Test IIA per layer (DAS: Cause / Isolate; RAVEL: Disentangle per method)")
        chart(figure.update_xaxes(dtick=1), key="iia_layers", table=per_layer, name="iia-per-layer")

st.subheader("RAVEL: Cause / Isolate / Disentangle")
folder = pick_folder("Saved RAVEL run", {"results": RESULTS_DIR}, ("config.json",), key="ravel_run",
                     keep=lambda f: command_of(f) == "ravel", describe=lambda lab, n: n)
if folder is not None:
    with user_errors():
        config = read_json(folder)
        st.caption(f"site {config['ravel_config']['site']}, k={config['ravel_config']['k']}, "
                   f"model {config.get('model', '?')}, data {config.get('data_origin', '?')}")
        show_ravel(read_table(folder), "saved")
        if (folder / "kept.csv").is_file():
            with st.expander("Share of queries the model answers (kept for counterfactuals)"):
                st.dataframe(read_table(folder, "kept.csv"), hide_index=True)

st.subheader("Run a small configuration")
sources = [GEONAMES] + [RAVEL_CACHE + t for t in complete_groups("ravel")] + \
    saved_folders(RESULTS_DIR, "ravel_*_entity_attributes.json")
source = st.selectbox("Entity data (the data cache, or RAVEL-format folders under the results folder)", sources,
                      key="data")
data = None
with user_errors():
    data = entity_data(source if source == GEONAMES or source.startswith(RAVEL_CACHE) else str(RESULTS_DIR / source))
if hm is not None and data is not None:
    names = data.attribute_names
    if st.session_state.get("attributes_of") != source:  # new data: its first two attributes
        st.session_state["attributes_of"], st.session_state["attributes"] = source, names[:2]
    c1, c2 = st.columns(2)
    attributes = c1.multiselect("Attributes (the first is Cause's target)", names, key="attributes")
    methods = c2.multiselect("Methods", list(METHODS), default=["pca", "mean_diff", "das"], key="methods")
    c1, c2, c3 = st.columns(3)
    layer = c1.number_input("Layer", min_value=0, value=min(8, hm.n_layers - 1), key="layer",
                            help=f"0-{hm.n_layers - 1}")
    k = c2.number_input("Subspace size k", 1, 256, 4, key="k")
    epochs = c3.number_input("DAS epochs", 1, 10, 1, key="epochs")
    if st.button("Run", key="run_ravel"):
        with user_errors():
            if not attributes or not methods:
                raise ValueError("choose at least one attribute and one method")
            site = Site(int(layer), "resid_post")
            hm.site_size(site)  # a clear message for a layer out of range
            config = RavelConfig(attributes=tuple(attributes), site=str(site), k=int(k), methods=tuple(methods),
                                 entities_per_split={"train": 40, "val": 20, "test": 30}, max_templates=2,
                                 n_train=16, n_val=8, n_test=16, batch_size=16, progress=False,
                                 train=TrainConfig(epochs=int(epochs), batch_size=8, patience=1, progress=False))
            table, out = run_small(hm, name, data, config)
            st.success(f"Saved to {out.relative_to(RESULTS_DIR)}")
            show_ravel(table, "new")
