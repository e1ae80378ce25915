"""Benchmark: ms per training step for each cell and path, seed ensembles, probe overhead,
memory, parallel workers, gradient-path cuts.

    python -m study_bench                  # every table (about 25 minutes on 2 cores)
    python -m study_bench --quick          # one small size per table, to check that it runs
    python -m study_bench --only targets,ensemble

Prints tables and writes CSVs under results/bench/. One thread per process. A training step is
forward + MSE + backward + Adam on the adding problem; times are medians of repeated steps after
warm-up. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from study.model import build_model, count_params, matched_hidden_size
from study.model.ensemble import Ensemble, Single
from study.probes import ProbeSettings, run_probes
from study.read.results import writable_or_exit
from study.runs import allocator
from study.tasks.adding import Adding
from study.train import TrainSettings, train, train_step

CELLS = ("rnn", "lstm", "gru")
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
CLIP = TrainSettings().clip_norm  # the training default: every timed step clips as training does
TABLES = ("targets", "speed", "ensemble", "probes", "memory", "workers", "scan", "cuts")
TABLES += ("lstm1997", "readers", "study_ensemble")
# every cell of the study, and the LRU in 2 GLU blocks ("cell:block", study/model/block.py)
STUDY_CELLS = ("rnn", "lstm", "gru", "mingru", "minlstm", "lru", "lru:glu")
PATHS = ("native", "explicit", "fast")


def _setup(cell: str, H: int, B: int, T: int, impl: str, device: str = "cpu"):
    torch.manual_seed(0)
    task = Adding(T)
    model = build_model(cell, 2, 1, hidden_size=H, impl=impl).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = task.sample(B, torch.Generator().manual_seed(0)).to(device)
    return task, model, opt, batch


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_ms(cell, H, B, T, impl, repeats, device="cpu") -> float:
    """Median wall time of one training step, in ms."""
    task, model, opt, batch = _setup(cell, H, B, T, impl, device)

    def step():
        train_step(Single(model), task, opt, [batch], CLIP)

    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _size(cell: str, H: int, B: int, T: int) -> dict:
    return {"cell": cell, "H": H, "B": B, "T": T}


def interleaved_ms(steps: dict, repeats: int, warmup: int, device: str) -> dict[str, float]:
    """Median ms of each step function, the functions taking turns (a, b, a, b, ...) so that
    drift in the machine's speed affects them alike; the first `warmup` rounds are not timed."""
    times = {name: [] for name in steps}
    for r in range(warmup + repeats):
        for name, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            step()
            _sync(device)
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def targets_table(H=128, B=64, T=200, repeats=15, device="cpu") -> pd.DataFrame:
    """Fast versus native at the size the targets are stated for, the two paths' steps
    interleaved (native, fast, native, ...) so that drift in the machine's speed cancels."""
    rows = []
    for cell in CELLS:
        runs = {impl: _setup(cell, H, B, T, impl, device) for impl in ("native", "fast")}

        def step(impl, runs=runs):
            task, model, opt, batch = runs[impl]
            train_step(Single(model), task, opt, [batch], CLIP)

        steps = {impl: functools.partial(step, impl) for impl in runs}
        ms = interleaved_ms(steps, repeats, warmup=2, device=device)
        native, fast = ms["native"], ms["fast"]
        rows.append(
            {
                **_size(cell, H, B, T),
                "native_ms": native,
                "fast_ms": fast,
                "fast/native": fast / native,
            }
        )
        print(
            f"  {cell}: native {native:.1f} ms, fast {fast:.1f} ms, ratio {fast / native:.3f}",
            flush=True,
        )
    return pd.DataFrame(rows)


def _one_by_one(task, singles, optimizers, batches) -> None:
    for single, opt, batch in zip(singles, optimizers, batches):
        train_step(single, task, opt, [batch], CLIP)


RECURRENT_BLOCKS = {"rnn": 1, "lstm": 4, "gru": 3}  # H x H blocks of W_hh in one step


def recurrent_gflop(cell: str, H: int, B: int, T: int) -> float:
    """GFLOP of the recurrent matmuls in one training step of one model: h_{t-1} W_hh^T forward
    (2 B H x GH per step) and twice that backward (dL/dh_{t-1} and dL/dW_hh), so 6 B H G H T;
    NaN for the cells without W_hh (their recurrence is elementwise)."""
    G = RECURRENT_BLOCKS.get(cell)
    return float("nan") if G is None else 6 * B * H * G * H * T / 1e9


