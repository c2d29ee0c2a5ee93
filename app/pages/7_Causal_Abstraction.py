"""Causal abstraction: a saved `workbench align` run — IIA per layer and position for each
high-level variable and featurizer, MIB's summary (mean over layers, best layer), and the task's
causal graph. Views only: the heatmap and scores come from `causal.search`."""

from pathlib import Path

import streamlit as st

from ui import RESULTS_DIR, chart, command_of, pick_folder, read_json, read_table, table_view, user_errors

from causal.search import alignment_heatmap, mib_scores

st.title("Causal abstraction")
st.caption("Does the model implement the task's causal model? Interchange-intervention accuracy (IIA) of each "
           "alignment: a high-level variable mapped to a site, a position and a featurizer (DAS, DBM, full vector, "
           "localist). Runs come from `workbench align TASK ... --out runs/NAME`.")

folder = pick_folder("Saved alignment run", {"results": RESULTS_DIR}, ("config.json",), key="align_run",
                     keep=lambda f: command_of(Path(f)) == "align")
if folder is not None:
    with user_errors():
        table = read_table(folder)
        config = read_json(folder)
        st.markdown(f"**Task** `{config.get('task')}` · model `{config.get('model')}` · "
                    f"{len(table)} alignments")
        variables = sorted(table["variable"].unique())
        featurizers = sorted(table["featurizer"].unique())
        chosen_variables = st.multiselect("Variables", variables, default=variables, key="align_variables")
        chosen_featurizers = st.multiselect("Featurizers", featurizers, default=featurizers, key="align_featurizers")
        shown = table[table["variable"].isin(chosen_variables) & table["featurizer"].isin(chosen_featurizers)]
        if shown.empty:
            st.info("Choose at least one variable and one featurizer.")
        else:
            chart(alignment_heatmap(shown, title=f"IIA: {config.get('task')}"), key="align_heatmap",
                  table=shown, name=folder.name)
            st.subheader("Scores (MIB): IIA averaged over layers, and at the best layer")
            table_view(mib_scores(shown), key="align_scores", name=f"{folder.name}-scores")
        if config.get("task") != "hierarchical_equality" and config.get("examples"):
            st.caption(f"Examples kept (the model answers base and source right): {config['examples']}")
        with st.expander("The causal model"):
            from causal import tasks
            task = config.get("task")
            model = tasks.hierarchical_equality(2) if task == "hierarchical_equality" else \
                tasks.LM_TASKS[task]().model if task in tasks.LM_TASKS else None
            if model is None:
                st.write("RAVEL's model depends on the loaded data: entity -> attribute lookups -> answer.")
            else:
                st.code(model.graph_text(), language=None)
                st.plotly_chart(model.figure(), key="align_graph")
