"""Run identity and the files of one run directory: run ids, what is not identity, config
fingerprints, checksums, atomic writes and the per-run lock. No torch: readers of results import
this module alone (the checkpoint, which needs torch, lives in study/runs/checkpoint.py).

    <out_dir>/<experiment>/<run id>/
        config.yaml        the resolved config of the run
        run.json           status (running | completed | diverged | failed), provenance, and the
                           sha256 of config.yaml and of tables.zip
        tables.zip         the run's tables, one Parquet file each (read_table), in one
                           uncompressed zip (Parquet compresses itself; one file instead of five
                           saves a run most of its disk blocks):
          metrics.parquet    tidy rows (step, name, value)
          grad_flow.parquet  tidy rows (step, quantity, state, position, lag, stat, value)
          evidence.parquet   tidy rows (step, example, evidence, position, lag, quantity, value)
          weights.parquet    tidy rows (step, block, stat, value)
          lyapunov.parquet   tidy rows (step, example, index, value)
        checkpoint.pt      resumable training state while the run is unfinished
        .lock              the host and PID of the process training it, while it does

Every file goes to a temporary name in the same directory and is then renamed over the target,
so a reader sees the old file or the new one, never a torn one. `run.json` is written first with
status "running" and rewritten last with the final status and the checksums: a run killed at any
point reads as unfinished and is redone when its sweep resumes; a finished run whose files no
longer match their checksums reads as "damaged" and is redone too. Runs written by earlier
versions hold each table as its own file beside run.json (LEGACY_TABLES); they read as before,
and `compact` packs them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pandas as pd
import yaml

RUN_JSON, CONFIG, CHECKPOINT, LOCK = "run.json", "config.yaml", "checkpoint.pt", ".lock"
LOG = "train.log"  # a run's log: what the console showed of it, and every evaluation (appended)
TABLES = ("metrics", "grad_flow", "evidence", "weights", "lyapunov")  # a run's tables, by name
TABLE_FILE = "tables.zip"  # all of them: "<name>.parquet" each, in one stored zip
LEGACY_TABLES = {name: f"{name}.parquet" for name in TABLES}  # earlier versions: a file each
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the members' timestamp: the same tables give the same bytes
FINISHED = ("completed", "diverged")  # statuses that a resumed sweep skips
# The rows a run keeps are the ones the readers use: grad_flow's medians (plus "value", the one
# number per lag of the SNR rows, and the means of MEAN_READ) and evidence's quantities.
# write_tables writes only these (`kept`); `compact` drops the rest from earlier versions' runs.
FLOW_STATS = ("mean", "median")
EVIDENCE_QUANTITIES = ("input_grad",)
KEEP = {  # table -> (column, values kept)
    "grad_flow": ("stat", (*FLOW_STATS, "value")),
    "evidence": ("quantity", EVIDENCE_QUANTITIES),
}
MEAN_READ = ("gate_mean",)  # the grad_flow quantities whose batch mean a reader draws (the
# LSTM's forget gate in training_dynamics); every other one is read by its median only


def kept(name: str, table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a run's table that are written: KEEP's, and of grad_flow's batch means only
    those of MEAN_READ."""
    if name not in KEEP or not len(table):
        return table
    column, values = KEEP[name]
    keep = table[column].isin(values)
    if name == "grad_flow":
        keep &= (table["stat"] != "mean") | table["quantity"].isin(MEAN_READ)
    return table[keep].reset_index(drop=True)


# Config keys that do not change what a run computes, so they are neither in its run id nor in
# its fingerprint. threads, device and ensemble change the order in which float sums are
# taken (results agree to ~1e-15 relative in float64 terms, ~1e-6 in float32), not the function;
# a run is the same run whichever of them computed it. (On CUDA, cuDNN's recurrences may use TF32
# for float32 by PyTorch's default, torch.backends.cudnn.allow_tf32: ~1e-3; run.json's device.)
NOT_IDENTITY = (
    "seed",  # in the run id on its own, last
    "rerun",
    "experiment",
    "out_dir",
    "threads",
    "progress",
    "device",
    "ensemble",
    "train.ensemble",  # where `ensemble` was before: configs stored by earlier versions
    "train.checkpoint_every",
    "experiment_dir",
    "logger",  # the tracker (logger=..., its keys logger.*) records a run; it computes nothing
)
MAX_RUN_ID = 200  # bytes; file systems allow 255 per name
SWEEP_ENV = "STUDY_SWEEP"  # the sweep token (study/runs/sweep.py) that run.json records
SWEEP_PID_ENV = "STUDY_SWEEP_PID"  # the PID of the process that launched the sweep
SWEEP_DIR_ENV = "STUDY_SWEEP_DIR"  # the sweep's folder: its multirun.yaml and done-counter
SWEEP_TOTAL_ENV = "STUDY_SWEEP_TOTAL"  # how many runs the sweep has


