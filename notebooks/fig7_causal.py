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
# # Figure 7: the causal test: which gradient path lets each cell learn
#
# The same forward pass, data, initialisation, optimiser and budget; only the backward pass
# differs. Each gated cell is trained uncut, with its *linear* path's gradient stopped (the
# LSTM's c_t = f_t * sg(c_{t-1}) + i_t * g_t, the GRU's z_t * sg(h_{t-1})) and with its *hidden*
# path's gradient stopped (sg(h_{t-1}) in the gates: credit flows along the linear path only,
# the 1997 LSTM's truncated gradient); the tanh RNN is the floor. Adding problem, Adam at 1e-2,
# 10 seeds per arm. (a) Success against T with Wilson 95 % intervals and k/n; (b) the gradient
# each arm trains with, by lag, at initialisation and after 1000 updates. Experiment
# study_causal (its header states what each outcome means, written before the runs).

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show
from study.read.learning import show_summary

# %%
show("fig7a_causal_success", RESULTS, FIGURES)

# %%
show("fig7b_causal_gradient", RESULTS, FIGURES)

# %% [markdown]
# (c) Hochreiter & Schmidhuber's own experiment (the adding problem at T = 100, their protocol):
# full backpropagation through time against their truncated gradient (the hidden cut), with and
# without their input-gate biases. Experiment study_causal_1997.

# %%
show("fig7c_causal_1997", RESULTS, FIGURES)

# %% [markdown]
# The numbers behind the figures, with Fisher's exact test against each cell's uncut arm and
# the verdicts (also `study-learning results/reference/study_causal` and `.../study_causal_1997`).

# %%
show_summary(RESULTS, "study_causal")

# %%
show_summary(RESULTS, "study_causal_1997")
