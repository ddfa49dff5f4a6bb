"""Hyper-parameter sweeps: the Optuna study, one process per trial, and what a sweep writes."""