# ---- identity ----------------------------------------------------------------------------------
def run_id(overrides: list[str], seed: int) -> str:
    """Directory name from the overrides that define the run, sorted by key, seed last.

    e.g. ["task.length=100", "model=lstm", "seed=3"] -> "model=lstm,task.length=100,seed=3".
    A name longer than MAX_RUN_ID is cut to a readable prefix plus a hash of the whole name
    (the full overrides are in run.json), so the same overrides always give the same name.
    """
    parts = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in NOT_IDENTITY or key.startswith(("hydra.", "hydra/", "logger.")):
            continue
        parts[key] = value.replace("/", "_")
    name = ",".join(f"{k}={parts[k]}" for k in sorted(parts))
    tail = f"seed={seed}"
    if len(f"{name},{tail}".encode()) > MAX_RUN_ID:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = name.encode()[: MAX_RUN_ID - 40].decode(errors="ignore") + f"~{digest}"
    return f"{name},{tail}" if name else tail


def experiment_folder(choice: str | None, experiment_dir: str | None) -> str:
    """The folder under out_dir that a job writes into: `experiment_dir` where the experiment
    sets one (study_causal_floor joins study_causal), else the experiment's name, else
    "default". One plain folder name: nothing written can land outside out_dir."""
    key = "experiment_dir" if experiment_dir else "experiment"
    name = experiment_dir or choice or "default"
    if name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(
            f"{key}={name!r} is invalid: the results folder must be one folder name, no / or .."
        )
    return name


def member_seeds(seed: int, ensemble: int | list[int]) -> list[int]:
    """The seeds one job trains: `seed`, and with ensemble=E the E-1 seeds after it; or the
    seeds themselves where the job was given a list (ensemble=auto: study/runs/grouping.py)."""
    return list(ensemble) if isinstance(ensemble, list) else list(range(seed, seed + ensemble))


def job_run_dirs(
    out_dir: str | Path, experiment: str, overrides: list[str], seed: int, ensemble
) -> dict[int, Path]:
    """{seed: run directory} of one job: one directory per member seed."""
    base = Path(out_dir) / experiment
    return {s: base / run_id(overrides, s) for s in member_seeds(seed, ensemble)}


def flatten(config: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} as {"a.b": 1}, an empty mapping dropped (as pandas.json_normalize does,
    which this replaced: the same keys and values for every committed config, 20x faster)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def identity(config: dict) -> dict:
    """The resolved config flattened to {"a.b": value}, less the keys that are not identity and
    those set to null: a null key means "not set", as an absent one does (so adding a key with a
    null default to a YAML file leaves the runs computed before it valid)."""
    flat = flatten(config) if config else {}
    return {
        k: v
        for k, v in sorted(flat.items())
        if k not in NOT_IDENTITY and not k.startswith("logger.") and v is not None
    }


def identity_diff(old: dict, new: dict) -> list[str]:
    """The keys whose values differ, as "key (old -> new)"; a missing key shows as <absent>."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a != b:
            out.append(f"{key} ({a!r} -> {b!r})")
    return out


# libyaml's parser where PyYAML has it (about 10x the pure-Python one: a reader parses every
# run's config.yaml, 2,700 of them in the reference); the same safe subset of YAML either way
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_config(run_dir: Path):
    """A run directory's config.yaml as plain Python values (None if empty)."""
    return yaml.load((Path(run_dir) / CONFIG).read_text(), Loader=_YAML_LOADER)


def stored_identity(run_dir: Path) -> dict | None:
    """The identity of the config a run directory was computed with; None if unreadable."""
    try:
        return identity(read_config(run_dir))
    except (OSError, yaml.YAMLError, AttributeError, IndexError, ValueError):
        return None


