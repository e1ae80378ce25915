"""One Hydra job, from composed config to run directory: validate, build, skip, train, write.

This is the only module besides the entry point that knows about Hydra: it instantiates the
`_target_`s of the config groups and derives the run's identity from its command-line overrides.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study import rundir, runtime
from study.model import SequenceModel
from study.probes import ProbeSettings
from study.tasks.base import Task
from study.train import TrainSettings, train

# Overrides that do not change what a run computes, so they are not part of its identity.
NOT_IDENTITY = {"seed", "rerun", "experiment", "out_dir", "threads", "progress", "device"}


class ConfigError(ValueError):
    """A bad config value: reported as one line, before anything is written."""


@dataclass
class Job:
    task: Task
    model: SequenceModel
    settings: TrainSettings
    probes: ProbeSettings
    make_optimizer: object  # callable(params) -> torch.optim.Optimizer
    device: str


def run_id(overrides: list[str], seed: int) -> str:
    """Directory name from the overrides that define the run, sorted by key, seed last.

    e.g. ["task.length=100", "model=lstm", "seed=3"] -> "model=lstm,task.length=100,seed=3"
    """
    parts = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in NOT_IDENTITY or key.startswith("hydra.") or key.startswith("hydra/"):
            continue
        parts[key] = value.replace("/", "_")
    return ",".join([f"{k}={parts[k]}" for k in sorted(parts)] + [f"seed={seed}"])


def build(cfg: DictConfig) -> Job:
    """Instantiate task, model (initialised from cfg.seed), settings and optimiser, or raise
    ConfigError naming the offending key."""
    try:
        if not isinstance(cfg.seed, int) or cfg.seed < 0:
            raise ConfigError(f"seed={cfg.seed!r} is invalid: must be an integer >= 0")
        task = instantiate(cfg.task)
        torch.manual_seed(cfg.seed)  # the model's initialisation is a function of the seed alone
        model = instantiate(cfg.model, input_size=task.input_size, output_size=task.output_size)
        train_cfg = OmegaConf.to_container(cfg.train, resolve=True)
        optimizer = train_cfg.pop("optimizer")
        settings = TrainSettings(**train_cfg)
        make_optimizer = instantiate(optimizer)
        probes = instantiate(cfg.probe)
        device = resolve_device(cfg.device)
    except InstantiationException as e:
        raise ConfigError(one_line(e.__cause__ or e)) from e
    except (TypeError, ValueError, OmegaConfBaseException, HydraException) as e:
        raise ConfigError(one_line(e)) from e
    return Job(task, model, settings, probes, make_optimizer, device)


def run_job(cfg: DictConfig, experiment: str, overrides: list[str]) -> str:
    """Run one configuration into <out_dir>/<experiment>/<run id>/ and return its status."""
    job = build(cfg)  # raises ConfigError before anything is written
    ident = run_id(overrides, cfg.seed)
    out = Path(cfg.out_dir) / experiment / ident
    if rundir.is_finished(out) and not cfg.rerun:
        print(f"skip   {experiment}/{ident} ({rundir.status(out)})", file=sys.stderr)
        return "skipped"

    runtime.configure(cfg.threads)
    info = {
        "run_id": ident,
        "experiment": experiment,
        "overrides": overrides,
        "seed": cfg.seed,
        "steps": job.settings.steps,
        "cell": job.model.cell.kind,
        "hidden_size": job.model.cell.hidden_size,
        "n_params": job.model.n_params(),
        "task": type(job.task).__name__,
        "device": job.device,
        "metric_name": job.task.metric_name,
        "baseline": job.task.baseline,
        **rundir.provenance(),
    }
    checkpoint = rundir.CheckpointFile(out)
    if cfg.rerun:
        checkpoint.remove()  # a forced rerun starts from scratch
    elif checkpoint.path.exists():
        print(f"resume {experiment}/{ident} from its checkpoint", file=sys.stderr)
    rundir.write_text(out / rundir.CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    rundir.write_json(out / rundir.RUN_JSON, {**info, "status": "running"})

    start = time.perf_counter()
    try:
        records = train(
            job.model,
            job.task,
            job.make_optimizer,
            job.settings,
            seed=cfg.seed,
            probes=job.probes,
            progress=cfg.progress,
            checkpoint=checkpoint,
            device=job.device,
        )
    except Exception:
        info |= {"status": "failed", "traceback": traceback.format_exc()}
        info["wall_time_s"] = time.perf_counter() - start
        rundir.write_json(out / rundir.RUN_JSON, info)
        print(f"FAILED {experiment}/{ident}: see {out / rundir.RUN_JSON}", file=sys.stderr)
        return "failed"

    rundir.write_parquet(out / rundir.METRICS, records.metrics_frame())
    rundir.write_parquet(out / rundir.FLOW, records.flow_frame())
    rundir.write_parquet(out / rundir.EVIDENCE, records.evidence_frame())
    rundir.write_parquet(out / rundir.WEIGHTS, records.weights_frame())
    info |= {"status": records.status, "wall_time_s": time.perf_counter() - start, **records.final}
    rundir.write_json(out / rundir.RUN_JSON, info)  # last: from now on the run reads as finished
    checkpoint.remove()
    print(f"{records.status:<9} {out}", file=sys.stderr)
    return records.status


def resolve_device(device: str) -> str:
    """cpu | cuda | auto -> the device to train on; cuda without a GPU is a config error."""
    if device not in ("cpu", "cuda", "auto"):
        raise ConfigError(f"device={device!r} is unknown: allowed cpu, cuda, auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda is unavailable: torch sees no CUDA device (use cpu or auto)")
    return device


def one_line(e: BaseException) -> str:
    """An exception's message on one line, without Hydra's search-path and hint boilerplate."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith(("Config search path", "full_key"))]
    keep = [ln for ln in keep if not ln.startswith(("object_type", "Set the environment"))]
    return " ".join(keep).replace("\t", "")
