"""Timing the two loops in alternating blocks, counting their FLOPs, and the machine's matmul peak (``run_bench``)."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..distill import TARGETS, teacher_batch
from ..profiles import auto_device
from .loops import _engine, _peak_gb, _peak_start, _reference, _sync, device_name, fast_step, reference_step
from .memory import estimate_gpu_memory


def _timed_block(step, state: dict, steps: int, device: torch.device) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` per step over ``steps`` back-to-back steps (a sync at each end).

    By hand rather than ``torch.utils.benchmark.Timer``: the bench alternates blocks of its two loops and reads
    both clocks over the very same block, where a ``Timer`` reads one clock and sizes its own blocks.
    """
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step(state)
    if "running" in state:
        state["running"].tolist()  # the engine's one host sync, as when logging every N steps
    _sync(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


# --------------------------------------------------------- counting the work
def forward_flops(config, tokens: int) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of one forward pass of a text transformer over ``tokens`` tokens.

    Per layer: the four ``d x d`` projections (q, k, v, out) and the two
    ``d x ff`` MLP matrices on every token, ``2 n (4 d^2 + 2 d ff)``, plus
    attention's two ``n x n x d`` products (scores and the weighted sum),
    ``4 n^2 d``. Embeddings are lookups, and layer norms, softmax and
    activations are a few FLOPs per element: left out (under 1%).
    """
    d, ff, layers, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers, tokens
    return layers * (2 * n * (4 * d * d + 2 * d * ff) + 4 * n * n * d)


def pair_flops(experiment: str, teacher_config, student_config, teacher_tokens: int = 77,
               student_tokens: int = 77) -> float:
    """Model FLOPs one training pair costs: the teacher's forward on English, the student's forward and
    backward (twice the forward) on English and Korean: ``T + 2 x 3 S``.

    RoBERTa's pooler (one ``d x d`` layer on the first token) is counted when
    the experiment trains on it.
    """
    teacher = forward_flops(teacher_config, teacher_tokens)
    student = forward_flops(student_config, student_tokens)
    if TARGETS[experiment] == "pooled" and getattr(student_config, "model_type", "") == "roberta":
        student += 2 * student_config.hidden_size ** 2
    return teacher + 2 * 3 * student


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def peak_dtypes(device: torch.device) -> list[torch.dtype]:
    """The dtypes whose matmul peak the bench measures: fp32, and the 16-bit types the device computes in."""
    from ..precision import cpu_bf16_supported

    if device.type == "cuda":
        return [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.get_device_capability(device) >= (8, 0)
                                                 else [])
    if device.type == "mps":
        return [torch.float32, torch.float16]
    return [torch.float32] + ([torch.bfloat16] if cpu_bf16_supported() else [])


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                seconds: float = 0.5, clock: str = "wall") -> list[float]:
    """GFLOP/s of back-to-back ``n x n`` matmuls, one figure per repeat of about ``seconds`` each.

    The machine's practical limit for the step's matrix work, measured in the
    same process and moment as the step, with the same ``clock`` (``wall``,
    or ``cpu``: the process's CPU time). Background load only lowers a
    figure, so the highest repeat is the best estimate of the peak.
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    flops = 2 * n ** 3
    _sync(device)
    start = now()
    a @ b  # warm-up; also times one product
    _sync(device)
    count = max(1, int(seconds / max(now() - start, 1e-6)))
    rates = []
    for _ in range(repeats):
        _sync(device)
        start = now()
        for _ in range(count):
            a @ b
        _sync(device)
        rates.append(count * flops / max(now() - start, 1e-9) / 1e9)
    return rates


def machine_peaks(device: torch.device, repeats: int = 5, n: int = 2048, seconds: float = 0.5,
                  clock: str = "wall") -> dict[str, dict]:
    """``{"fp32": {"best": GFLOP/s, "runs": [...], "n": n}, "bf16": ...}`` for the dtypes of :func:`peak_dtypes`."""
    out = {}
    for dtype in peak_dtypes(device):
        runs = matmul_peak(device, dtype, n=n, repeats=repeats, seconds=seconds, clock=clock)
        out[_dtype_name(dtype)] = {"best": max(runs), "runs": runs, "n": n}
    return out


def _load() -> float | None:
    """The 1-minute load average (runnable processes, this one included), where the system has one."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _verdict(ratios: list[float], max_spread: float) -> tuple[bool, str]:
    """Whether the paired ratios agree well enough to state one number, and the sentence that says so."""
    if len(ratios) < 2:
        return False, f"{ratios[0]:.2f}x from one repeat: no spread to judge it by (use --repeats 3 or more)"
    mid = statistics.median(ratios)
    half_range = (max(ratios) - min(ratios)) / (2 * mid)
    if min(ratios) <= 1 <= max(ratios):
        return False, (f"inconclusive: the repeats put the ratio on both sides of 1 ({min(ratios):.2f}-"
                       f"{max(ratios):.2f}x); measure longer blocks (--seconds) or more repeats on a quieter machine")
    if half_range > max_spread:
        return False, (f"spread too wide to conclude: {min(ratios):.2f}-{max(ratios):.2f}x (+/-{100 * half_range:.0f}% "
                       f"> {100 * max_spread:.0f}%); measure longer blocks (--seconds) or more repeats on a quieter "
                       f"machine")
    return True, f"{mid:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}, +/-{100 * half_range:.0f}%)"


# On a CPU the bench runs one torch thread and times with the process's CPU time. Background work on a
# 2-core machine time-shares the cores: it stretches wall-clock time (a 1-thread matmul measured 37 instead
# of 110 GFLOP/s of wall time beside two busy processes, while its CPU time still gave 110), and a
# 2-thread step stalls whenever one of its threads waits for a core. CPU time counts only what the bench's
# one thread computed. Blocks of ~10 s and 5 paired repeats then gave ratios within +/-10%
# (README, "성능"); batch 8 keeps the matrices big enough for a steady rate.
CPU_DEFAULTS = dict(batch_size=8, warmup=3, seconds=10.0, repeats=5, min_steps=2, threads=1, clock="cpu")
GPU_DEFAULTS = dict(batch_size=32, warmup=5, seconds=3.0, repeats=5, min_steps=10, threads=None, clock="wall")
MAX_SPREAD = 0.10
CLOCKS = ("cpu", "wall")


@dataclass(frozen=True)
class BenchSettings:
    """How one bench run measures: every setting in one place, the device's defaults filled in and checked.

    ``steps`` per timed block, or (``None``) as many as ``seconds`` takes, at least ``min_steps``; ``threads``
    torch threads (``None``: torch's own); ``estimate``: add the GPU memory counted on the CPU to each row.
    """

    device: torch.device
    batch_size: int
    steps: int | None
    warmup: int
    repeats: int
    seconds: float
    min_steps: int
    precision: str
    threads: int | None
    clock: str
    size: str
    max_spread: float
    estimate: bool

    @classmethod
    def make(cls, device: str | None = None, *, batch_size: int | None = None, steps: int | None = None,
             warmup: int | None = None, repeats: int | None = None, seconds: float | None = None,
             precision: str = "auto", threads: int | None = None, clock: str | None = None, size: str = "full",
             max_spread: float = MAX_SPREAD, estimate: bool | None = None) -> "BenchSettings":
        """The settings given, the rest from ``CPU_DEFAULTS`` or ``GPU_DEFAULTS``; a CPU clock off a CPU is refused."""
        dev = torch.device(device or auto_device())
        defaults = GPU_DEFAULTS if dev.type in ("cuda", "mps") else CPU_DEFAULTS
        clock = clock or defaults["clock"]
        if clock not in CLOCKS or (clock == "cpu" and dev.type != "cpu"):
            raise ValueError(f"clock must be one of {CLOCKS} ('cpu' only on a CPU), not {clock!r}")
        return cls(device=dev, batch_size=batch_size or defaults["batch_size"], steps=steps,
                   warmup=defaults["warmup"] if warmup is None else warmup, repeats=repeats or defaults["repeats"],
                   seconds=seconds or defaults["seconds"], min_steps=defaults["min_steps"], precision=precision,
                   threads=threads or defaults["threads"], clock=clock, size=size, max_spread=max_spread,
                   estimate=dev.type == "cpu" if estimate is None else estimate)


def run_bench(experiments=("clip", "roberta", "roberta_pooler"), settings: BenchSettings | None = None, *,
              peaks: bool | dict = True, output: str | Path | None = None, progress=None, **given) -> list[dict]:
    """Both loops per experiment, interleaved, with the spread of their ratio; writes JSON if ``output``.

    ``settings`` (:class:`BenchSettings`), or its fields as keywords (``device=``, ``batch_size=``, ...).
    Both loops' models stay in memory. After ``warmup`` steps of each, each
    repeat times a block of reference steps and a block of engine steps back
    to back, taking turns at going first (ABBA), and the ratio of the two is
    one paired ratio: a slow spell of the machine hits both blocks of a pair.
    A block has ``steps`` steps, or enough steps to last ``seconds`` (at least
    ``min_steps``), judged from the last warm-up step. On a CPU the bench runs
    ``threads`` torch threads (default 1) and times with ``clock="cpu"``, the
    process's CPU time, which other processes sharing the cores do not stretch;
    ``clock="wall"`` (the GPU default) times wall-clock seconds, and wall-clock
    pairs/s are recorded either way. Reported: min, median
    and max pairs/s of each loop, the paired ratios and a verdict
    (:func:`_verdict`): one number only when the ratios lie within
    ``max_spread`` (half-range over median) and on one side of 1.

    The rows also carry the model FLOPs per pair (:func:`pair_flops`, at the
    token columns each loop computes), the achieved TFLOP/s, and their share
    of the matmul peak measured in the same run (:func:`machine_peaks`; or
    ``peaks`` given as its result) for the loop's precision: the model-FLOPs
    utilisation (MFU). On a CPU, rows
    get ``gpu_estimate_peak_gb`` (``estimate_gpu_memory`` at batch 32) unless
    ``estimate=False``.
    """
    if settings is not None and given:
        raise TypeError(f"pass settings or its fields, not both: {sorted(given)}")
    s = settings or BenchSettings.make(**given)
    saved_threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        return _run_bench(experiments, s, peaks, output, progress or (lambda text: None))
    finally:
        torch.set_num_threads(saved_threads)


def _run_bench(experiments, s: BenchSettings, peaks, output, say) -> list[dict]:
    load_before = _load()
    dev = s.device
    peak = peaks if isinstance(peaks, dict) else (machine_peaks(dev, clock=s.clock) if peaks else {})
    rows = []
    for experiment in experiments:
        say(f"{experiment}: building both loops")
        _peak_start(dev)
        ref = _reference(experiment, s.batch_size, dev, s.size)
        eng = _engine(experiment, s.batch_size, dev, s.size, s.precision)
        loops = {"reference": (reference_step, ref), "fast": (fast_step, eng)}
        n_steps, times, walls = _paired_blocks(experiment, loops, s, say)
        row = {"experiment": experiment, "device": device_name(dev), "batch_size": s.batch_size,
               "repeats": s.repeats, "warmup": s.warmup, "steps": n_steps, "block_seconds": s.seconds,
               "clock": s.clock, "threads": torch.get_num_threads(),
               **_ratios(times, walls, s.batch_size, s.max_spread, eng), "peak_gb": _peak_gb(dev)}
        _add_flops(row, experiment, ref, eng, peak)
        del loops, ref, eng
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if s.estimate:  # no GPU to measure: count the tensors a CUDA step at the study's batch keeps alive
            say(f"{experiment}: estimating GPU memory at batch 32")
            row["gpu_estimate_peak_gb"] = estimate_gpu_memory(experiment, 32, s.size)["peak_gb"]
        rows.append(row)
    for row in rows:
        row["load_average"] = {"before": load_before, "after": _load(), "cpus": os.cpu_count()}
        if peak:
            row["matmul_peak_gflops"] = peak
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _paired_blocks(experiment, loops, s: BenchSettings, say):
    """Warm both loops up, size their blocks, then time ``s.repeats`` pairs of blocks taking turns at going first.

    Returns the steps per block and, per loop, the seconds per step of each block (on ``s.clock``) and on the wall.
    """
    pick = 1 if s.clock == "cpu" else 0
    step_s = {}
    for name, (step, state) in loops.items():
        for _ in range(max(s.warmup - 1, 0)):
            step(state)
        step_s[name] = _timed_block(step, state, 1, s.device)[pick]  # the last warm-up step sizes the blocks
    n_steps = {name: s.steps or max(s.min_steps, math.ceil(s.seconds / step_s[name])) for name in loops}
    times = {name: [] for name in loops}
    walls = {name: [] for name in loops}
    for i in range(s.repeats):
        for name in ("reference", "fast") if i % 2 == 0 else ("fast", "reference"):
            step, state = loops[name]
            measured = _timed_block(step, state, n_steps[name], s.device)
            times[name].append(measured[pick])
            walls[name].append(measured[0])
        say(f"{experiment}: repeat {i + 1}/{s.repeats}: reference {times['reference'][-1]:.2f} s/step, "
            f"fast {times['fast'][-1]:.2f} s/step ({s.clock} clock; wall {walls['reference'][-1]:.2f} / "
            f"{walls['fast'][-1]:.2f})")
    return n_steps, times, walls


def _ratios(times: dict, walls: dict, batch_size: int, max_spread: float, eng: dict) -> dict:
    """Pairs per second of each loop and the paired ratios, with the verdict on their spread."""
    ratios = [r / f for r, f in zip(times["reference"], times["fast"])]
    stable, verdict = _verdict(ratios, max_spread)
    return {"fast_precision": f"student autocast {eng['precision']}, teacher {_dtype_name(eng['teacher_dtype'])}",
            "reference_precision": "fp32",
            "reference_pairs_per_s": _spread([batch_size / t for t in times["reference"]]),
            "fast_pairs_per_s": _spread([batch_size / t for t in times["fast"]]),
            "reference_wall_pairs_per_s": _spread([batch_size / t for t in walls["reference"]]),
            "fast_wall_pairs_per_s": _spread([batch_size / t for t in walls["fast"]]),
            "wall_ratios": [r / f for r, f in zip(walls["reference"], walls["fast"])],
            "ratios": ratios, "speedup": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "stable": stable, "verdict": verdict}


def _add_flops(row: dict, experiment: str, ref: dict, eng: dict, peak: dict) -> None:
    """Each loop's FLOPs per pair, the TFLOP/s it reached and its share of the measured matmul peak (MFU)."""
    teacher_cfg, student_cfg = ref["teacher"].config, ref["student"].config
    widths = {"reference": (77, 77), "fast": (eng["teacher_width"] or 77, eng["width"] or 77)}
    compute = {"reference": "fp32", "fast": {"no": "fp32"}.get(eng["precision"], eng["precision"])}
    for name in ("reference", "fast"):
        flops = pair_flops(experiment, teacher_cfg, student_cfg, *widths[name])
        achieved = flops * row[f"{name}_pairs_per_s"]["median"]
        row[f"{name}_pair_gflops"] = flops / 1e9
        row[f"{name}_tflops"] = achieved / 1e12
        limit = peak.get(compute[name], {}).get("best")
        row[f"{name}_mfu"] = achieved / (limit * 1e9) if limit else None
        row[f"{name}_mfu_of"] = compute[name]


PHASES = ("teacher", "student forward", "backward", "optimizer")


def step_phases(experiment: str, batch_size: int | None = None, steps: int = 3, warmup: int = 1,
                device: str | None = None, size: str = "full", precision: str = "auto") -> dict[str, float]:
    """Where the engine's step spends its time: median milliseconds per phase.

    Runs the pieces ``distill_step`` is made of (``teacher_batch``,
    ``student_loss``, ``accelerator.backward``, ``update``) with a device
    synchronisation between them, so the phases add up to about one step.
    """
    from ..distill import student_loss, update

    dev = torch.device(device or auto_device())
    batch_size = batch_size or (GPU_DEFAULTS if dev.type in ("cuda", "mps") else CPU_DEFAULTS)["batch_size"]
    e = _engine(experiment, batch_size, dev, size, precision)
    times = {name: [] for name in PHASES}
    for i in range(warmup + steps):
        marks = [time.perf_counter()]

        def mark():
            _sync(dev)
            marks.append(time.perf_counter())

        target_batch = teacher_batch(e["teacher"], e["t_ids"], e["target"], e["teacher_width"])
        mark()
        losses = student_loss(e["student"], e["accelerator"], e["ids"], e["mask"], target_batch, e["target"],
                              width=e["width"])
        mark()
        e["accelerator"].backward(losses[0])
        mark()
        update(e["student"], e["optimizer"], e["scheduler"], e["accelerator"])
        mark()
        if i >= warmup:
            for name, a, b in zip(PHASES, marks, marks[1:]):
                times[name].append(1000 * (b - a))
    return {name: statistics.median(values) for name, values in times.items()}
