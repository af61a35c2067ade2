"""Helpers the tests share: composing configs, running the pipeline as a user would, reading plots
and logs."""
