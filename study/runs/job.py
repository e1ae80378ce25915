"""One Hydra job, from composed config to run directories: validate, build, skip, lock, train.

With the entry point (study/run.py), the sweep callback (study/runs/sweep.py) and
study/runs/hydra_private.py, this is one of the modules that know Hydra's config objects; it alone
instantiates the `_target_`s of the config groups and hands plain objects to the training loop.
Run identity and the files of a run directory belong to study/runs/rundir.py.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.errors import HydraException, InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study.checks import require_at_most, require_bool, require_int, suggest
from study.model import SequenceModel
from study.model.ensemble import Ensemble, Single
from study.probes import ProbeSettings
from study.runs import allocator, grouping, rundir
from study.runs.checkpoint import CheckpointFile
from study.tasks.base import Task
from study.train import TrainSettings, train

log = logging.getLogger(__name__)

# `${times:a,b}` in a config is a * b: what a key derived from another needs, e.g. the chrono
# LSTM's T_max = 3T/2 on copy memory, `chrono: ${times:${task.length},1.5}` (Tallec & Ollivier
# 2018). Registered here, where every process that composes the study's configs imports it.
if not OmegaConf.has_resolver("times"):
    OmegaConf.register_new_resolver("times", lambda a, b: a * b)


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


def build(cfg: DictConfig, check_task: bool = False) -> Job:
    """Instantiate task, model (initialised from cfg.seed), settings and optimiser, or raise
    ConfigError naming the offending key. check_task: also sample a small batch and check it
    against the sizes the task declares (the entry point's start-up check does)."""
    try:
        check_top_level(cfg)
        check_keys(cfg)
        check_sizes(cfg)
        task = instantiate(cfg.task)
        if check_task:
            check_samples(task)
        torch.manual_seed(cfg.seed)  # the model's initialisation is a function of the seed alone
        model = instantiate(cfg.model, input_size=task.input_size, output_size=task.output_size)
        train_cfg = OmegaConf.to_container(cfg.train, resolve=True)
        optimizer = train_cfg.pop("optimizer")
        settings = TrainSettings(**train_cfg)
        make_optimizer = instantiate(optimizer)
        check_optimizer(make_optimizer, model, cfg.train.optimizer)
        check_ensemble_optimizer(cfg)
        probes = instantiate(cfg.probe)
        device = resolve_device(cfg.device)
    except InstantiationException as e:
        raise ConfigError(one_line(e.__cause__ or e)) from e
    except (TypeError, ValueError, OmegaConfBaseException, HydraException) as e:
        raise ConfigError(one_line(e)) from e
    return Job(task, model, settings, probes, make_optimizer, device)


MAX_LENGTH = 100_000  # steps: a probe's float64 states and Jacobians grow with T
MAX_SNR_BATCHES = 1000  # each is a backward pass per probe


def check_sizes(cfg: DictConfig) -> None:
    """Sizes that would exhaust memory or never finish, refused before anything is built or
    written; and more Jacobian examples than the probe's batch holds (which the run would clip
    silently, its run id keeping the asked value). probe.jacobian_lags is "about this many" by
    its definition, at most T - 1."""
    length = cfg.task.get("length")
    if isinstance(length, int) and not isinstance(length, bool):
        require_at_most("task.length", length, MAX_LENGTH, "the probes keep every step")
    snr = cfg.probe.get("snr_batches")
    if isinstance(snr, int) and not isinstance(snr, bool):
        require_at_most("probe.snr_batches", snr, MAX_SNR_BATCHES, "a backward pass each")
    examples, batch = cfg.probe.get("jacobian_examples"), cfg.train.get("batch_size")
    if isinstance(examples, int) and isinstance(batch, int) and examples > batch:
        raise ConfigError(
            f"probe.jacobian_examples={examples} is more than train.batch_size={batch}: the"
            " probe reads examples of the step's batch"
        )


def check_samples(task: Task) -> None:
    """Sample two sequences and check their sizes; any error of the task's own code is one line."""
    try:
        batch = task.sample(2, torch.Generator().manual_seed(0))
    except Exception as e:
        raise ConfigError(f"task {type(task).__name__}: sample() raised {one_line(e)}") from e
    task.check(batch)


def check_top_level(cfg: DictConfig) -> None:
    """The keys of conf/config.yaml that no `_target_` checks."""
    require_int("seed", cfg.seed, 0)
    require_int("threads", cfg.threads, 1)
    if cfg.ensemble != grouping.AUTO:
        require_int("ensemble", cfg.ensemble, 1)
    require_bool("rerun", cfg.rerun)
    if cfg.progress is not None:
        require_bool("progress", cfg.progress)
    if not isinstance(cfg.out_dir, str) or not cfg.out_dir:
        raise ConfigError(f"out_dir={cfg.out_dir!r} is invalid: must be a path")


KNOWN_TOP = {"model", "task", "train", "probe", "seed", "out_dir", "rerun", "threads", "device"}
# hydra: present when composed with its own config
KNOWN_TOP |= {"ensemble", "progress", "hydra", "experiment_dir", "logger"}


def check_keys(cfg: DictConfig) -> None:
    """Every key is one the code reads: the top level of conf/config.yaml, and for each group
    the parameters of its `_target_` (a `+`-added misspelt key would otherwise pass silently)."""
    for key in cfg:
        if key not in KNOWN_TOP:
            raise ConfigError(f"{key} is an unknown key{suggest(key, KNOWN_TOP - {'hydra'})}")
    nodes = {"model": cfg.model, "task": cfg.task, "probe": cfg.probe}
    nodes["train.optimizer"] = cfg.train.optimizer
    if cfg.get("logger") is not None:
        nodes["logger"] = cfg.logger
    for prefix, node in nodes.items():
        target = node.get("_target_")
        if not isinstance(target, str):
            raise ConfigError(f"{prefix}._target_ is missing: name the class or function to build")
        try:
            from hydra.utils import get_object

            params = inspect.signature(get_object(target)).parameters
        except Exception as e:
            raise ConfigError(f"{prefix}._target_={target!r} cannot be imported: {e}") from e
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        allowed = set(params) - {"self", "params", "input_size", "output_size"}
        for key in node:
            if key not in allowed and not str(key).startswith("_"):
                raise ConfigError(
                    f"{prefix}.{key} is an unknown key{suggest(key, allowed, prefix + '.')}"
                )
    settings = set(inspect.signature(TrainSettings).parameters) | {"optimizer"}
    for key in cfg.train:
        if key == "ensemble":  # where it was before it moved to the top level
            raise ConfigError("train.ensemble is now the top-level key: write ensemble=E")
        if key not in settings:
            raise ConfigError(f"train.{key} is an unknown key{suggest(key, settings, 'train.')}")


ELEMENTWISE = {"Adam", "AdamW", "Adamax", "NAdam", "RAdam", "SGD", "RMSprop", "Adagrad", "ASGD"}
ELEMENTWISE |= {"Rprop", "Adadelta"}
"""torch.optim classes whose update of each parameter element reads that element's gradient
and state alone: on an ensemble's stacked tensors each member's update is its own (Adafactor's
factored moments, or any optimiser unknown here, would couple the members)."""


def check_ensemble_optimizer(cfg: DictConfig) -> None:
    """ensemble > 1 trains the members' parameters stacked: refuse an optimiser that would
    couple them, before anything is written."""
    target = str(cfg.train.optimizer.get("_target_"))
    if cfg.ensemble not in (1, grouping.AUTO) and not elementwise(cfg):  # auto: stacks only then
        allowed = ", ".join(sorted(ELEMENTWISE))
        raise ConfigError(
            f"train.optimizer._target_={target} with ensemble={cfg.ensemble}: the stacked members"
            f" need an elementwise optimiser, else their updates couple; allowed: {allowed}"
        )


def elementwise(cfg: DictConfig) -> bool:
    """Whether the optimiser updates each parameter element on its own (stacked members stay
    apart)."""
    return str(cfg.train.optimizer.get("_target_")).rpartition(".")[2] in ELEMENTWISE


def check_optimizer(make_optimizer, model: SequenceModel, node: DictConfig) -> None:
    """Build the optimiser once on the model's parameters, so that a bad lr or betas is a config
    error now, not a failed run later; reject optimisers whose step needs a closure (LBFGS)."""
    name = f"train.optimizer ({node.get('_target_')})"
    betas = node.get("betas")
    if betas is not None:
        pair = isinstance(betas, Sequence) and not isinstance(betas, str) and len(betas) == 2
        if not (pair and all(isinstance(b, int | float) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"train.optimizer.betas={betas!r} is invalid: two numbers in [0, 1)")
    for key in ("lr", "weight_decay", "momentum", "eps"):
        value = node.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise ConfigError(f"train.optimizer.{key}={value!r} is invalid: must be a number")
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"train.optimizer.{key}={value!r} is invalid: must be finite, >= 0")
    try:
        optimizer = make_optimizer(list(model.parameters()))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{name}: {one_line(e)}") from e
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"{name} is not a torch.optim.Optimizer")
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        raise ConfigError(f"{name} needs a closure in step(); use Adam, SGD, RMSprop, ...")


