"""study: why a vanilla RNN forgets and an LSTM or GRU remembers, measured on long-lag tasks.

The folders are the layers: tasks/ (the synthetic problems), model/ (cells, fast paths,
ensembles, cuts), probes/ (gradient flow, Jacobians, SNR), train.py (the one training loop),
runs/ (job, run directory, checkpoints, sweep callback, loggers), read/ (tables, analyses,
figures, report; no torch), run.py (the command line). checks.py (config validation) and
contract.py (the contract of an outside task or cell) serve them all."""