def sgemm_gflops(device: str = "cpu", n: int = 1024, repeats: int = 5) -> float:
    """GFLOP/s of one large float32 matmul (n x n by n x n) in this process, on its threads:
    the roofline the recurrent matmuls are measured against."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    ms = interleaved_ms({"sgemm": lambda: a @ b}, repeats, warmup=1, device=device)["sgemm"]
    return 2 * n**3 / (ms / 1e3) / 1e9


def ensemble_table(sizes, E=8, repeats=5, device="cpu", cells=CELLS) -> pd.DataFrame:
    """E seeds trained one after another (each a Single on the fast path) against one Ensemble
    of E stacked members; the two interleaved. gain = E x single step / ensemble step. A cell
    "name:block" is that cell in 2 blocks of that kind. Beside them the recurrent matmuls'
    achieved GFLOP/s in the ensemble and one large sgemm's in the same process (the roofline)."""
    rows, peak = [], sgemm_gflops(device)
    for spec, (H, B, T) in itertools.product(cells, sizes):
        cell, _, block = spec.partition(":")
        stack = {"block": block, "layers": 2} if block else {}
        task = Adding(T)
        gens = [torch.Generator().manual_seed(seed) for seed in range(E)]
        batches = [task.sample(B, g).to(device) for g in gens]
        models = []
        for seed in range(E):
            torch.manual_seed(seed)
            models.append(build_model(cell, 2, 1, hidden_size=H, **stack).to(device))
        singles = [Single(m) for m in models]
        single_opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in models]
        ensemble = Ensemble(models).to(device)
        ensemble_opt = torch.optim.Adam(ensemble.parameters(), lr=1e-3)

        steps = {
            "single": functools.partial(_one_by_one, task, singles, single_opts, batches),
            "ensemble": functools.partial(train_step, ensemble, task, ensemble_opt, batches, CLIP),
        }
        if hasattr(models[0].cell, "stacked_scan"):  # the stacked scan, taken or not here
            stacked = Ensemble([copy.deepcopy(m) for m in models], stack_scans=True).to(device)
            opt = torch.optim.Adam(stacked.parameters(), lr=1e-3)
            steps["stacked"] = functools.partial(train_step, stacked, task, opt, batches, CLIP)
        ms = interleaved_ms(steps, repeats, warmup=1, device=device)
        one, ens = ms["single"], ms["ensemble"]
        rows.append(
            {
                **_size(spec, H, B, T),
                "E": E,
                "single_ms_per_member": one / E,
                "ensemble_ms_per_member": ens / E,
                "gain": one / ens,
                "stacked_scan_gain": one / ms["stacked"] if "stacked" in ms else float("nan"),
                "recurrent_gflops": recurrent_gflop(spec, H, B, T) / (ens / E / 1e3),
                "sgemm_gflops": peak,
            }
        )
        print(
            f"  {spec:7s} H={H:<3d} B={B:<3d} T={T:<3d} E={E}: {E} singles {one:7.1f} ms, "
            f"ensemble {ens:7.1f} ms, gain {one / ens:.2f}x",
            flush=True,
        )
    return pd.DataFrame(rows)


CUT_ARMS = [("rnn", "hidden"), ("lstm", "cell"), ("lstm", "hidden"), ("gru", "linear")]
CUT_ARMS += [("gru", "hidden"), ("mingru", "linear"), ("minlstm", "linear"), ("lru", "linear")]


def _members(cell: str, cut: str | None, H: int, E: int, device: str) -> list:
    models = []
    for seed in range(E):
        torch.manual_seed(seed)
        models.append(build_model(cell, 2, 1, hidden_size=H, cut=cut).to(device))
    return models


