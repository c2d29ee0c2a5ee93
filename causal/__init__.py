"""Causal abstraction: high-level causal models, counterfactual data derived from them, and alignment search."""
