"""Sentiment directions (Tigges et al.): ToyMovieReview fits, directional patching and ablation, SST."""
