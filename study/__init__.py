"""study: why a vanilla RNN forgets and an LSTM or GRU remembers, measured on long-lag tasks."""
