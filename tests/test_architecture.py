"""The layers stay apart: reading results never loads torch, the model and training code never
load Hydra, the sweep callback never loads the training stack. Checked in a fresh interpreter."""

import subprocess
import sys

from tests.conftest import ROOT

PACKAGE = ROOT / "study"


def modules(*folders: str) -> list[str]:
    """The modules of the given folders of study/ (a folder's __init__ is the package itself)."""
    found = []
    for folder in folders:
        for path in sorted((PACKAGE / folder).glob("*.py")):
            name = f"study.{folder}" if path.stem == "__init__" else f"study.{folder}.{path.stem}"
            found.append(name)
    return found


# the reading side (every module of study/read/) and the harness pieces the readers use
READERS = modules("read") + ["study.runs.rundir", "study.runs.sweep"]
# models, probes, tasks and the loop; checkpoints are written from inside the loop
TRAINING = modules("model", "probes", "tasks") + ["study.train", "study.runs.checkpoint"]


def loaded(*names: str) -> set[str]:
    """sys.modules of a fresh interpreter after importing `names`."""
    code = f"import sys, {', '.join(names)}; print(' '.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def culprits(names: list[str], banned) -> list[str]:
    """The modules of `names` that load a banned module, each in a fresh interpreter of its own:
    all of them are imported together first (one interpreter: an import only adds modules, so
    none loads one when all of them together do not), one by one only to name the culprits."""
    if not any(banned(m) for m in loaded(*names)):
        return []
    return [name for name in names if any(banned(m) for m in loaded(name))]


def test_reading_results_does_not_load_torch_or_the_training_stack():
    heavy = {"torch", "study.train", "study.runs.job"}
    assert culprits(READERS, lambda m: m in heavy) == []


def test_models_and_training_do_not_load_hydra():
    assert culprits(TRAINING, lambda m: m == "hydra" or m.startswith("hydra.")) == []


def test_hydras_private_apis_are_used_in_one_module_only():
    """hydra._internal and Override's private methods appear in study/runs/hydra_private.py only."""
    users = [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "study").rglob("*.py"))
        if p.name != "hydra_private.py"
        and ("hydra._internal" in p.read_text() or "._get_value_element" in p.read_text())
    ]
    assert users == []
