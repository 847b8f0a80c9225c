"""Inference on a study as users run it: intended-use check, prediction and its outputs."""