def cuts_table(sizes, E=5, repeats=5, device="cpu") -> pd.DataFrame:
    """A gradient-path cut against the same cell uncut (study/model/cut.py), each as one model and
    as a stacked ensemble of E, the four steps interleaved. A cut takes the whole-sequence Function
    (or the scan's step loop) where the uncut cell may take torch.nn's fused kernel (the LSTM on
    CPU), so `cut/uncut` is what the causal test pays for keeping the forward pass."""
    rows = []
    for (cell, cut), (H, B, T) in itertools.product(CUT_ARMS, sizes):
        task = Adding(T)
        batches = [task.sample(B, torch.Generator().manual_seed(s)).to(device) for s in range(E)]
        steps = {}
        for arm in (None, cut):
            single = Single(_members(cell, arm, H, 1, device)[0])
            ensemble = Ensemble(_members(cell, arm, H, E, device)).to(device)
            for name, members, data in (("single", single, batches[:1]), ("ensemble", ensemble,
                                        batches)):  # fmt: skip
                opt = torch.optim.Adam(members.parameters(), lr=1e-3)
                steps[(arm, name)] = functools.partial(train_step, members, task, opt, data, CLIP)
        ms = interleaved_ms(steps, repeats, warmup=1, device=device)
        row = {**_size(cell, H, B, T), "cut": cut, "E": E}
        row |= {"uncut_ms": ms[(None, "single")], "cut_ms": ms[(cut, "single")]}
        row |= {"uncut_ensemble_ms_per_member": ms[(None, "ensemble")] / E}
        row |= {"cut_ensemble_ms_per_member": ms[(cut, "ensemble")] / E}
        row["cut/uncut"] = row["cut_ms"] / row["uncut_ms"]
        row["cut_ensemble_gain"] = row["cut_ms"] / row["cut_ensemble_ms_per_member"]
        rows.append(row)
        print(
            f"  {cell:7s} cut={cut:6s} H={H} T={T}: uncut {row['uncut_ms']:.1f} ms, cut"
            f" {row['cut_ms']:.1f} ms ({row['cut/uncut']:.2f}x); ensemble of {E}: cut"
            f" {row['cut_ensemble_ms_per_member']:.1f} ms per member",
            flush=True,
        )
    return pd.DataFrame(rows)


def lstm1997_table(H=32, B=32, T=100, E=5, repeats=5, device="cpu") -> pd.DataFrame:
    """The 1997 LSTM (no forget gate, the paper's input-gate biases) on the 1997 adding problem
    (left-padded, lengths T..T + T/10): the explicit loop it took before, against LSTMSequence
    (f = 1, the padding mask), each as one model and as an ensemble of E, uncut and with the
    hidden cut (the paper's truncated gradient); the steps interleaved."""
    task = Adding(T, variant="hochreiter1997")
    batches = [task.sample(B, torch.Generator().manual_seed(s)).to(device) for s in range(E)]
    steps = {}
    for impl, cut, members in itertools.product(("explicit", "fast"), (None, "hidden"), (1, E)):
        models = []
        for seed in range(members):
            torch.manual_seed(seed)
            options = dict(forget_gate=False, input_bias=[-3, -6], impl=impl, cut=cut)
            models.append(build_model("lstm", 2, 1, hidden_size=H, **options).to(device))
        m = Single(models[0]) if members == 1 else Ensemble(models).to(device)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        steps[(impl, cut, members)] = functools.partial(
            train_step, m, task, opt, batches[:members], CLIP
        )
    ms = interleaved_ms(steps, repeats, warmup=1, device=device)
    rows = []
    for (impl, cut, members), t in ms.items():
        row = {**_size("lstm1997", H, B, T), "impl": impl, "cut": cut or "none", "E": members}
        rows.append(row | {"ms_per_step": t, "ms_per_member_step": t / members})
        per = f"{t:.1f} ms, {t / members:.1f} ms per member"
        print(f"  {impl:8s} cut={cut or 'none':6s} E={members}: {per}", flush=True)
    return pd.DataFrame(rows)


def probe_ms(cell, H, B, T, settings: ProbeSettings, jacobians: bool, repeats=3) -> float:
    """Median ms of one probe (run_probes) of a model at initialisation, after one warm-up."""
    task, model, _, batch = _setup(cell, H, B, T, "fast")
    run_probes(model, task, batch, 0, settings, jacobians)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_probes(model, task, batch, 0, settings, jacobians)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def speed_table(Hs, Bs, Ts, repeats, device="cpu") -> pd.DataFrame:
    rows = []
    for cell, H, B, T in itertools.product(CELLS, Hs, Bs, Ts):
        ms = {p: step_ms(cell, H, B, T, p, repeats, device) for p in PATHS}
        for p in PATHS:
            rows.append(
                {
                    "cell": cell,
                    "H": H,
                    "B": B,
                    "T": T,
                    "path": p,
                    "ms_per_step": ms[p],
                    "ratio_to_native": ms[p] / ms["native"],
                }
            )
        print(
            f"  {cell:4s} H={H:<3d} B={B:<3d} T={T:<3d} "
            + "  ".join(f"{p} {ms[p]:8.1f} ms" for p in PATHS),
            flush=True,
        )
    return pd.DataFrame(rows)


