"""The reading side, which never loads torch: run tables and their vocabulary (results, labels),
the analyses (analysis, causal, learning, windows, collect), plots, figures and the report."""
