"""Reproductions of the seed papers' findings at small scale (`workbench reproduce`)."""
