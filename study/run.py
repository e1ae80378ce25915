"""Command-line entry point: `python -m study.run [-m] [key=value ...]` (or `study-run`).

Hydra composes `conf/`; `study.runs.job` does the work. Before Hydra starts, the overrides are
checked by composing the config once per value of every sweep override, so a malformed override, an
unknown model, task or key, an impossible value, an unwritable out_dir, or a run directory that
holds results of another config stops with one line naming the key and what is allowed, and
nothing is written.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import string
import sys
import tempfile
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from study.checks import suggest
from study.runs import grouping, rundir
from study.runs.hydra_private import command_line, value_text
from study.runs.job import ConfigError, build, identity_error, one_line, run_job
from study.runs.sweep import SweepSummary, sweep_jobs

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    try:
        choice = hc.runtime.choices.get("experiment")
        experiment = rundir.experiment_folder(choice, cfg.get("experiment_dir"))
    except ValueError as e:
        sys.exit(f"error: {e}")
    try:
        status = run_job(cfg, experiment, list(hc.overrides.task))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if status == "failed" and hc.mode == RunMode.RUN:
        sys.exit(1)  # a single run fails loudly; in a sweep the other runs go on
    return status


def _compose(overrides: list[str], hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=hydra_config)


class SearchpathLoader:
    """Hydra's config loader as the command line sees it: a config group's options include those
    a `hydra.searchpath=[...]` override adds (an outside package's tasks and cells), for glob(),
    --help and the "allowed" of an unknown option."""

    def __init__(self, loader, overrides: list[str]):
        self.loader = loader
        self.searchpath = [o for o in overrides if o.lstrip("+").startswith("hydra.searchpath=")]

    def get_group_options(self, group: str, results_filter=ObjectType.CONFIG) -> list[str]:
        return self.loader.get_group_options(group, results_filter, "config", self.searchpath)

    def groups(self, parent: str = "") -> dict[str, list[str]]:
        """Every config group below `parent` (nested ones as "model/base") and its options."""
        found = {}
        for name in self.loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if options := self.get_group_options(group):
                found[group] = sorted(options)
            if self.get_group_options(group, ObjectType.GROUP):
                found |= self.groups(group)
        return found


def print_help(overrides: list[str], resolve: bool = False) -> None:
    """`study-run --help [overrides]`: the help template of conf/hydra/default.yaml with the
    config groups as found with any hydra.searchpath given, and the config those overrides
    compose (Hydra's own --help lists the groups of conf/ only)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = SearchpathLoader(GlobalHydra.instance().config_loader(), overrides)
        groups = {g: o for g, o in loader.groups().items() if not g.startswith("hydra")}
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    template = cfg.hydra.help.template
    listing = "".join(f"{g}: {', '.join(o)}\n" for g, o in sorted(groups.items()))
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    config = OmegaConf.to_yaml(job, resolve=resolve)
    print(string.Template(template).substitute(APP_CONFIG_GROUPS=listing, CONFIG=config))


def expand_sweeps(lines: list[str]) -> tuple[list, list[list]]:
    """Parse the command line's overrides and expand each sweep into its values, as Hydra's
    sweeper would: glob() lists a config group's options, so it is expanded with the config
    loader of this config (and any hydra.searchpath given). ([Override], [values per override])
    or exit with one line for a malformed override or a glob that matches nothing."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = SearchpathLoader(GlobalHydra.instance().config_loader(), lines)
        parser, parsed = OverridesParser.create(config_loader=loader), []
        for line in lines:
            try:
                parsed += parser.parse_overrides([line])
            except Exception as e:  # hydra's OverrideParseException, or a grammar error
                first = one_line(e).split(" See https")[0]
                sys.exit(f"error: malformed override {line!r}: {first}")
        choices = []
        for o in parsed:
            try:
                values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
            except Exception:  # interval(): only an optimising sweeper samples it
                sys.exit(f"error: {o.input_line} cannot be enumerated by the basic sweeper (only"
                         " an optimising sweeper samples interval()): give values as a,b,c,"
                         " range() or choice()")  # fmt: skip
            if not values and isinstance(o.value(), Glob):
                found = ", ".join(loader.get_group_options(o.key_or_group)) or "none"
                sys.exit(f"error: {o.input_line} matches no {o.key_or_group}: allowed {found}")
            choices.append(values)
    return parsed, choices


def precheck(argv: list[str]) -> dict[str, str]:
    """Compose and build the config once per value of every sweep override (the others at their
    first value), so that each bad value is caught; then check the launcher, out_dir, and every
    existing run directory of the sweep against its config. Exit with one line on an error.
    Returns each glob() override with its expansion as an explicit list, for Hydra to sweep."""
    from hydra.core.override_parser.types import Override

    args = command_line(argv)
    if args.help:
        try:
            print_help(args.overrides, resolve=args.resolve)
        except MissingConfigException as e:
            sys.exit(f"error: {unknown_option(e, args.overrides)}")
        sys.exit(0)
    if args.hydra_help or args.info or args.shell_completion or args.cfg:
        return {}
    os.environ.pop(grouping.SWEEP_SEEDS_ENV, None)  # a sweep sets it again below, a run never
    parsed, choices = expand_sweeps(args.overrides)
    if {"tuned", "model"} <= {o.key_or_group for o in parsed}:
        sys.exit(
            "error: tuned=... sets the model and its learning rate: drop model=... or tuned=..."
        )

    def render(o: Override, value) -> str:
        return o.input_line if o.is_delete() else f"{o.get_key_element()}={value_text(o, value)}"

    base = [render(o, c[0]) for o, c in zip(parsed, choices)]
    variants = [base] + [
        base[:i] + [render(o, v)] + base[i + 1 :]
        for i, (o, c) in enumerate(zip(parsed, choices))
        for v in c[1:]
    ]
    for overrides in variants:
        try:
            cfg = _compose(overrides, hydra_config=True)
            build(cfg, check_task=True)
            choice = cfg.hydra.runtime.choices.get("experiment")
            rundir.experiment_folder(choice, cfg.experiment_dir)
            check_launcher(cfg)
            check_writable(Path(cfg.out_dir))
        except MissingConfigException as e:
            sys.exit(f"error: {unknown_option(e, overrides)}")
        except ConfigError as e:
            sys.exit(f"error: {e}")
        except Exception as e:
            sys.exit(f"error: {with_suggestion(one_line(e), overrides)}")
    # the sweeps as explicit lists (a glob expanded): sweep_jobs needs no config loader, and
    # Hydra's own sweeper, which expands a glob over conf/ only, gets the searchpath's options
    explicit = {
        o.input_line: f"{o.get_key_element()}=" + ",".join(value_text(o, v) for v in c)
        for o, c in zip(parsed, choices)
        if o.is_sweep_override()
    }
    if args.multirun:
        try:
            lines = [explicit.get(o.input_line, o.input_line) for o in parsed]
            base_cfg = _compose(base, hydra_config=True)
            check_sweep_identity(base_cfg, lines)
            # ensemble=auto groups the sweep's seeds (study/runs/grouping.py): the jobs, here or
            # in a launcher's workers (which inherit the environment), read them from it
            os.environ[grouping.SWEEP_SEEDS_ENV] = ",".join(map(str, sweep_seeds(base_cfg, lines)))
        except ConfigError as e:
            sys.exit(f"error: {e}")
    return {line: explicit[line] for line in explicit if "glob(" in line}


def unknown_option(e: MissingConfigException, overrides: list[str]) -> str:
    """The line for an unknown option ("task=nosuch is unknown: allowed ...", with the close
    match if there is one) and, where no hydra.searchpath is given, how to add one's own."""
    group, _, name = (e.missing_cfg_file or "?/?").rpartition("/")
    options = sorted(e.options or [])
    close = difflib.get_close_matches(name, options, n=1)
    mean = f" (did you mean {group}={close[0]}?)" if close else ""
    line = f"{group}={name} is unknown{mean}: allowed {', '.join(options)}"
    if not any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides):
        line += (f"; a {group} of your own: hydra.searchpath=[pkg://your_package.conf] or"
                 f" [file:///its/conf] with {group}/{name}.yaml in it")  # fmt: skip
    return line


def with_suggestion(message: str, overrides: list[str] | None = None) -> str:
    """Hydra's "Could not override 'a.b'" with the closest existing key and the allowed ones:
    those of the option this job selects (composed without the failing override), e.g.
    task=copy_memory's for task.variant. hydra.launcher.* outside a sweep says to add -m."""
    m = re.match(r"Could not override '([\w.]+)'", message)
    if m is None:
        return message
    key = m.group(1)
    if key == "train.ensemble":  # where it was before it moved to the top level
        return "train.ensemble is now the top-level key: write ensemble=E"
    if key.startswith("hydra.launcher."):
        return f"{key} applies to a sweep's launcher: add -m (and hydra/launcher=joblib)"
    parent, _, leaf = key.rpartition(".")
    others = [o for o in overrides or [] if o.lstrip("+~").partition("=")[0] != key]
    try:
        node = _compose(others)
    except Exception:  # another override fails too: the default config's keys then
        node = _compose([])
    keys = OmegaConf.select(node, parent) if parent else node
    allowed = (
        [k for k in keys if not str(k).startswith("_")] if isinstance(keys, DictConfig) else ()
    )
    target = keys.get("_target_") if isinstance(keys, DictConfig) else None
    if target is not None and leaf not in allowed:  # not a parameter of the selected option
        chosen = [o.partition("=")[2] for o in others if o.lstrip("+~").startswith(f"{parent}=")]
        which = f"{parent}={chosen[-1]}" if chosen else parent
        return f"{key} is not a key of {which} ({target}){suggest(leaf, allowed, parent + '.')}"
    if leaf in allowed:  # a key of the default config, not of the option this job selects
        omitted = "is not in the config this job composes (its YAML omits it)"
        return f"{key} {omitted}: add it with ++{key}=... (sets it whether or not present)"
    return f"{key} is an unknown key{suggest(leaf, allowed, parent + '.' if parent else '')}"


def check_launcher(cfg: DictConfig) -> None:
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default=""))
    if target.endswith("SlurmLauncher") and shutil.which("srun") is None:
        raise ConfigError(
            "hydra/launcher=slurm needs SLURM's srun, which is not on PATH: run it on the"
            " cluster, or use hydra/launcher=joblib here"
        )
    n_jobs = OmegaConf.select(cfg, "hydra.launcher.n_jobs", default=None)
    bad = not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0
    if n_jobs is not None and bad:
        raise ConfigError(
            f"hydra.launcher.n_jobs={n_jobs!r} is invalid: must be a nonzero integer "
            "(workers; -1 = one per core)"
        )


