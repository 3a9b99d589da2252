"""Distillation throughput: the engine's step against the study's training step.

Both run on full-size architectures built from the real configurations with
random weights (nothing is downloaded): the CLIP ViT-L/14 text tower of SD
v1.4 as teacher, and CLIP or klue/roberta-small as student. The reference
reproduces the study's step: fp32, a teacher forward that builds a graph,
separate student passes for en and ko, and three ``.cpu().numpy()`` calls.

``run_bench`` times the two loops in alternating blocks and reports the
spread of their paired ratios, or says that the spread is too wide to
conclude; on a CPU it counts the process's CPU time of one thread, which
other work on the machine does not stretch. In the same run it measures the
machine's matmul peak and reports each loop's model-FLOPs utilisation.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

from .distill import (TARGETS, distill_step, make_accelerator, make_optimizer, mixed_precision, step_width,
                      teacher_batch, teacher_dtype)
from .profiles import auto_device

CLIP_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                     projection_dim=768, pad_token_id=49407, bos_token_id=49406, eos_token_id=49407)
KLUE_ROBERTA_SMALL = dict(vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=6,
                          num_attention_heads=12, max_position_embeddings=514, type_vocab_size=1,
                          pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5)
# small stand-ins with the same structure, for tests
TINY_TEXT = dict(CLIP_L14_TEXT, vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, projection_dim=64, pad_token_id=999, bos_token_id=998, eos_token_id=999)
TINY_ROBERTA = dict(KLUE_ROBERTA_SMALL, vocab_size=1000, hidden_size=64, intermediate_size=128,
                    num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=80)


def build_configs(experiment: str, size: str = "full"):
    """``(teacher_config, student_config)``: the real (or tiny) configurations, no weights."""
    from transformers import CLIPTextConfig, RobertaConfig

    text, roberta = (CLIP_L14_TEXT, KLUE_ROBERTA_SMALL) if size == "full" else (TINY_TEXT, TINY_ROBERTA)
    return CLIPTextConfig(**text), CLIPTextConfig(**text) if experiment == "clip" else RobertaConfig(**roberta)


def build_models(experiment: str, size: str = "full"):
    """``(teacher, student)`` with random weights from the real (or tiny) configurations."""
    from transformers import CLIPTextModel, RobertaModel

    teacher_config, student_config = build_configs(experiment, size)
    torch.manual_seed(0)
    teacher = CLIPTextModel(teacher_config)
    if experiment == "clip":
        student = CLIPTextModel(student_config)
    else:
        student = RobertaModel(student_config)
        student.config.use_attention_mask = True
    return teacher, student


def _batch(teacher, student, batch_size: int, max_length: int = 77):
    """Random token ids with realistic lengths, padded to 77 as the tokenizers pad, on the CPU.

    The teacher's rows are ``<bos> words <eos>`` padded with ``<eos>`` (SD's
    tokenizer pads with its end token); the student's are padded with id 1.
    Returns ``(teacher_ids, en_ids, ko_ids, mask)``; all share the mask.
    """
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 40, (batch_size,), generator=g)
    positions = torch.arange(max_length)[None]
    mask = (positions < lengths[:, None]).long()
    bos, eos = teacher.config.bos_token_id, teacher.config.eos_token_id
    words = torch.randint(0, min(bos, eos), (batch_size, max_length), generator=g)
    t_ids = torch.where(positions == 0, bos, torch.where(positions < lengths[:, None] - 1, words, eos))
    s_vocab = student.config.vocab_size - 5
    en = torch.randint(5, s_vocab, (batch_size, max_length), generator=g) * mask + (1 - mask)
    ko = torch.randint(5, s_vocab, (batch_size, max_length), generator=g) * mask + (1 - mask)
    return t_ids, en, ko, mask


def _peak_start(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        import ctypes
        import gc

        gc.collect()
        try:  # hand memory freed by earlier runs back to the OS, then reset the peak resident memory (Linux)
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
        except (OSError, AttributeError):
            pass


def _peak_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 1024 ** 3
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024 ** 2
    except OSError:
        pass
    return None


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and how many threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


# ------------------------------------------------------------- the two loops
def _reference(experiment: str, batch_size: int, device: torch.device, size: str) -> dict:
    """The study's models, optimizer and batch, set up as its script sets them up."""
    from transformers import get_cosine_schedule_with_warmup

    teacher, student = build_models(experiment, size)
    teacher.to(device).eval()  # parameters keep requires_grad, as in the study
    student.to(device).train()
    opt = torch.optim.AdamW(student.parameters(), lr=5e-5, weight_decay=1e-4)
    sched = get_cosine_schedule_with_warmup(opt, 10, 10 ** 6)
    t_ids, en, ko, mask = (x.to(device) for x in _batch(teacher, student, batch_size))
    return dict(teacher=teacher, student=student, optimizer=opt, scheduler=sched,
                pooled=TARGETS[experiment] == "pooled",
                use_mask=bool(getattr(student.config, "use_attention_mask", False)), t_ids=t_ids, en=en, ko=ko,
                mask=mask, device=device)


