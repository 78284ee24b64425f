"""Cold-start evaluation: metrics (and, with the evaluation issue, the protocol and baselines)."""