def scan_table(T: int, B: int, H_rnn: int, repeats: int, device="cpu") -> pd.DataFrame:
    """The linear-recurrence cells at a long T: their parallel scan (impl=fast) against their
    step loop (impl=explicit), beside the fast tanh RNN (cuDNN on CUDA), every model at the
    RNN's parameter count at H_rnn (match_params)."""
    target = count_params("rnn", 2, H_rnn, 1)
    rnn = step_ms("rnn", H_rnn, B, T, "fast", repeats, device)
    rows = [{"cell": "rnn", "H": H_rnn, "n_params": target, "path": "fast", "ms_per_step": rnn}]
    print(f"  rnn     H={H_rnn:<3d} fast {rnn:8.1f} ms", flush=True)
    for cell in ("mingru", "minlstm", "lru"):
        H = matched_hidden_size(cell, 2, 1, target)
        n = count_params(cell, 2, H, 1)
        ms = {
            path: step_ms(cell, H, B, T, impl, repeats, device) for path, impl in PARALLEL.items()
        }
        for path, value in ms.items():
            rows.append({"cell": cell, "H": H, "n_params": n, "path": path, "ms_per_step": value})
        print(
            f"  {cell:7s} H={H:<3d} scan {ms['scan']:8.1f} ms  loop {ms['loop']:8.1f} ms",
            flush=True,
        )
    df = pd.DataFrame(rows).assign(B=B, T=T)
    return df.assign(ratio_to_rnn=df.ms_per_step / rnn)


PARALLEL = {"scan": "fast", "loop": "explicit"}  # path name -> model.impl


def run_s(cell, H, B, T, steps, log_every, probes: ProbeSettings) -> float:
    """Wall time of a whole training run (study.train.train), evaluation on 1000 sequences."""
    torch.manual_seed(0)
    model = build_model(cell, 2, 1, hidden_size=H)
    settings = TrainSettings(
        steps=steps, batch_size=B, log_every=log_every, eval_size=1000, checkpoint_every=0
    )
    t0 = time.perf_counter()
    train(Single(model), Adding(T), ADAM, settings, [0], probes=probes, progress=False)
    return time.perf_counter() - t0


def probe_table(H, B, T, log_every=100, steps=2000, repeats=5, snr_batches=8) -> pd.DataFrame:
    """Per-probe cost, and the overhead of the default schedule on a whole run of `steps` steps
    (the default run: 2000): light probes every `log_every` steps, the Jacobian probes (exact
    Jacobian spectra and Lyapunov exponents of 2 examples) at step 0, every 1000 steps and the
    last. Derived from the per-step and per-probe costs, and measured: the run with the default
    probes against the same run probed only at its ends, light probes only. The gradient SNR
    (off by default) is timed on its own, at `snr_batches` minibatches."""
    rows = []
    default, light_only = ProbeSettings(), ProbeSettings(every=10**9, jacobian_examples=0)
    for cell in CELLS:
        step = step_ms(cell, H, B, T, "fast", repeats)
        light = probe_ms(cell, H, B, T, default, jacobians=False)
        costly = probe_ms(cell, H, B, T, default, jacobians=True)  # the CSV: probe_ms_costly
        snr = probe_ms(
            cell, H, B, T, ProbeSettings(jacobian_examples=0, snr_batches=snr_batches), True
        )
        n_probes = len({0, steps, *range(0, steps, log_every)})
        n_costly = len({0, steps, *range(0, steps, default.jacobian_every)})
        base = steps * step
        probed = run_s(cell, H, B, T, steps, log_every, default)
        ends_only = run_s(cell, H, B, T, steps, log_every, light_only)
        rows.append(
            {
                **_size(cell, H, B, T),
                "step_ms": step,
                "probe_ms_light": light,
                "probe_ms_costly": costly,
                f"probe_ms_snr{snr_batches}": snr,
                "run_steps": steps,
                "jacobian_overhead": n_costly * (costly - light) / base,
                "run_overhead": 1 + (n_probes * light + n_costly * (costly - light)) / base,
                "run_s_probed": probed,
                "run_s_ends_only": ends_only,
                "run_overhead_measured": probed / ends_only,
            }
        )
        print(
            f"  {cell}: probe {light:.0f} ms light, {costly:.0f} ms with the Jacobian spectra,"
            f" SNR {snr:.0f} ms; whole run {probed:.1f} s probed, {ends_only:.1f} s at the ends",
            flush=True,
        )
    return pd.DataFrame(rows)


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB -> MiB
    return float("nan")