def reference_step(r: dict) -> None:
    """One step of the study's loop: fp32, a teacher forward that builds a graph, en and ko passes apart,
    three ``.cpu().numpy()`` host syncs."""
    gt = r["teacher"](r["t_ids"])
    embed_gt = gt.pooler_output if r["pooled"] else gt[0]
    mask = r["mask"] if r["use_mask"] else None
    out_en = r["student"](r["en"], attention_mask=mask)
    out_ko = r["student"](r["ko"], attention_mask=mask)
    embed_en = out_en.pooler_output if r["pooled"] else out_en[0]
    embed_ko = out_ko.pooler_output if r["pooled"] else out_ko[0]
    loss_en = F.mse_loss(embed_en, embed_gt.detach())
    loss_ko = F.mse_loss(embed_ko, embed_gt.detach())
    loss = loss_en + loss_ko
    r["optimizer"].zero_grad()
    loss.backward()
    r["optimizer"].step()
    r["scheduler"].step()
    for value in (loss, loss_en, loss_ko):
        value.detach().cpu().numpy()


def _engine(experiment: str, batch_size: int, device: torch.device, size: str, precision: str = "auto") -> dict:
    """Models, optimizer and one batch set up as the engine sets them up on ``device``.

    ``precision`` is the profile setting (``auto`` by default): the student's
    autocast and the teacher's dtype follow from it as in ``setup_run``.
    """
    from transformers import get_cosine_schedule_with_warmup

    precision = mixed_precision(device, precision)
    accelerator = make_accelerator(device, precision)
    teacher, student = build_models(experiment, size)
    teacher.requires_grad_(False).eval().to(device, teacher_dtype(device, precision))
    student.to(device).train()
    target = TARGETS[experiment]
    opt = make_optimizer(student, target, 5e-5, 1e-4, device)
    sched = get_cosine_schedule_with_warmup(opt, 10, 10 ** 6)
    t_ids, en, ko, mask = _batch(teacher, student, batch_size)
    student, opt = accelerator.prepare(student, opt)
    # as in the engine: pre-tokenised ids live on the device, so a step copies nothing from the host
    return dict(accelerator=accelerator, teacher=teacher, student=student, optimizer=opt, scheduler=sched,
                target=target, width=step_width(student, target, mask.sum(1)),
                teacher_width=step_width(teacher, target, mask.sum(1)), t_ids=t_ids.to(device),
                ids=torch.cat([en, ko]).to(device), mask=torch.cat([mask, mask]).to(device),
                precision=precision, teacher_dtype=teacher_dtype(device, precision),
                running=torch.zeros(3, device=device))


def fast_step(e: dict) -> None:
    """One step of the engine's loop (``distill_step``); the losses stay on the device."""
    target_batch = teacher_batch(e["teacher"], e["t_ids"], e["target"], e["teacher_width"])
    e["running"] += distill_step(e["student"], e["optimizer"], e["scheduler"], e["accelerator"], e["ids"], e["mask"],
                                 target_batch, e["target"], width=e["width"])


