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
from study.checks import require_int
from study.ensemble import Ensemble
from study.model import SequenceModel
from study.probes import ProbeSettings
from study.tasks.base import Task
from study.train import TrainSettings, train, train_members

# Overrides that do not change what a run computes, so they are not part of its identity.
NOT_IDENTITY = {"seed", "rerun", "experiment", "out_dir", "threads", "progress", "device"}
NOT_IDENTITY |= {"train.ensemble"}  # each member of an ensemble is the run of its own seed


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
        require_int("seed", cfg.seed, 0)
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


def member_seeds(cfg: DictConfig) -> list[int]:
    """The seeds one job trains: cfg.seed, and with train.ensemble=E the E-1 seeds after it."""
    return list(range(cfg.seed, cfg.seed + int(cfg.train.get("ensemble", 1))))


def run_job(cfg: DictConfig, experiment: str, overrides: list[str]) -> str:
    """Run one configuration into <out_dir>/<experiment>/<run id>/, one run directory per seed
    (several with train.ensemble), and return its status (members' statuses joined by "," if
    they differ). Members already finished are skipped; the others train together."""
    jobs = {}
    for seed in member_seeds(cfg):
        member_cfg = cfg.copy()
        member_cfg.seed = seed
        jobs[seed] = (member_cfg, build(member_cfg))  # raises ConfigError before any write
    outs = {seed: Path(cfg.out_dir) / experiment / run_id(overrides, seed) for seed in jobs}
    for out in outs.values():
        if rundir.is_finished(out) and not cfg.rerun:
            print(f"skip   {experiment}/{out.name} ({rundir.status(out)})", file=sys.stderr)
    todo = [seed for seed, out in outs.items() if cfg.rerun or not rundir.is_finished(out)]
    if not todo:
        return "skipped"

    runtime.configure(cfg.threads)
    infos, checkpoints = {}, {}
    for seed in todo:
        member_cfg, job = jobs[seed]
        out = outs[seed]
        infos[seed] = {
            "run_id": out.name,
            "experiment": experiment,
            "overrides": overrides,
            "seed": seed,
            "steps": job.settings.steps,
            "cell": job.model.cell.kind,
            "hidden_size": job.model.cell.hidden_size,
            "n_params": job.model.n_params(),
            "task": type(job.task).__name__,
            "device": job.device,
            "metric_name": job.task.metric_name,
            "baseline": job.task.baseline,
            **({"ensemble_seeds": todo} if len(todo) > 1 else {}),
            **rundir.provenance(),
        }
        checkpoints[seed] = rundir.CheckpointFile(out)
        if cfg.rerun:
            checkpoints[seed].remove()  # a forced rerun starts from scratch
        elif checkpoints[seed].path.exists():
            print(f"resume {experiment}/{out.name} from its checkpoint", file=sys.stderr)
        rundir.write_text(out / rundir.CONFIG, OmegaConf.to_yaml(member_cfg, resolve=True))
        rundir.write_json(out / rundir.RUN_JSON, {**infos[seed], "status": "running"})

    job = jobs[todo[0]][1]
    common = dict(probes=job.probes, progress=cfg.progress, device=job.device)
    start = time.perf_counter()
    try:
        if len(todo) == 1:  # a single run (or the one member of an ensemble still to do)
            one = checkpoints[todo[0]]
            args = (job.model, job.task, job.make_optimizer, job.settings, todo[0])
            records = [train(*args, checkpoint=one, **common)]
        else:
            members = Ensemble([jobs[seed][1].model for seed in todo])
            args = (members, job.task, job.make_optimizer, job.settings, todo)
            records = train_members(*args, checkpoints=[checkpoints[s] for s in todo], **common)
    except Exception:
        for seed in todo:
            info = infos[seed] | {"status": "failed", "traceback": traceback.format_exc()}
            info["wall_time_s"] = time.perf_counter() - start
            rundir.write_json(outs[seed] / rundir.RUN_JSON, info)
            print(f"FAILED {experiment}/{outs[seed].name}: see run.json", file=sys.stderr)
        runtime.release()
        return "failed"

    wall_time = time.perf_counter() - start
    for seed, rec in zip(todo, records):
        out = outs[seed]
        rundir.write_parquet(out / rundir.METRICS, rec.metrics_frame())
        rundir.write_parquet(out / rundir.FLOW, rec.flow_frame())
        rundir.write_parquet(out / rundir.EVIDENCE, rec.evidence_frame())
        rundir.write_parquet(out / rundir.WEIGHTS, rec.weights_frame())
        info = infos[seed] | {"status": rec.status, "wall_time_s": wall_time, **rec.final}
        rundir.write_json(out / rundir.RUN_JSON, info)  # last: from now on it reads as finished
        checkpoints[seed].remove()
        print(f"{rec.status:<9} {out}", file=sys.stderr)
    runtime.release()  # the memory kept for speed goes back before the next job of a worker
    statuses = list(dict.fromkeys(rec.status for rec in records))
    return ",".join(statuses)


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
