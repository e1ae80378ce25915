"""The layers stay apart: reading results never loads torch, the model and training code never
load Hydra, the sweep callback never loads the training stack. Checked in a fresh interpreter."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

READERS = ["study.rundir", "study.results", "study.collect", "study.analysis", "study.figures"]
READERS += ["study.plots", "study.sweep", "study.causal", "study.plots_causal", "study.windows"]
READERS += ["study.labels", "study.learning", "study.report"]
TRAINING = ["study.cells", "study.model", "study.fast", "study.ensemble", "study.train"]
TRAINING += ["study.probes", "study.jacobians", "study.snr", "study.tasks.adding", "study.cut"]
TRAINING += ["study.checkpoint"]


def loaded(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


@pytest.mark.parametrize("module", READERS)
def test_reading_results_does_not_load_torch_or_the_training_stack(module):
    mods = loaded(module)
    assert "torch" not in mods and "study.train" not in mods and "study.job" not in mods


@pytest.mark.parametrize("module", TRAINING)
def test_models_and_training_do_not_load_hydra(module):
    assert not {m for m in loaded(module) if m == "hydra" or m.startswith("hydra.")}


def test_hydras_private_apis_are_used_in_one_module_only():
    """hydra._internal and Override's private methods appear in study/hydra_private.py alone."""
    users = [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "study").rglob("*.py"))
        if p.name != "hydra_private.py"
        and ("hydra._internal" in p.read_text() or "._get_value_element" in p.read_text())
    ]
    assert users == []
