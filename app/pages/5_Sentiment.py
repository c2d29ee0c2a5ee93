"""Sentiment: placeholder until its back end lands."""

import streamlit as st

from ui import coming_soon, model_sidebar

st.title("Sentiment")
model_sidebar()
coming_soon("Colour each token of a text by its projection on the sentiment direction and show what ablating the direction does.", "the sentiment-probing issue")
