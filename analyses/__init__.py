"""Analyses built on the intervention API: attribution and path patching, logit lens, direct logit attribution, concept detection."""