def _peak_rss_worker(args, queue) -> None:
    cell, H, B, T, probe = args
    allocator.configure(1)
    task, model, opt, batch = _setup(cell, H, B, T, "fast")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    before = _rss_mib("VmRSS")
    train_step(Single(model), task, opt, [batch], CLIP)
    if probe:
        run_probes(model, task, batch, 0, ProbeSettings())
    queue.put(_rss_mib("VmHWM") - before)


def memory_table(cell, H, B, Ts) -> pd.DataFrame:
    """Peak resident memory (MiB above the process before the step) of one training step, and of
    one step plus the probes, each T measured in a fresh process (Linux /proc)."""
    ctx = mp.get_context("spawn")
    rows = []
    for T in Ts:
        for probe in (False, True):
            queue = ctx.Queue()
            proc = ctx.Process(target=_peak_rss_worker, args=((cell, H, B, T, probe), queue))
            proc.start()
            mib = queue.get()
            proc.join()
            rows.append({"cell": cell, "H": H, "B": B, "T": T, "probed": probe, "peak_MiB": mib})
            print(f"  memory {cell} H={H} B={B} T={T} probed={probe}: {mib:.0f} MiB", flush=True)
    return pd.DataFrame(rows)


def _throughput_worker(args, queue) -> None:
    cell, H, B, T, steps = args
    allocator.configure(1)
    task, model, opt, batch = _setup(cell, H, B, T, "fast")
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(Single(model), task, opt, [batch], CLIP)
    queue.put(time.perf_counter() - t0)


def workers_table(cell, H, B, T, steps) -> pd.DataFrame:
    """Throughput of 1 versus 2 one-thread worker processes running side by side."""
    ctx = mp.get_context("spawn")
    rows = []
    for n in (1, 2):
        queue = ctx.Queue()
        procs = [
            ctx.Process(target=_throughput_worker, args=((cell, H, B, T, steps), queue))
            for _ in range(n)
        ]
        for p in procs:
            p.start()
        wall = max(queue.get() for _ in procs)
        for p in procs:
            p.join()
        rows.append({"workers": n, "steps_per_s": n * steps / wall})
    df = pd.DataFrame(rows)
    df["speedup"] = df.steps_per_s / df.steps_per_s.iloc[0]
    return df.assign(cell=cell, H=H, B=B, T=T)


READERS = ("study.read.collect", "study.read.report")  # the readers of every table of every run