def identity_error(cfg: DictConfig, run_dir: Path) -> str | None:
    """The one-line error for a run directory computed with another config; None if it matches
    (or there is nothing to compare: no run yet, nothing of it is reused, or it is damaged: a
    config.yaml that no longer matches its checksum says nothing of the config it ran with, and
    the run is named and retrained)."""
    if not (run_dir / rundir.CONFIG).exists() or rundir.status(run_dir) == "damaged":
        return None
    info = rundir.read_run_json(run_dir) or {}
    reused = info.get("status") in rundir.FINISHED or (run_dir / rundir.CHECKPOINT).exists()
    old = rundir.stored_identity(run_dir)
    if not reused or old is None:
        return None
    diff = rundir.identity_diff(old, rundir.identity(OmegaConf.to_container(cfg, resolve=True)))
    if not diff:
        return None
    return (
        f"{run_dir} was computed with another config: {'; '.join(diff)}. "
        "Retrain it with rerun=true, or write to another out_dir"
    )


def run_job(cfg: DictConfig, experiment: str, overrides: list[str]) -> str:
    """Run one configuration into <out_dir>/<experiment>/<run id>/, one run directory per seed
    (several with ensemble=E), and return its status (members' statuses joined by "," if
    they differ). Finished runs are skipped; damaged ones retrained; runs another process holds
    the lock of are left to it; the others train together."""
    ensemble = job_members(cfg)
    if not ensemble:  # ensemble=auto: another seed's job trains this one's run with its own
        log.debug("%s/%s: trained in an auto ensemble of the sweep", experiment, cfg.seed)
        return "in an ensemble"
    outs = rundir.job_run_dirs(cfg.out_dir, experiment, overrides, cfg.seed, ensemble)
    jobs = {}
    for seed, out in outs.items():
        member_cfg = cfg.copy()
        member_cfg.seed = seed
        jobs[seed] = (member_cfg, build(member_cfg))  # raises ConfigError before any write
        if not cfg.rerun and (problem := identity_error(member_cfg, out)):
            raise ConfigError(problem)
    watch_parent()

    try:
        locks, todo, elsewhere = claim_runs(cfg, experiment, outs)
    except OSError as e:  # the out_dir turned read-only or full before this job trained
        if not rundir.is_disk_error(e):
            raise
        log.error("error: cannot write %s: %s%s", e.filename, e.strerror, rundir.sweep_progress())
        return "failed"
    try:
        todo_jobs = {s: jobs[s] for s in todo}
        statuses = _train(cfg, experiment, overrides, todo_jobs, outs) if todo else []
    finally:  # also on Ctrl-C, which the entry point reports in one line (study/run.py)
        for lock in locks.values():
            lock.release()
    if elsewhere:
        statuses.append("running elsewhere")
    track(cfg, experiment, [outs[s] for s in todo])
    return ",".join(dict.fromkeys(statuses)) or "skipped"


