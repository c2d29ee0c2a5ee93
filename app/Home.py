"""Intervention workbench: start page. Run with `make app` (binds to 127.0.0.1:8501)."""

import streamlit as st

from ui import model_sidebar

st.set_page_config(page_title="Intervention workbench", layout="wide")
st.title("Intervention workbench")
name, hm = model_sidebar()
st.markdown(
    """
See what an intervention does to a language model's outputs.

- **Prompt**: next-token probabilities and generation.
- **Patching**: patch one prompt's hidden states into another's, layer by position, and watch
  the answer move.
- **Interventions**, **Alignment**, **Sentiment**, **Memorization**: saved interventions, DAS
  and RAVEL scores, the sentiment direction, memorization capacity.

Pick a page on the left. The model loads once per process; results are cached by their inputs.
"""
)
if hm is not None:
    st.success(f"Model ready: {name}")