def check_writable(out_dir: Path) -> None:
    """out_dir (or its nearest existing parent) is a directory this process can create files in;
    creates nothing that it does not remove again."""
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"out_dir={out_dir} is not writable: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".study-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"out_dir={out_dir} is not writable: {e.strerror} ({existing})") from e


def sweep_seeds(base: DictConfig, overrides: list[str]) -> list[int]:
    """Every job's seed in the sweep, sorted, each once."""
    task = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    jobs = [dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o) for job in
            sweep_jobs(base, task)]  # fmt: skip
    return sorted({int(values.get("seed", base.seed)) for values in jobs})


def check_sweep_identity(base: DictConfig, overrides: list[str]) -> None:
    """Every run directory of the sweep that already holds results is compared with the config
    its job composes now; composing only for those keeps a fresh sweep's start-up cheap."""
    choice = base.hydra.runtime.choices.get("experiment")
    experiment = rundir.experiment_folder(choice, base.experiment_dir)
    own = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    task = [o for o in overrides if o not in own]
    for job in sweep_jobs(base, task):
        values = dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o)
        seed = int(values.get("seed", base.seed))
        members = grouping.listed_members(values.get("ensemble", base.ensemble))
        dirs = rundir.job_run_dirs(base.out_dir, experiment, job, seed, members)
        existing = {s: d for s, d in dirs.items() if (d / rundir.CONFIG).exists()}
        if not existing:
            continue
        job_cfg = _compose(job + own)
        if job_cfg.rerun is True:
            continue
        for s, d in existing.items():
            job_cfg.seed = s
            if problem := identity_error(job_cfg, d):
                raise ConfigError(problem)


def cli() -> None:
    """The console script `study-run`: precheck, Hydra, and a clean exit on Ctrl-C."""
    globs = precheck(sys.argv[1:])
    sys.argv = [globs.get(a, a) for a in sys.argv]  # model='glob(lstm*)' as model=lstm,lstm_cec,...
    try:
        main()
    except ValueError as e:  # Hydra's own refusal of the flags, e.g. -m together with --cfg
        if not str(e).startswith("Only one of --run, --multirun"):
            raise
        sys.exit(f"error: {e} (print one job's config: study-run --cfg job KEY=VALUE ...)")
    except KeyboardInterrupt:
        last = getattr(SweepSummary, "last", None)
        if last is not None:
            last.report(last.config)
        sys.exit("interrupted: rerun the same command to resume")
    if SweepSummary.failed:
        sys.exit(1)  # the summary above names the runs that failed


if __name__ == "__main__":
    cli()
