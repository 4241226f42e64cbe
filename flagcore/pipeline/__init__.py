"""Pipelines: evaluate (with its inference cache), validate, and the demo builder."""
