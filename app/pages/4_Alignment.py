"""Alignment: placeholder until its back end lands."""

import streamlit as st

from ui import coming_soon, model_sidebar

st.title("Alignment")
model_sidebar()
coming_soon("Show RAVEL-style Cause / Isolate / Disentangle scores and interchange-intervention accuracy per layer from saved results, and run a small DAS configuration from a button.", "the DAS issue")
