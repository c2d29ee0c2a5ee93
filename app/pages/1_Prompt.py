"""Prompt: next-token top-k with probabilities; greedy and sampled generation."""

import plotly.express as px
import streamlit as st

from ui import chart, model_sidebar, table_view, user_errors

from workbench.predictions import top_k_next_tokens

st.title("Prompt")
name, hm = model_sidebar()
prompt = st.text_area("Prompt", value="The capital of France is", key="prompt")
k = st.slider("Top k", 1, 50, 10, key="k")

if hm is not None and st.button("Predict next token", key="predict"):
    with user_errors():
        table = top_k_next_tokens(hm, prompt, k=k)
        st.session_state["top_k"] = table
top = st.session_state.get("top_k")
if hm is not None and top is not None:
    chart(px.bar(top, x="probability", y="token", orientation="h", template="plotly_white",
                 title="Next token").update_yaxes(autorange="reversed"), key="top_k_chart", table=top, name="next-token")
    table_view(top, key="top_k_table", name="next-token")

st.subheader("Generate")
cols = st.columns(3)
max_new = cols[0].number_input("New tokens", 1, 256, 20, key="max_new")
sampled = cols[1].checkbox("Sample (instead of greedy)", key="sampled")
temperature = cols[2].number_input("Temperature", 0.05, 5.0, 0.8, disabled=not sampled, key="temperature")
if hm is not None and st.button("Generate", key="generate"):
    with user_errors():
        options = {"do_sample": True, "temperature": float(temperature)} if sampled else {}
        out = hm.generate(prompt, max_new_tokens=int(max_new), **options)
        st.markdown(f"**{prompt}**{out['texts'][0]}")
        st.session_state["generated"] = out["texts"][0]
