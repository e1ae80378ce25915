"""The private Hydra APIs the study relies on, in one place (hydra-core 1.3; pinned below 1.4
in pyproject.toml), each with why no public one serves. A Hydra upgrade that moves them breaks
this module only; tests/test_architecture.py keeps every other module off `hydra._internal`.
"""

from __future__ import annotations

import argparse

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.types import Override


def command_line(argv: list[str]) -> argparse.Namespace:
    """Hydra's own parse of a command line (--help, -m, --cfg, the overrides): the study checks
    a sweep before Hydra starts it, and must read the line exactly as Hydra will."""
    args, _ = get_args_parser().parse_known_args(argv)
    return args


def sweep_jobs_of(parsed: list[Override]) -> list[list[str]]:
    """The jobs of parsed sweep overrides in the order Hydra's basic sweeper runs them: the
    summary and the prechecks name the same run directories the launched jobs will."""
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def value_text(override: Override, value) -> str:
    """One element of a sweep override as Hydra writes it on a job's command line (quoting and
    escapes included): the public API renders only the override's whole value."""
    return override._get_value_element_as_str(value)
