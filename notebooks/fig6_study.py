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
# # Figure 6: the study: which networks learn which lags, and why
#
# The adding problem (Arjovsky et al. 2016 form) at lags T = 25 to 200 (to 1000 for the IRNN,
# the chrono LSTM and the GRU), nine models with the same input path, readout, optimiser, data
# and budget, 10 seeds each; every run stops when it meets the task's criterion. (a) Success
# against T with Wilson 95 % intervals; (b) the training sequences each model needed; (c) per
# run, the fraction of the error signal that reaches the earliest marker at initialisation
# against the sequences it took to solve the task, with Spearman's rank correlation; (d) every
# learning curve, the last half of the budget shaded:
# a failed run must be flat at the baseline there. Experiment study_adding.

# %% tags=["parameters"]
import os

RESULTS = os.environ.get("STUDY_RESULTS", "../results/reference")  # a folder of experiment folders
FIGURES = os.environ.get("STUDY_FIGURES")  # a folder to also save the PNGs in; None: only show

# %%
from study.read.figures import show
from study.read.learning import show_summary

# %%
show("fig6a_success", RESULTS, FIGURES)

# %%
show("fig6b_solve_speed", RESULTS, FIGURES)

# %%
show("fig6c_reach", RESULTS, FIGURES)

# %%
show("fig6d_curves", RESULTS, FIGURES)

# %% [markdown]
# The learning-rate window at T = 200 (experiment study_lr), and copy memory with a longer budget
# and the chrono LSTM (experiment study_copy): no run there met the criterion (recall accuracy
# 0.99), so its success figure, all zeros, is not drawn; the curves show which cells leave the
# plateau at all.

# %%
show("fig6e_lr_window", RESULTS, FIGURES)

# %% [markdown]
# The same rates at T = 50, 100 and 500 for the five main cells (`study_lr_lag`): how the
# window moves with the lag; `study-learning results/reference --windows` prints its edges
# and their power laws against T.

# %%
show("fig6g_lr_window_by_lag", RESULTS, FIGURES)

# %%
show("fig6f_curves_copy", RESULTS, FIGURES)

# %% [markdown]
# The numbers behind the figures (also `study-learning results/reference/study_adding`).

# %%
show_summary(RESULTS, "study_adding")

# %%
show_summary(RESULTS, "study_lr")

# %%
show_summary(RESULTS, "study_copy")

# %% [markdown]
# Hochreiter & Schmidhuber's own protocol (Experiments 4 and 6a): sequences until their stopping
# rule, beside the paper's means (also `study-learning results/reference/hochreiter1997_adding`).

# %%
show_summary(RESULTS, "hochreiter1997_adding")

# %%
show_summary(RESULTS, "hochreiter1997_order")