def job_members(cfg: DictConfig) -> int | list[int]:
    """ensemble=E (E seeds from cfg.seed), or with ensemble=auto the seeds this job trains
    (study/runs/grouping.py: [] where another job of the sweep trains them)."""
    if cfg.ensemble != grouping.AUTO:
        return int(cfg.ensemble)
    model = cfg.model
    size = grouping.auto_size(model.cell, model.get("block"), cfg.device, model.get("cut"))
    if not elementwise(cfg):  # stacked members would couple through the optimiser: alone
        size = 1
    return grouping.auto_members(cfg.seed, size, grouping.sweep_seeds())


def claim_runs(cfg: DictConfig, experiment: str, outs: dict[int, Path]):
    """Which of a job's runs to train: finished ones are skipped, those another live process
    holds the lock of are left to it (`elsewhere`), the others are locked (`locks`) and to do.
    A write the disk refuses releases what was taken and raises its OSError."""
    locks, todo, elsewhere = {}, [], []
    try:
        for seed, out in outs.items():
            state = rundir.status(out)
            if state in rundir.FINISHED and not cfg.rerun:
                progress = rundir.sweep_progress()
                log.info("skip   %s/%s (%s)%s", experiment, out.name, state, progress)
                continue
            locks[seed] = rundir.RunLock(out)
            if not locks[seed].acquire():
                where = _held_elsewhere(locks.pop(seed), out)
                progress = rundir.sweep_progress()
                log.info("busy   %s/%s (%s)%s", experiment, out.name, where, progress)
                elsewhere.append(seed)
                continue
            if rundir.is_finished(out) and not cfg.rerun:  # finished by another process meanwhile
                locks.pop(seed).release()
                continue
            if state == "damaged":
                problem = rundir.damage(out) or "run.json unreadable"
                log.warning("damaged %s/%s: %s; retraining", experiment, out.name, problem)
            todo.append(seed)
    except OSError:
        for lock in locks.values():
            lock.release()
        raise
    return locks, todo, elsewhere


