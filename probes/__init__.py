"""Analysis of learned subspaces: directions, sentiment, RAVEL-style scores, neuron-explanation checks."""
