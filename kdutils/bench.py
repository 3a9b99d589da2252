"""Distillation throughput: the engine's step against the study's training step.

Both run on full-size architectures built from the real configurations with
random weights (nothing is downloaded): the CLIP ViT-L/14 text tower of SD
v1.4 as teacher, and CLIP or klue/roberta-small as student. The reference
reproduces the study's step: fp32, a teacher forward that builds a graph,
separate student passes for en and ko, and three ``.cpu().numpy()`` calls.
"""

from __future__ import annotations

import json
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


def build_models(experiment: str, size: str = "full"):
    """``(teacher, student)`` with random weights from the real (or tiny) configurations."""
    from transformers import CLIPTextConfig, CLIPTextModel, RobertaConfig, RobertaModel

    text, roberta = (CLIP_L14_TEXT, KLUE_ROBERTA_SMALL) if size == "full" else (TINY_TEXT, TINY_ROBERTA)
    torch.manual_seed(0)
    teacher = CLIPTextModel(CLIPTextConfig(**text))
    if experiment == "clip":
        student = CLIPTextModel(CLIPTextConfig(**text))
    else:
        student = RobertaModel(RobertaConfig(**roberta))
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


def reference_steps(experiment: str, batch_size: int, steps: int, warmup: int, device: torch.device,
                    size: str = "full") -> tuple[float, float | None]:
    """The study's loop: returns (seconds per measured step, peak GB)."""
    from transformers import get_cosine_schedule_with_warmup

    teacher, student = build_models(experiment, size)
    teacher.to(device).eval()  # parameters keep requires_grad, as in the study
    student.to(device).train()
    pooled = TARGETS[experiment] == "pooled"
    opt = torch.optim.AdamW(student.parameters(), lr=5e-5, weight_decay=1e-4)
    sched = get_cosine_schedule_with_warmup(opt, 10, 1000)
    t_ids, en, ko, mask = (x.to(device) for x in _batch(teacher, student, batch_size))
    use_mask = bool(getattr(student.config, "use_attention_mask", False))
    _peak_start(device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        gt = teacher(t_ids)
        embed_gt = gt.pooler_output if pooled else gt[0]
        out_en = student(en, attention_mask=mask if use_mask else None)
        out_ko = student(ko, attention_mask=mask if use_mask else None)
        embed_en = out_en.pooler_output if pooled else out_en[0]
        embed_ko = out_ko.pooler_output if pooled else out_ko[0]
        loss_en = F.mse_loss(embed_en, embed_gt.detach())
        loss_ko = F.mse_loss(embed_ko, embed_gt.detach())
        loss = loss_en + loss_ko
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        for value in (loss, loss_en, loss_ko):
            value.detach().cpu().numpy()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = _peak_gb(device)
    del teacher, student, opt
    return statistics.median(times), peak


def _engine(experiment: str, batch_size: int, device: torch.device, size: str) -> dict:
    """Models, optimizer and one batch set up as the engine sets them up on ``device``."""
    from transformers import get_cosine_schedule_with_warmup

    accelerator = make_accelerator(device, mixed_precision(device))
    teacher, student = build_models(experiment, size)
    teacher.requires_grad_(False).eval().to(device, teacher_dtype(device))
    student.to(device).train()
    target = TARGETS[experiment]
    opt = make_optimizer(student, target, 5e-5, 1e-4, device)
    sched = get_cosine_schedule_with_warmup(opt, 10, 1000)
    t_ids, en, ko, mask = _batch(teacher, student, batch_size)
    student, opt = accelerator.prepare(student, opt)
    # as in the engine: pre-tokenised ids live on the device, so a step copies nothing from the host
    return dict(accelerator=accelerator, teacher=teacher, student=student, optimizer=opt, scheduler=sched,
                target=target, width=step_width(student, target, mask.sum(1)),
                teacher_width=step_width(teacher, target, mask.sum(1)), t_ids=t_ids.to(device),
                ids=torch.cat([en, ko]).to(device), mask=torch.cat([mask, mask]).to(device))


def fast_steps(experiment: str, batch_size: int, steps: int, warmup: int, device: torch.device,
               size: str = "full") -> tuple[float, float | None]:
    """The engine's step (``distill_step``): returns (seconds per measured step, peak GB)."""
    e = _engine(experiment, batch_size, device, size)
    _peak_start(device)
    times, running = [], torch.zeros(3, device=device)
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        target_batch = teacher_batch(e["teacher"], e["t_ids"], e["target"], e["teacher_width"])
        running += distill_step(e["student"], e["optimizer"], e["scheduler"], e["accelerator"], e["ids"], e["mask"],
                                target_batch, e["target"], width=e["width"])
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    running.tolist()  # the one host sync, as when logging every N steps
    peak = _peak_gb(device)
    del e
    return statistics.median(times), peak


PHASES = ("teacher", "student forward", "backward", "optimizer")


def step_phases(experiment: str, batch_size: int | None = None, steps: int = 3, warmup: int = 1,
                device: str | None = None, size: str = "full") -> dict[str, float]:
    """Where the engine's step spends its time: median milliseconds per phase.

    Runs the pieces ``distill_step`` is made of (``teacher_batch``,
    ``student_loss``, ``accelerator.backward``, ``update``) with a device
    synchronisation between them, so the phases add up to about one step.
    """
    from .distill import student_loss, update

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    batch_size = batch_size or (32 if dev.type == "cuda" else 4)
    e = _engine(experiment, batch_size, dev, size)
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


def run_bench(experiments=("clip", "roberta", "roberta_pooler"), *, device: str | None = None,
              batch_size: int | None = None, steps: int | None = None, warmup: int | None = None,
              repeats: int = 3, size: str = "full", output: str | Path | None = None) -> list[dict]:
    """Median pairs/s and peak memory of both loops per experiment; writes JSON if ``output``.

    Defaults: the study's batch 32 on CUDA (5 warm-up + 20 measured steps);
    batch 4 on CPU (1 + 3 steps). Each loop is measured ``repeats`` times,
    the two loops taking turns. On CPU each row also gets
    ``gpu_estimate_peak_gb``: ``estimate_gpu_memory`` at batch 32.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = dev.type == "cuda"
    batch_size = batch_size or (32 if on_gpu else 4)
    steps = steps or (20 if on_gpu else 3)
    warmup = 5 if warmup is None and on_gpu else (1 if warmup is None else warmup)
    rows = []
    for experiment in experiments:
        row = {"experiment": experiment, "device": device_name(dev), "batch_size": batch_size, "repeats": repeats,
               "fast_precision": f"student autocast {mixed_precision(dev)}, teacher "
                                 f"{str(teacher_dtype(dev)).removeprefix('torch.')}",
               "reference_precision": "fp32"}
        runs = {"reference": [], "fast": []}
        for _ in range(repeats):  # alternate the loops, so a slow spell of the machine hits both
            for name, fn in (("reference", reference_steps), ("fast", fast_steps)):
                runs[name].append(fn(experiment, batch_size, steps, warmup, dev, size))
                if on_gpu:
                    torch.cuda.empty_cache()
        for name, measured in runs.items():
            seconds = statistics.median(r[0] for r in measured)
            peaks = [r[1] for r in measured if r[1] is not None]
            row[f"{name}_pairs_per_s"] = batch_size / seconds
            row[f"{name}_peak_gb"] = max(peaks) if peaks else None
        row["speedup"] = row["fast_pairs_per_s"] / row["reference_pairs_per_s"]
        if not on_gpu:  # no GPU to measure: count the tensors a CUDA step at the study's batch keeps alive
            row["gpu_estimate_peak_gb"] = estimate_gpu_memory(experiment, 32, size)["peak_gb"]
        rows.append(row)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def format_table(rows: list[dict]) -> str:
    """A plain-text table of ``run_bench`` rows, the device on the first line."""
    devices = sorted({r["device"] for r in rows})
    precisions = sorted({r.get("fast_precision", "?") for r in rows})
    lines = [f"device: {', '.join(devices)}; reference loop fp32, fast loop {', '.join(precisions)}",
             f"{'experiment':16} {'batch':>5} {'reference pairs/s':>18} {'fast pairs/s':>13} "
             f"{'speedup':>8} {'ref peak GB':>11} {'fast peak GB':>12}"]
    estimates = any("gpu_estimate_peak_gb" in r for r in rows)
    if estimates:
        lines[1] += f" {'est. GPU GB @32':>15}"
    for r in rows:
        ref_peak = "n/a" if r["reference_peak_gb"] is None else f"{r['reference_peak_gb']:.2f}"
        fast_peak = "n/a" if r["fast_peak_gb"] is None else f"{r['fast_peak_gb']:.2f}"
        line = (f"{r['experiment']:16} {r['batch_size']:5d} "
                f"{r['reference_pairs_per_s']:18.2f} {r['fast_pairs_per_s']:13.2f} {r['speedup']:7.2f}x "
                f"{ref_peak:>11} {fast_peak:>12}")
        if estimates:
            line += f" {r.get('gpu_estimate_peak_gb', float('nan')):15.2f}"
        lines.append(line)
    if estimates:
        lines.append("peak GB on CPU: the process's resident memory; est. GPU GB @32: live tensors of one engine "
                     "step at batch 32 with CUDA's precision (kdutils.bench.estimate_gpu_memory)")
    return "\n".join(lines)


def format_phases(rows: list[dict]) -> str:
    """A plain-text table of ``step_phases`` results: milliseconds and share of the step."""
    lines = [f"{'experiment':16} " + " ".join(f"{name:>22}" for name in PHASES) + f" {'step ms':>9}"]
    for r in rows:
        total = sum(r[name] for name in PHASES)
        cells = " ".join(f"{f'{r[name]:.0f} ms ({100 * r[name] / total:.0f}%)':>22}" for name in PHASES)
        lines.append(f"{r['experiment']:16} {cells} {total:9.0f}")
    return "\n".join(lines)
