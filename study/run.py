"""Command-line entry point: `python -m study.run [-m] [key=value ...]`.

Hydra composes `conf/`; `study.job` does the work. Before Hydra starts, the overrides are checked
by composing the config once, so a malformed override, an unknown model or task, or an impossible
value stops with one line naming the key and what is allowed, and nothing is written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig

from study.job import ConfigError, build, one_line, run_job

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> str:
    hc = HydraConfig.get()
    experiment = hc.runtime.choices.get("experiment") or "default"
    try:
        status = run_job(cfg, experiment, list(hc.overrides.task))
    except ConfigError as e:
        sys.exit(f"error: {e}")
    if status == "failed" and hc.mode == RunMode.RUN:
        sys.exit(1)  # a single run fails loudly; in a sweep the other runs go on
    return status


def precheck(argv: list[str]) -> None:
    """Compose and build the config once per value of every sweep override (the others at their
    first value), so that each bad value is caught; exit with one line on the first error."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Override

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return
    parser, parsed = OverridesParser.create(), []
    for line in args.overrides:
        try:
            parsed += parser.parse_overrides([line])
        except Exception as e:  # hydra's OverrideParseException, or a grammar error
            sys.exit(f"error: malformed override {line!r}: {one_line(e).split(' See https')[0]}")

    def render(o: Override, value) -> str:
        return (
            o.input_line
            if o.is_delete()
            else f"{o.get_key_element()}={o._get_value_element_as_str(value)}"
        )

    choices = [
        list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()] for o in parsed
    ]
    base = [render(o, c[0]) for o, c in zip(parsed, choices)]
    variants = [base] + [
        base[:i] + [render(o, v)] + base[i + 1 :]
        for i, (o, c) in enumerate(zip(parsed, choices))
        for v in c[1:]
    ]
    for overrides in variants:
        try:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
            build(cfg)
        except MissingConfigException as e:
            group, _, name = (e.missing_cfg_file or "?/?").rpartition("/")
            allowed = ", ".join(e.options or [])
            sys.exit(f"error: {group}={name} is unknown: allowed {allowed}")
        except ConfigError as e:
            sys.exit(f"error: {e}")
        except Exception as e:
            sys.exit(f"error: {one_line(e)}")


if __name__ == "__main__":
    precheck(sys.argv[1:])
    main()