def _held_elsewhere(lock: rundir.RunLock, out: Path) -> str:
    """Who holds a run's lock, and how to clear it where its liveness cannot be checked here."""
    holder = lock.holder() or {}
    where = f"running elsewhere: pid {holder.get('pid')} on {holder.get('host')}"
    if holder.get("host") != socket.gethostname():
        where += f"; if that process is gone, delete {out / rundir.LOCK}"
    return where


def track(cfg: DictConfig, experiment: str, run_dirs: list[Path]) -> None:
    """Hand each sealed run to the experiment tracker the config names (`logger=...`,
    conf/logger/; none by default). A tracker that fails costs a warning, never the run."""
    if cfg.get("logger") is None:
        return
    tracker = instantiate(cfg.logger)
    for out in run_dirs:
        if not rundir.is_finished(out):
            continue
        try:
            where = tracker.log_run(out, experiment)
            log.info("logged %s/%s to %s", experiment, out.name, where)
        except Exception as e:  # an import error (tensorboard not installed), a full disk
            log.warning("logger: %s/%s not logged: %s", experiment, out.name, one_line(e))


def _train(cfg, experiment, overrides, jobs: dict, outs: dict) -> list[str]:
    """Train the job's runs still to do (seed -> (config, Job)) together, one run directory each:
    run.json "running" first, the tables and the sealed run.json last."""
    todo, job = list(jobs), jobs[next(iter(jobs))][1]
    allocator.configure(cfg.threads)
    try:
        infos, checkpoints = start_runs(cfg, experiment, overrides, jobs, outs)
    except OSError as e:
        if not rundir.is_disk_error(e):
            raise
        log.error("error: cannot write %s: %s", e.filename or outs[todo[0]], e.strerror)
        return ["failed"]
    models = [jobs[seed][1].model for seed in todo]
    members = Single(models[0]) if len(models) == 1 else Ensemble(models)
    start = time.perf_counter()
    with run_logs({seed: outs[seed] for seed in todo}, fresh=bool(cfg.rerun)):
        try:
            records = train(members, job.task, job.make_optimizer, job.settings, todo, job.probes,
                            cfg.progress, [checkpoints[s] for s in todo], job.device)  # fmt: skip
            wall_time = time.perf_counter() - start  # the job's: every member trained throughout
            for seed, rec in zip(todo, records):
                info = infos[seed] | {"wall_time_s": wall_time}
                seal_run(outs[seed], info, rec, checkpoints[seed])
        except Exception as e:
            fail_runs(experiment, todo, outs, infos, e, time.perf_counter() - start)
            return ["failed"]
        finally:
            allocator.release()  # memory kept for speed goes back before the worker's next job
    return [rec.status for rec in records]


