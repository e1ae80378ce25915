"""The real commands in a child forked from a process that has already imported torch.

`python -m study.run ARGS` spends about 4 s before it trains (the interpreter, torch, Hydra, and
torch._dynamo at the first Adam), and the tests start it a few hundred times. Here a
multiprocessing fork server imports those once, per test worker, and every command is a fresh
child forked from it: its own process, pid, working directory, environment, exit status, and
file descriptors 1 and 2 written to files, running the module (`study.run`, a reader,
`study_bench`) as `python -m` does (`runpy.run_module(..., run_name="__main__")`, so
`sys.argv[0]` is the module's file).

What differs from a new interpreter, and why it does not matter here: the imports are already
done (so a test of what a command imports starts it in a new interpreter: conftest.study_run's
`fresh=True`), and sys.path is the server's with the working directory first (so a command
whose PYTHONPATH differs from the tests' runs in a new interpreter too). The server never runs
torch code: GNU OpenMP's thread pool does not survive a fork, so a child of a process that had
computed with several threads would hang at its first parallel operation.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import subprocess
import sys
from pathlib import Path

# What `python -m study.run` imports before it trains (study.runs.job imports the rest of the
# package, torch and Hydra; the first Adam constructor imports torch._dynamo).
PRELOAD = ["torch", "torch._dynamo", "hydra", "pandas", "study.runs.job", "study.runs.sweep"]

_context = None


def _server():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload([__name__, *PRELOAD])
    return _context


def _child(module: str, argv: list[str], cwd: str, env: dict, out: str, err: str) -> None:
    """The forked child: the command's file descriptors, directory and environment, then the
    module as __main__; its exit status is the command's."""
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 (the process's)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = [module, *argv]
    sys.path.insert(0, cwd)  # `python -m` puts the working directory first
    sys.modules.pop(module, None)  # preloaded by an import: `python -m` would run it afresh
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # as the interpreter does with sys.exit("message")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def run(module: str, argv: list[str], cwd: Path, env: dict, timeout: float, scratch: Path):
    """`python -m MODULE ARGV` in a forked child: a subprocess.CompletedProcess (text), or
    subprocess.TimeoutExpired after `timeout` seconds (the child is killed)."""
    scratch.mkdir(parents=True, exist_ok=True)
    out, err = scratch / "stdout", scratch / "stderr"
    args = (module, argv, str(cwd), env, str(out), str(err))
    child = _server().Process(target=_child, args=args)
    child.start()
    child.join(timeout)
    cmd = [sys.executable, "-m", module, *argv]
    if child.exitcode is None:
        child.kill()
        child.join()
        raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text())
    return subprocess.CompletedProcess(cmd, child.exitcode, out.read_text(), err.read_text())
