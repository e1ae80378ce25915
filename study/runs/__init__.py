"""The run harness: a job from a composed config (job), its run directory and checksums
(rundir), checkpoints, the sweep callback, loggers, Hydra's private APIs behind one module, and
the process settings for a CPU (allocator)."""
