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
# # Figure 2: learning across lags
#
# The fraction of seeds that solve the task (each task's own criterion, 95 % Wilson intervals)
# against the lag T, and the learning curves against the analytic memoryless baseline, for the
# adding problem (experiment lags_adding). Copy memory is in Figure 6 (experiment study_copy).

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show

# %%
show("fig2a_success_adding", RESULTS, FIGURES)

# %%
show("fig2b_curves_adding", RESULTS, FIGURES)
