"""Reporting a run: the classification metric (an `evaluate` module loaded by path) and the plots."""
