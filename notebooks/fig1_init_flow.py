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
# # Figure 1: gradient flow at initialisation
#
# Median per-example ‖∂ℓ/∂h_t‖ against lag on the adding problem (T = 100) before any training.
# A tanh RNN's gradient shrinks geometrically; so does an LSTM's at PyTorch's default
# initialisation, where the forget gate sits near sigmoid(0) = 0.5. A forget bias of 3, or no
# forget gate at all (f = 1, the 1997 constant error carousel), keeps it.
# Regenerate the results with `make reference` (experiments init_ratio, init_rnn_scale,
# init_lstm_forget_bias).

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show

# %%
show("fig1a_init_flow", RESULTS, FIGURES)

# %% [markdown]
# The decay against the scale of the RNN's recurrent weights, and against the LSTM's forget bias.

# %%
show("fig1b_init_rnn_scale", RESULTS, FIGURES)

# %%
show("fig1c_init_lstm_forget_bias", RESULTS, FIGURES)
