"""`ensemble=auto`: a sweep's seeds trained as stacked ensembles where stacking was measured to
pay, one by one elsewhere, with no ensemble line in the experiment.

The sweep's seeds (every job's `seed`, as `study-run` reads them before Hydra starts; passed to
the jobs in SWEEP_SEEDS_ENV) are taken in sorted blocks of AUTO_SIZE; the first seed of a block
trains the whole block as one ensemble, the jobs of the block's other seeds find their runs
trained there. A run is the same run trained in an ensemble or alone (study/runs/rundir.py), so
grouping changes no run id and a resumed or widened sweep finds every finished run.
"""

from __future__ import annotations

import os

AUTO = "auto"
AUTO_SIZE = 10  # members of an auto ensemble (the size study-bench's study_ensemble table measured)
SWEEP_SEEDS_ENV = "STUDY_SWEEP_SEEDS"
STACKING_PAYS = {
    "cpu": ("rnn", "gru"),  # a gain of at least MIN_GAIN at every size of study_ensemble
    "cuda": ("rnn", "lstm", "gru", "mingru", "minlstm", "lru"),  # the stacked CUDA Functions
}
"""The cells whose seeds an auto ensemble stacks, per device. On the CPU read off
results/bench/study_ensemble.csv (tests/test_grouping.py checks it); on CUDA every built-in cell
has a stacked path (docs/speed.md: stacked members beat single runs one after another there)."""
MIN_GAIN = 1.3  # stacking "pays" at this gain over single runs one after another


def auto_size(cell: str, block, device: str, cut=None) -> int:
    """How many seeds an auto ensemble of this model stacks: AUTO_SIZE where stacking pays on
    this device, else 1 (a cell from outside, a stack of blocks or a gradient-path cut: 1,
    nothing was measured)."""
    if device == "auto":
        import torch  # only here: the sweep's readers import this module without torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    pays = block is None and cut is None and cell in STACKING_PAYS.get(device, ())
    return AUTO_SIZE if pays else 1


def sweep_seeds() -> list[int]:
    """The seeds of the sweep this job belongs to ([] outside a sweep)."""
    text = os.environ.get(SWEEP_SEEDS_ENV, "")
    return sorted({int(s) for s in text.split(",") if s.strip()})


def auto_members(seed: int, size: int, seeds: list[int]) -> list[int]:
    """The seeds the job of `seed` trains: its block of `size` among the sweep's sorted seeds
    if `seed` opens the block, [] if another seed's job trains it; [seed] outside a sweep."""
    if seed not in seeds:
        return [seed]
    i = seeds.index(seed)
    block = seeds[i - i % size : i - i % size + size]
    return block if block[0] == seed else []


def listed_members(ensemble) -> int:
    """A job's member count where a sweep's run directories are listed: E, or 1 for auto (each
    seed of the sweep is some job's own seed, so the union of the jobs' runs is the same)."""
    return 1 if ensemble == AUTO else int(ensemble)
