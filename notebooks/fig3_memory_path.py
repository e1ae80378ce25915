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
# # Figure 3: the linear memory path
#
# Where the gradient reaches during training (log median ‖∂ℓ/∂h_t‖ over training step and
# position), the LSTM's gradient along the cell path alone versus the total, the forget gates
# and the effective horizon over training. Experiment memory_path (adding problem, T = 100).

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show

# %%
show("fig3a_flow_heatmaps", RESULTS, FIGURES)

# %%
show("fig3b_cell_path", RESULTS, FIGURES)

# %%
show("fig3c_training_dynamics", RESULTS, FIGURES)
