"""Analysis of learned subspaces: featurizers (PCA, probe, mean difference) and RAVEL-style scores.

>>> from probes.ravel import RavelConfig, run_ravel, ravel_figure
"""
