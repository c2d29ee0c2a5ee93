"""Reproduce: the report of `workbench reproduce` (each paper's finding beside ours), read from a
saved report folder under the results folder. Views only: the studies run from the command line
(`workbench reproduce [--quick] --out runs/reproduce`), since the full set takes an hour or more."""

import streamlit as st
import streamlit.components.v1 as components
from ui import RESULTS_DIR, pick_folder, read_table, table_view, user_errors

st.title("Reproducing the papers")
st.caption("Run `workbench reproduce --quick --out runs/reproduce-quick` (minutes) or without `--quick` "
           "(the full studies), then pick the folder here. Finished studies are skipped when run again.")
folder = pick_folder("Report", {"results": RESULTS_DIR}, ("report.md",), key="reproduce_folder")
if folder is not None:
    with user_errors():
        table = read_table(folder, "report.csv")
        cols = [c for c in ("finding", "paper", "ours", "agree", "why", "seconds") if c in table.columns]
        agree = int((table["agree"] == "agree").sum()) if "agree" in table else 0
        st.metric("Findings that agree with the paper", f"{agree} of {len(table)}")
        table_view(table[cols], key="reproduce_table", name="reproduction")
        html_path = folder / "report.html"
        if html_path.is_file():
            with st.expander("Figures (the HTML report)", expanded=True):
                components.html(html_path.read_text(), height=900, scrolling=True)