def _timed_block(step, state: dict, steps: int, device: torch.device) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` per step over ``steps`` back-to-back steps (a sync at each end)."""
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
    from .precision import cpu_bf16_supported

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


def run_bench(experiments=("clip", "roberta", "roberta_pooler"), *, device: str | None = None,
              batch_size: int | None = None, steps: int | None = None, warmup: int | None = None,
              repeats: int | None = None, seconds: float | None = None, precision: str = "auto",
              threads: int | None = None, clock: str | None = None,
              size: str = "full", max_spread: float = MAX_SPREAD, peaks: bool | dict = True,
              estimate: bool | None = None,
              output: str | Path | None = None, progress=None) -> list[dict]:
    """Both loops per experiment, interleaved, with the spread of their ratio; writes JSON if ``output``.

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
    dev = torch.device(device or auto_device())
    defaults = GPU_DEFAULTS if dev.type in ("cuda", "mps") else CPU_DEFAULTS
    batch_size = batch_size or defaults["batch_size"]
    warmup = defaults["warmup"] if warmup is None else warmup
    repeats = repeats or defaults["repeats"]
    seconds = seconds or defaults["seconds"]
    estimate = dev.type == "cpu" if estimate is None else estimate
    clock = clock or defaults["clock"]
    if clock not in CLOCKS or (clock == "cpu" and dev.type != "cpu"):
        raise ValueError(f"clock must be one of {CLOCKS} ('cpu' only on a CPU), not {clock!r}")
    threads = threads or defaults["threads"]
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_bench(experiments, dev, defaults, batch_size, steps, warmup, repeats, seconds, precision, clock,
                          size, max_spread, peaks, estimate, output, progress or (lambda text: None))
    finally:
        torch.set_num_threads(saved_threads)


def _run_bench(experiments, dev, defaults, batch_size, steps, warmup, repeats, seconds, precision, clock, size,
               max_spread, peaks, estimate, output, say) -> list[dict]:
    load_before = _load()
    peak = peaks if isinstance(peaks, dict) else (machine_peaks(dev, clock=clock) if peaks else {})
    rows = []
    for experiment in experiments:
        say(f"{experiment}: building both loops")
        _peak_start(dev)
        ref = _reference(experiment, batch_size, dev, size)
        eng = _engine(experiment, batch_size, dev, size, precision)
        loops = {"reference": (reference_step, ref), "fast": (fast_step, eng)}
        n_steps, times, walls = _paired_blocks(experiment, loops, dev, defaults, steps, warmup, repeats, seconds,
                                               clock, say)
        row = {"experiment": experiment, "device": device_name(dev), "batch_size": batch_size, "repeats": repeats,
               "warmup": warmup, "steps": n_steps, "block_seconds": seconds, "clock": clock,
               "threads": torch.get_num_threads(), **_ratios(times, walls, batch_size, max_spread, eng),
               "peak_gb": _peak_gb(dev)}
        _add_flops(row, experiment, ref, eng, peak)
        del loops, ref, eng
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if estimate:  # no GPU to measure: count the tensors a CUDA step at the study's batch keeps alive
            say(f"{experiment}: estimating GPU memory at batch 32")
            row["gpu_estimate_peak_gb"] = estimate_gpu_memory(experiment, 32, size)["peak_gb"]
        rows.append(row)
    for row in rows:
        row["load_average"] = {"before": load_before, "after": _load(), "cpus": os.cpu_count()}
        if peak:
            row["matmul_peak_gflops"] = peak
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def _paired_blocks(experiment, loops, dev, defaults, steps, warmup, repeats, seconds, clock, say):
    """Warm both loops up, size their blocks, then time ``repeats`` pairs of blocks taking turns at going first.

    Returns the steps per block and, per loop, the seconds per step of each block (on ``clock``) and on the wall.
    """
    pick = 1 if clock == "cpu" else 0
    step_s = {}
    for name, (step, state) in loops.items():
        for _ in range(max(warmup - 1, 0)):
            step(state)
        step_s[name] = _timed_block(step, state, 1, dev)[pick]  # the last warm-up step sizes the blocks
    n_steps = {name: steps or max(defaults["min_steps"], math.ceil(seconds / step_s[name])) for name in loops}
    times = {name: [] for name in loops}
    walls = {name: [] for name in loops}
    for i in range(repeats):
        for name in ("reference", "fast") if i % 2 == 0 else ("fast", "reference"):
            step, state = loops[name]
            measured = _timed_block(step, state, n_steps[name], dev)
            times[name].append(measured[pick])
            walls[name].append(measured[0])
        say(f"{experiment}: repeat {i + 1}/{repeats}: reference {times['reference'][-1]:.2f} s/step, "
            f"fast {times['fast'][-1]:.2f} s/step ({clock} clock; wall {walls['reference'][-1]:.2f} / "
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
    from .distill import student_loss, update

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


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storage alive while active; ``peak`` is the most seen after any op.

    Storages that exist before (weights, optimizer state, inputs) are passed as
    ``known`` and make up ``base``. Every new storage an op creates is added when
    it appears and subtracted when it is freed. That is what CUDA's
    ``max_memory_allocated`` counts, without the allocator's 512-byte rounding
    and the scratch space inside kernels.
    """

    def __init__(self, known=()):
        super().__init__()
        self._sizes = WeakIdKeyDictionary()
        for t in known:
            self._sizes.setdefault(t.untyped_storage(), t.untyped_storage().nbytes())
        self.base = sum(self._sizes.values())
        self.current = self.peak = self.base

    def _free(self, nbytes: int) -> None:
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage not in self._sizes:
                    self._sizes[storage] = n = storage.nbytes()
                    self.current += n
                    weakref.finalize(storage, self._free, n)
        self.peak = max(self.peak, self.current)
        return out


class _Bf16:
    """Accelerate's bf16 mode reduced to what ``distill_step`` calls (Accelerate allows one precision per process)."""

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def estimate_gpu_memory(experiment: str, batch_size: int = 32, size: str = "full") -> dict:
    """GPU memory one engine step needs, measured on the CPU by counting live tensors.

    Runs ``distill_step`` with the engine's CUDA choices: the teacher in 16 bits
    (bf16 here, the same bytes as the fp16 it gets on CUDA), the student under
    bf16 autocast, fused AdamW, gradients freed after each step. Returns GB
    (2**30 bytes): ``base`` (weights, optimizer state, token ids) and ``peak``
    (the most alive at once during a step). A CUDA run adds the allocator's
    rounding and kernel scratch space, and its context (about 0.5 GB, outside
    PyTorch's counters).
    """
    from torch.optim.lr_scheduler import LambdaLR

    teacher, student = build_models(experiment, size)
    teacher.requires_grad_(False).eval().to(torch.bfloat16)
    student.train()
    target = TARGETS[experiment]
    opt = make_optimizer(student, target, 5e-5, 1e-4, "cpu")  # fused AdamW, as on CUDA
    sched = LambdaLR(opt, lambda _: 1.0)
    t_ids, en, ko, mask = _batch(teacher, student, batch_size)
    ids, masks = torch.cat([en, ko]), torch.cat([mask, mask])
    width = step_width(student, target, mask.sum(1))
    teacher_width = step_width(teacher, target, mask.sum(1))

    def step():
        target_batch = teacher_batch(teacher, t_ids, target, teacher_width)
        distill_step(student, opt, sched, _Bf16(), ids, masks, target_batch, target, width=width)

    step()  # creates the optimizer state, which then lives as long as training does
    known = [*teacher.parameters(), *teacher.buffers(), *student.parameters(), *student.buffers(), t_ids, ids, masks,
             *(v for state in opt.state.values() for v in state.values() if torch.is_tensor(v))]
    with LiveTensorBytes(known) as live:
        step()
    return {"experiment": experiment, "batch_size": batch_size, "base_gb": live.base / 1024 ** 3,
            "peak_gb": live.peak / 1024 ** 3}


def _peaks_line(peak: dict) -> str:
    parts = []
    for name, p in peak.items():
        runs = p["runs"]
        parts.append(f"{name} {p['best']:.0f} GFLOP/s (best of {len(runs)}; {min(runs):.0f}-{max(runs):.0f})")
    n = next(iter(peak.values())).get("n", 2048)
    return f"matmul peak, {n} x {n}, same run: " + ", ".join(parts)


def format_table(rows: list[dict]) -> str:
    """A plain-text report of ``run_bench`` rows: settings, pairs/s min/median/max, the ratio or why there
    is none, FLOP/s and MFU."""
    r0 = rows[0]
    devices = sorted({r["device"] for r in rows})
    precisions = sorted({r.get("fast_precision", "?") for r in rows})
    lines = [f"device: {', '.join(devices)}; reference loop fp32, fast loop {', '.join(precisions)}",
             f"batch {r0['batch_size']}, {r0['threads']} torch thread(s), {r0['clock']} clock"
             f"{' (process CPU time)' if r0['clock'] == 'cpu' else ''}, {r0['warmup']} warm-up steps per loop, "
             f"{r0['repeats']} paired repeats, blocks of about {r0['block_seconds']:g} s taking turns at going first"]
    load = r0.get("load_average") or {}
    if load.get("before") is not None:
        lines.append(f"load average (1 min) before / after: {load['before']:.1f} / {load['after']:.1f} on "
                     f"{load['cpus']} CPUs (above the bench's own threads: other work ran beside it)")
    if r0.get("matmul_peak_gflops"):
        lines.append(_peaks_line(r0["matmul_peak_gflops"]))
    lines.append(f"{'experiment':16} {'steps/block':>11} {'reference pairs/s':>20} {'fast pairs/s':>20}  "
                 f"{'fast / reference':<}")
    lines.append(f"{'':16} {'ref/fast':>11} {'min / median / max':>20} {'min / median / max':>20}")
    for r in rows:
        ref, fast = r["reference_pairs_per_s"], r["fast_pairs_per_s"]
        lines.append(f"{r['experiment']:16} {r['steps']['reference']:>5}/{r['steps']['fast']:<5} "
                     f"{ref['min']:6.2f}/{ref['median']:6.2f}/{ref['max']:6.2f} "
                     f"{fast['min']:6.2f}/{fast['median']:6.2f}/{fast['max']:6.2f}  {r['verdict']}")
    if r0["clock"] == "cpu":
        walls = ", ".join(f"{r['experiment']} {min(r['wall_ratios']):.2f}-{max(r['wall_ratios']):.2f}x" for r in rows)
        lines.append(f"pairs/s per CPU-second of the bench's thread(s); the wall-clock ratios of the same blocks: "
                     f"{walls}")
    lines.append("")
    lines.append(f"{'experiment':16} {'GFLOP/pair ref/fast':>20} {'TFLOP/s ref/fast':>17} "
                 f"{'MFU ref':>12} {'MFU fast':>12} {'peak RSS GB':>11}" +
                 (f" {'est. GPU GB @32':>15}" if any("gpu_estimate_peak_gb" in r for r in rows) else ""))
    for r in rows:
        mfu = {name: ("n/a" if r[f"{name}_mfu"] is None else f"{100 * r[f'{name}_mfu']:.0f}% {r[f'{name}_mfu_of']}")
               for name in ("reference", "fast")}
        rss = "n/a" if r.get("peak_gb") is None else f"{r['peak_gb']:.2f}"
        line = (f"{r['experiment']:16} {r['reference_pair_gflops']:9.1f}/{r['fast_pair_gflops']:<10.1f} "
                f"{r['reference_tflops']:8.3f}/{r['fast_tflops']:<8.3f} {mfu['reference']:>12} {mfu['fast']:>12} "
                f"{rss:>11}")
        if "gpu_estimate_peak_gb" in r:
            line += f" {r['gpu_estimate_peak_gb']:15.2f}"
        lines.append(line)
    lines.append("GFLOP/pair: model FLOPs of one pair at the token columns each loop computes (teacher forward + "
                 "student forward and backward on en and ko); MFU: achieved FLOP/s over the matmul peak of the "
                 "loop's precision; peak RSS: the process, both loops' models resident")
    if any("gpu_estimate_peak_gb" in r for r in rows):
        lines.append("est. GPU GB @32: live tensors of one engine step at batch 32 with CUDA's precision "
                     "(kdutils.bench.estimate_gpu_memory)")
    return "\n".join(lines)


def format_phases(rows: list[dict]) -> str:
    """A plain-text table of ``step_phases`` results: milliseconds and share of the step."""
    lines = [f"{'experiment':16} " + " ".join(f"{name:>22}" for name in PHASES) + f" {'step ms':>9}"]
    for r in rows:
        total = sum(r[name] for name in PHASES)
        cells = " ".join(f"{f'{r[name]:.0f} ms ({100 * r[name] / total:.0f}%)':>22}" for name in PHASES)
        lines.append(f"{r['experiment']:16} {cells} {total:9.0f}")
    return "\n".join(lines)