def readers_table(results: Path) -> pd.DataFrame:
    """Seconds for study-collect and study-report on a results folder, each as a new process:
    cold (an empty table and figure cache, STUDY_CACHE) and warm (the same command again).
    Their outputs go to a temporary folder; the results folder is only read."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for module in READERS:
            env = {**os.environ, "STUDY_CACHE": str(Path(tmp) / f"cache-{module}")}
            out = Path(tmp) / ("report.html" if module == "study.read.report" else "collected")
            for state in ("cold", "warm"):
                t0 = time.perf_counter()
                cmd = [sys.executable, "-m", module, str(results), "--out", str(out)]
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                rows.append({"reader": "study-" + module.rpartition(".")[2], "cache": state,
                             "seconds": time.perf_counter() - t0})  # fmt: skip
    n = sum(1 for _ in Path(results).rglob("run.json"))
    return pd.DataFrame(rows).assign(results=str(results), runs=n)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="study-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size per table")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="cpu or cuda (the speed, ensemble, targets, scan and cuts tables)",
    )
    parser.add_argument("--out", default="results/bench", help="where the CSVs go")
    parser.add_argument(
        "--results",
        default="results/reference",
        help="the results folder the readers table reads (study-collect, study-report)",
    )
    parser.add_argument(
        "--only", default=",".join(TABLES), help=f"comma-separated subset of {', '.join(TABLES)}"
    )
    args = parser.parse_args(argv)
    only = args.only.split(",")
    if unknown := set(only) - set(TABLES):  # checked before anything is written
        parser.error(
            f"--only: unknown table {', '.join(sorted(unknown))}: allowed {', '.join(TABLES)}"
        )
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device (use cpu)")
    out = writable_or_exit(parser, Path(args.out))
    allocator.configure(1)
    tag = "" if args.device == "cpu" else f"_{args.device}"

    if args.quick:
        grid, repeats, mem_Ts, probe_size, w = ([64], [32], [100]), 3, [100, 200], (64, 32, 100), 20
        run_steps = 40
        ensemble_sizes, E = [(64, 32, 50)], 4
    else:
        grid, repeats = ([64, 128, 256], [32, 128], [100, 500]), 5
        mem_Ts, probe_size, w = [250, 500, 1000], (128, 64, 200), 100
        run_steps = 2000  # the default run, so that the Jacobian schedule is the default's
        ensemble_sizes, E = [(64, 32, 100), (128, 32, 100), (64, 128, 100), (128, 128, 100)], 8

    tables = {}
    if "targets" in only:
        print("targets (H=128, B=64, T=200, interleaved):", flush=True)
        tables[f"targets{tag}"] = targets_table(repeats=3 if args.quick else 15, device=args.device)
    if "speed" in only:
        print("ms per training step (forward + backward + Adam), median:", flush=True)
        tables[f"speed{tag}"] = speed_table(*grid, repeats, args.device)
    if "ensemble" in only:
        print(f"seed ensembles ({E} seeds, interleaved with {E} single runs):", flush=True)
        tables[f"ensemble{tag}"] = ensemble_table(ensemble_sizes, E, repeats, args.device)
    if "study_ensemble" in only:
        sizes, members = ([(8, 8, 30)], 3) if args.quick else ([(32, 32, 200), (64, 32, 1000)], 10)
        print(f"seed ensembles at the study's sizes ({members} seeds, every cell):", flush=True)
        tables[f"study_ensemble{tag}"] = ensemble_table(
            sizes, members, repeats, args.device, STUDY_CELLS
        )
    if args.device == "cpu" and "probes" in only:
        print("probe cost:", flush=True)
        tables["probes"] = probe_table(*probe_size, steps=run_steps)
    if args.device == "cpu" and "memory" in only:
        print("peak memory:", flush=True)
        tables["memory"] = memory_table("lstm", 256, 128, mem_Ts)
    if args.device == "cpu" and "workers" in only:
        print("parallel workers:", flush=True)
        tables["workers"] = workers_table("gru", 128, 64, 200, w)

    if "scan" in only:
        T_scan = 200 if args.quick else 1000
        print(f"parallel scan vs loop at T={T_scan}, matched parameters:", flush=True)
        tables[f"scan{tag}"] = scan_table(T_scan, 32, 64, 3 if args.quick else repeats, args.device)

    if "cuts" in only:
        cut_sizes = [(16, 8, 50)] if args.quick else [(32, 32, 200), (64, 32, 1000)]
        print("gradient-path cuts against the uncut cells (interleaved):", flush=True)
        tables[f"cuts{tag}"] = cuts_table(cut_sizes, 3 if args.quick else 5, repeats, args.device)

    if "lstm1997" in only:
        print("the 1997 LSTM on the 1997 adding problem (left-padded), interleaved:", flush=True)
        size = dict(T=30, E=3, repeats=2) if args.quick else {}
        tables[f"lstm1997{tag}"] = lstm1997_table(device=args.device, **size)

    if "readers" in only and args.device == "cpu":
        if not any(Path(args.results).rglob("run.json")):
            print(f"readers: skipped, no runs under {args.results}", flush=True)
        else:
            print(f"readers on {args.results}, cold and warm cache:", flush=True)
            tables["readers"] = readers_table(Path(args.results))

    meta = f"torch {torch.__version__}, device {args.device}"
    if args.device == "cuda":
        meta += f" ({torch.cuda.get_device_name()})"
    for name, df in tables.items():
        df.to_csv(out / f"{name}.csv", index=False)
        print(f"\n== {name} ({meta}) -> {out / (name + '.csv')}")
        with pd.option_context("display.width", 200, "display.float_format", "{:.3g}".format):
            if name.startswith("speed"):
                wide = df.pivot_table(
                    index=["cell", "H", "B", "T"], columns="path", values="ms_per_step"
                )
                for p in ("explicit", "fast"):
                    wide[f"{p}/native"] = wide[p] / wide["native"]
                print(wide.to_string())
            else:
                print(df.to_string(index=False))