# ---- writes --------------------------------------------------------------------------------------
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp_path), fsync, then rename tmp over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give results the usual mode
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno is None:
            raise
        raise OSError(e.errno, os.strerror(e.errno), str(path)) from e  # name the file we wrote
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """zstd, and no per-column min/max statistics: nothing here filters row groups by them, and
    in a run's small tables they are half the file. Values stay float64: gradients reach 1e-318
    at long lags, far below float32's range (1e-38), and their tails are what the study plots."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, compression="zstd", write_statistics=False)
    return buffer.getvalue()


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """One frame as one Parquet file (parquet_bytes' encoding), atomically."""
    data = parquet_bytes(frame)
    atomic_write(path, lambda p: p.write_bytes(data))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_tables(run_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Write the run's tables (name -> frame, names from TABLES) as its TABLE_FILE, replacing
    any tables an earlier version left as files of their own; flushed again at each checkpoint
    so that a running run's partial curves can be read."""
    run_dir = Path(run_dir)
    members = {f"{name}.parquet": parquet_bytes(kept(name, t)) for name, t in tables.items()}

    def pack(path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for member, data in members.items():
                z.writestr(zipfile.ZipInfo(member, date_time=_ZIP_TIME), data)

    atomic_write(run_dir / TABLE_FILE, pack)
    for file in LEGACY_TABLES.values():
        (run_dir / file).unlink(missing_ok=True)


def read_table(run_dir: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    """One table of a run directory (either layout), all its columns or those given; None if
    the run has no such table."""
    run_dir = Path(run_dir)
    if (run_dir / TABLE_FILE).exists():
        with zipfile.ZipFile(run_dir / TABLE_FILE) as z:
            if f"{name}.parquet" not in z.namelist():
                return None
            data = z.read(f"{name}.parquet")
        return pd.read_parquet(io.BytesIO(data), columns=columns)
    legacy = run_dir / LEGACY_TABLES[name]
    return pd.read_parquet(legacy, columns=columns) if legacy.exists() else None


def read_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Every table the run has, by name."""
    tables = {name: read_table(run_dir, name) for name in TABLES}
    return {name: frame for name, frame in tables.items() if frame is not None}


def seal(run_dir: Path, info: dict) -> None:
    """Write run.json last, with the sha256 of config.yaml and of the tables: from now on the
    run reads as finished, and any later change to its files as damage."""
    run_dir = Path(run_dir)
    files = [CONFIG, TABLE_FILE, *LEGACY_TABLES.values()]
    sums = {f: sha256(run_dir / f) for f in files if (run_dir / f).exists()}
    write_json(run_dir / RUN_JSON, {**info, "checksums": sums})


def compact(run_dir: Path) -> str:
    """Rewrite a finished run's tables as this version writes them (KEEP's rows, one TABLE_FILE,
    parquet_bytes' encoding) and reseal run.json with the new checksums; every kept row is
    unchanged. Returns "compacted", "compact" (nothing to change) or why the run was left alone
    (unfinished, or damaged: a damaged run is evidence of a fault and is not resealed). A kill
    before the reseal leaves the run reading as damaged (a table file missing, or a TABLE_FILE
    that run.json does not seal), so it is redone, never passed off as intact."""
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    state = status(run_dir)
    if state not in FINISHED:
        return f"left alone: {state}"
    before = dict(info.get("checksums") or {})
    write_tables(run_dir, read_tables(run_dir))  # which keeps only the `kept` rows
    if before == {CONFIG: sha256(run_dir / CONFIG), TABLE_FILE: sha256(run_dir / TABLE_FILE)}:
        return "compact"
    info.pop("checksums", None)
    seal(run_dir, info)
    return "compacted"


# ---- reads ---------------------------------------------------------------------------------------
def read_run_json(run_dir: Path) -> dict | None:
    try:
        info = json.loads((Path(run_dir) / RUN_JSON).read_text())
    except (OSError, ValueError):  # missing, unreadable, or not JSON (ValueError: also bad UTF-8)
        return None
    return info if isinstance(info, dict) else None


def damage(run_dir: Path, info: dict | None = None) -> str | None:
    """What is wrong with a finished run's files, in words; None when they are intact.

    Checks run.json parses, config.yaml parses, and every file recorded in run.json is present
    with its recorded sha256 (a run whose run.json records no checksums cannot be checked). A
    config.yaml with its sealed checksum is the file this code wrote: it is not parsed again
    (a reader of 4,000 runs parsed each config twice)."""
    run_dir = Path(run_dir)
    info = read_run_json(run_dir) if info is None else info
    if info is None:
        return f"{RUN_JSON} is missing or not valid JSON"
    sums = info.get("checksums") or {}
    if CONFIG not in sums and stored_identity(run_dir) is None:
        return f"{CONFIG} is missing or not valid YAML"
    for name, digest in sums.items():
        path = run_dir / name
        if not path.exists():
            return f"{name} is missing"
        if sha256(path) != digest:
            return f"{name} does not match its checksum (truncated or modified)"
    if sums and TABLE_FILE not in sums and (run_dir / TABLE_FILE).exists():
        return f"{TABLE_FILE} is not among the files {RUN_JSON} seals"  # a compact cut short
    return None


def status(run_dir: Path) -> str:
    """missing | running | failed | completed | diverged | damaged (finished, files not intact;
    or a run.json that exists but cannot be read)."""
    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    if info is None:
        return "damaged" if (run_dir / RUN_JSON).exists() else "missing"
    state = info.get("status", "damaged")
    if state in FINISHED and damage(run_dir, info) is not None:
        return "damaged"
    return state


def is_finished(run_dir: Path) -> bool:
    """Finished and intact: what a resumed sweep skips."""
    return status(run_dir) in FINISHED


# ---- sweep progress ----------------------------------------------------------------------------
def sweep_progress() -> str:
    """ "[k/N] " for a run that a sweep has just finished with (trained, skipped or failed):
    each run appends one line to <sweep dir>/done (O_APPEND: whole lines from any worker), and k
    is the number of lines. "" outside a sweep or when the counter cannot be written."""
    folder, total = os.environ.get(SWEEP_DIR_ENV), os.environ.get(SWEEP_TOTAL_ENV)
    if not folder or not total:
        return ""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(folder) / "done", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"x\n")
        finally:
            os.close(fd)
        done = (Path(folder) / "done").read_bytes().count(b"\n")
    except OSError:
        return ""
    return f"  [{done}/{total} done]"


# ---- the per-run lock ----------------------------------------------------------------------------
class RunLock:
    """`<run dir>/.lock`, created atomically (O_EXCL) with the host and PID of its holder, so that
    two sweeps into one out_dir train each run once. A lock whose holder is gone (same host, no
    such process) is stale and taken over."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.held = False

    def holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> bool:
        """True if this process now holds the lock; False if a live process does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(2):  # a second try after removing a stale lock
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self.holder()
                if other == me:  # already ours (a job that locks its members twice)
                    self.held = True
                    return True
                if other is not None and not _is_stale(other):
                    return False
                if other is None and _age(self.path) < 10:  # being written right now
                    return False
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return True
        return False

    def busy(self) -> bool:
        """Whether a live process other than this one holds the lock (or is writing it now:
        a lock file without its holder yet, younger than 10 s, as `acquire` reads it)."""
        other = self.holder()
        if other is None:
            return self.path.exists() and _age(self.path) < 10
        if other == {"host": socket.gethostname(), "pid": os.getpid()}:
            return False
        return not _is_stale(other)

    def release(self) -> None:
        """Remove the lock. Where the disk no longer takes that (it turned read-only), the lock
        stays: its holder is gone once this process ends, so the next run takes it over as stale."""
        if self.held:
            try:
                self.path.unlink(missing_ok=True)
            except OSError as e:
                if not is_disk_error(e):
                    raise
            self.held = False


def _is_stale(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return False  # another machine (a cluster): it may be alive; only it can release it
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


# ---- provenance ----------------------------------------------------------------------------------
def provenance() -> dict:
    """Package versions and the git commit the code ran from."""
    versions = {}
    for pkg in ("torch", "numpy", "pandas", "hydra-core", "omegaconf"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    versions["python"] = platform.python_version()
    return {"versions": versions, "git": _git_commit()}


def _git_commit() -> dict | None:
    root = Path(__file__).resolve().parent.parent
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        return {"commit": run("rev-parse", "HEAD"), "dirty": bool(run("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return None


def is_disk_error(e: BaseException) -> bool:
    """An OSError a user fixes on the file system: full, read-only, no permission, too long."""
    codes = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG)
    return isinstance(e, OSError) and e.errno in codes
