# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figure 4: matched comparison
#
# The same cells at equal hidden size (H = 64) and at equal parameter count (that of the LSTM at
# H = 64): final evaluation loss relative to the baseline, and the gradient's decay per step at
# initialisation. Experiment matched (adding problem, T = 100).

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show

# %%
show("fig4_matched", RESULTS, FIGURES)
