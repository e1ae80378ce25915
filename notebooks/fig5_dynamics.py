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
# # Figure 5: the dynamics behind the gradient
#
# The Lyapunov spectrum of each cell's state dynamics over training (how fast each direction
# of the state, and of the gradient carried back through it, grows or shrinks per step); the
# singular values of ds_{T-1}/ds_t against lag (how many directions survive k steps); and the
# gradient's signal-to-noise ratio per lag, at initialisation and once the loss has left the
# baseline. Experiment dynamics (adding problem, T = 100).

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show

# %%
show("fig5a_lyapunov", RESULTS, FIGURES)

# %%
show("fig5b_jacobian_spectra", RESULTS, FIGURES)

# %%
show("fig5c_gradient_snr", RESULTS, FIGURES)
