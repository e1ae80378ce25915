"""Long-lag synthetic tasks behind one interface (study.tasks.base.Task)."""