def start_runs(cfg, experiment, overrides, jobs: dict, outs: dict):
    """Write each run's config.yaml and a run.json saying "running" (its provenance), and open
    its checkpoint (removed for rerun=true); the infos and checkpoints by seed."""
    todo, infos, checkpoints = list(jobs), {}, {}
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
            "memory": job.model.cell.memory,  # the state that carries memory across steps
            "hidden_size": job.model.cell.hidden_size,
            "n_params": job.model.n_params(),
            "task": type(job.task).__name__,
            "input_length": input_length(job.task),
            "device": job.device,
            "metric_name": job.task.metric_name,
            "baseline": job.task.baseline,
            "sweep": os.environ.get(rundir.SWEEP_ENV),
            **({"ensemble_seeds": todo} if len(todo) > 1 else {}),
            **rundir.provenance(),
        }
        checkpoints[seed] = CheckpointFile(out)
        if cfg.rerun:
            checkpoints[seed].remove()  # a forced rerun starts from scratch
        elif checkpoints[seed].path.exists():
            log.info("resume %s/%s from its checkpoint", experiment, out.name)
        rundir.write_text(out / rundir.CONFIG, OmegaConf.to_yaml(member_cfg, resolve=True))
        rundir.write_json(out / rundir.RUN_JSON, {**infos[seed], "status": "running"})
    return infos, checkpoints


def seal_run(out: Path, info: dict, rec, checkpoint: CheckpointFile) -> None:
    """A trained run's tables, then its run.json with status and checksums: from now on it
    reads as finished; its checkpoint goes."""
    rundir.write_tables(out, rec.tables())
    rundir.seal(out, info | {"status": rec.status, **rec.final})
    checkpoint.remove()
    # `seed`: an ensemble member's line goes to its own train.log only (run_logs)
    log.info("%-9s %s%s", rec.status, out, rundir.sweep_progress(), extra={"seed": info["seed"]})


def fail_runs(experiment, todo, outs, infos, e: BaseException, wall_time: float) -> None:
    """Every unsealed run of a job that raised: run.json "failed" with the traceback (where the
    disk takes it), and one line naming the run and the cause."""
    disk = rundir.is_disk_error(e)
    for seed in todo:
        if rundir.is_finished(outs[seed]):
            continue
        info = infos[seed] | {"status": "failed", "traceback": traceback.format_exc()}
        info["wall_time_s"] = wall_time
        try:
            rundir.write_json(outs[seed] / rundir.RUN_JSON, info)
        except OSError:
            pass  # the disk that failed the run may not take its run.json either
        where = f"cannot write {e.filename}: {e.strerror}" if disk else one_line(e)[:200]
        progress = rundir.sweep_progress()
        log.error("FAILED %s/%s: %s%s", experiment, outs[seed].name, where, progress,
                  extra={"seed": seed})  # fmt: skip


class RunLog(logging.FileHandler):
    """A run's train.log. A line the disk does not take is dropped without a traceback: the run
    itself fails, with one line, where its tables are written."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass


@contextlib.contextmanager
def run_logs(outs: dict[int, Path], fresh: bool = False):
    """While a job trains, each of its run directories gets the study's log lines in train.log,
    evaluations (DEBUG) included. A line that names a seed (an ensemble member's evaluation)
    goes to that run's file only. Appended across resumes; `fresh` (rerun=true) starts anew."""
    study = logging.getLogger("study")
    level, handlers = study.level, []
    study.setLevel(logging.DEBUG)
    for seed, out in outs.items():
        try:
            handler = RunLog(out / rundir.LOG, mode="w" if fresh else "a")
        except OSError:
            continue  # a disk that takes no log fails the run where its tables are written
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
        handler.addFilter(lambda record, seed=seed: getattr(record, "seed", seed) == seed)
        study.addHandler(handler)
        handlers.append(handler)
    try:
        yield
    finally:
        for handler in handlers:
            study.removeHandler(handler)
            handler.close()
        study.setLevel(level)


def input_length(task: Task) -> int | None:
    """Steps of the input the model reads: task.length for most tasks, T + 20 for copy memory,
    the padded length of variable-length variants."""
    try:  # outside the run's failure handling: a task that raises here fails in training
        return int(task.sample(1, torch.Generator().manual_seed(0)).x.shape[1])
    except Exception:
        return None


_watching = False


def watch_parent() -> None:
    """In a joblib (loky) worker of a sweep, exit when the process that launched the sweep dies
    (kill -9 leaves the workers training otherwise); at once if it is gone already (a job handed
    over just before). Its run keeps its checkpoint and reads as unfinished. Not elsewhere: a
    sweep under nohup must survive its shell, and a SLURM job has another parent."""
    global _watching
    import multiprocessing

    launcher = os.environ.get(rundir.SWEEP_PID_ENV)
    loky = multiprocessing.current_process().name.startswith("LokyProcess")
    if _watching or not loky or launcher is None:
        return
    _watching = True

    def watch():
        while os.getppid() == int(launcher):
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


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
