"""How big the ``class`` profile can be: minutes and GPU memory per notebook, by arithmetic.

No GPU was at hand where this course was built, so every GPU figure here is an
ESTIMATE. It is made of four things, each written down so that it can be
checked and replaced by a measurement:

1. the model FLOPs one training pair costs, counted from the configurations
   (:func:`kdutils.bench.pair_flops`);
2. the study's own run as a calibration: 1,000,000 pair passes in 3 h 06 m
   (RoBERTa) and 5 h 26 m (CLIP) on an RTX 3060 in fp32 (seed 000), which is
   about 37% of the card's fp32 peak (:func:`calibration`);
3. vendor peak FLOP/s of the GPUs a teacher is likely to get (:data:`GPUS`);
4. an assumed range of model-FLOPs utilisation (MFU) for each GPU, whose low
   end sizes the profile.

The memory side adds the bytes of weights, optimizer state, token ids and the
teacher cache (from parameter counts and the profile), and activation peaks
counted on a CPU with full-size configurations and random weights
(:data:`MEASURED`; :func:`kdutils.bench.estimate_gpu_memory` and
:func:`kdutils.standins.measure_sampling` measure them again, and ``python -m kdutils sizing
--check`` (:mod:`kdutils.standins`) runs both with the class profile's code path at full size).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .profiles import Profile

# ------------------------------------------------------------ the study's run
STUDY_PAIR_PASSES = 1_000_000  # 31,250 steps of 32 pairs (5 epochs of the study's training split)
STUDY_SECONDS = {"clip": 5 * 3600 + 26 * 60 + 12, "roberta": 3 * 3600 + 6 * 60 + 2,
                 "roberta_pooler": 3 * 3600 + 4 * 60 + 10}  # "TIME Passed", seed 000
STUDY_BIG_RUN_PAIR_PASSES = 8_000_000  # RoBERTa, 250,000 steps of 32 ("1,000,000 pairs x 10 epochs", 24 h 43 m)
RTX3060_FP32_TFLOPS = 12.7  # vendor peak; the study trained in fp32


@dataclass(frozen=True)
class Gpu:
    """Vendor peaks (dense TFLOP/s) and the MFU range assumed for the engine's 16-bit training and sampling."""

    name: str
    fp32_tflops: float
    half_tflops: float  # tensor cores: fp16 on a T4, bf16 from compute capability 8.0 (what `auto` picks)
    half: str
    memory_gib: float
    mfu: tuple[float, float]  # (conservative, optimistic), an assumption until someone measures it


GPUS = {
    # T4: 70 W, clocks drop under sustained tensor load; fp16 with a gradient scaler (`auto`)
    "T4": Gpu("T4 (Colab free)", 8.1, 65.0, "fp16", 15.0, (0.15, 0.30)),
    # L4: 72 W and 300 GB/s for 121 TFLOP/s: memory-bound work weighs more than on a T4
    "L4": Gpu("L4 (Colab Pro)", 30.3, 121.0, "bf16", 22.5, (0.10, 0.25)),
    # A100: a 68M-parameter student at batch 32 cannot keep 312 TFLOP/s busy
    "A100": Gpu("A100 40 GB (Colab Pro)", 19.5, 312.0, "bf16", 40.0, (0.10, 0.30)),
}
SIZING_GPU = "T4"
SIZING_MINUTES = 30.0  # one class period per distillation notebook, on a T4, at the conservative MFU

# ------------------------------------------------------ assumptions (not measured)
DOWNLOAD_MB_S = 40.0  # hub -> Colab runtime
DISK_MB_S = 100.0  # checkpoint writes to the runtime's disk (Google Drive was not measured)
INSTALL_MINUTES = 2.0  # requirements-colab.txt: 2 min 02 s into an empty venv on this workspace (2026-11-22)
# CPU work per 1,000 pairs: `python -m kdutils sizing --check` measured 0.67-2.52 s (cleaning and splitting, 01)
# and 0.28-0.42 s (tokenising for training, 03-05) on this workspace's shared 2-core CPU with the real CLIP BPE, on
# the course's short sentences; taken as 2 s and 1 s for OPUS-100's longer sentences and Colab's CPU (assumed)
PREP_S_PER_1K = 2.0
TOKENIZE_S_PER_1K = 1.0

# -------------------------------------------------------------- model sizes
PARAMS = {  # counted on full-size configurations with random weights (README, 성능)
    "clip_text": 123_060_480,  # SD v1.4's text encoder = the teacher, and experiment 1's student
    "roberta": 68_090_880,  # klue/roberta-small
    "unet": 859_520_964,  # SD v1.4 UNet2DConditionModel
    "vae": 83_653_863,  # SD v1.4 AutoencoderKL
    "safety_checker": 303_981_588,  # CLIP ViT-L/14 vision tower + projection and concept embeddings
    "scorer": 149_620_737,  # openai/clip-vit-base-patch16 (07, 09)
}
STUDENT_PARAMS = {"clip": PARAMS["clip_text"], "roberta": PARAMS["roberta"], "roberta_pooler": PARAMS["roberta"]}
HIDDEN, MAX_LENGTH = 768, 77
GIB = 1024 ** 3
CUDA_CONTEXT_GIB = 0.5  # outside PyTorch's counters
GPU_CACHE_LIMIT = Profile.teacher_cache_gb * GIB  # prepare_train caches the teacher's outputs (on the GPU) up to this

# Measured on this workspace's CPU (AMD EPYC, 2 cores), full-size configurations, random weights,
# counting live tensor bytes (kdutils.bench.LiveTensorBytes) in 16 bits as CUDA runs them.
MEASURED = {
    "date": "2026-12-06",
    # one engine step at batch 32 (kdutils.bench.estimate_gpu_memory): base = teacher 16-bit + student fp32 +
    # AdamW state + one batch of ids; peak adds gradients and activations (GiB). From the bench, 2026-11-30.
    "train_base_gib": {"clip": 1.60, "roberta": 0.99, "roberta_pooler": 0.99},
    "train_peak_gib": {"clip": 3.89, "roberta": 2.52, "roberta_pooler": 1.66},
    # SD v1.4 at 512 px in 16 bits: the UNet's activations for one call at batch 4 (2 prompts x CFG) with
    # sliced attention (sampling_memory.fit_memory turns it on under 16 GB), the VAE's for one image (sliced decoding)
    "unet_act_gib_b4": 0.37,  # 2.11 without slicing (materialised attention scores)
    "vae_decode_act_gib": 0.38,
    "vae_encode_act_gib": 0.31,
    "unet_gflops_per_sample": 803.3,  # one UNet call on one 64 x 64 latent (torch.utils.flop_counter)
    "vae_decode_gflops": 2480.2,  # one 512 px image
}


# ------------------------------------------------------------------ FLOPs
@lru_cache(maxsize=None)
def pair_gflops(experiment: str, student_tokens: int = MAX_LENGTH) -> float:
    """Model GFLOP of one training pair at full size (teacher forward, student forward and backward on en and ko)."""
    from .bench import build_configs, pair_flops

    teacher, student = build_configs(experiment)
    return pair_flops(experiment, teacher, student, MAX_LENGTH, student_tokens) / 1e9


@lru_cache(maxsize=None)
def forward_gflops(experiment: str, tokens: int = MAX_LENGTH) -> tuple[float, float]:
    """``(teacher, student)`` GFLOP of one forward pass over one sentence."""
    from .bench import build_configs, forward_flops

    teacher, student = build_configs(experiment)
    return forward_flops(teacher, tokens) / 1e9, forward_flops(student, tokens) / 1e9


def calibration() -> dict[str, dict]:
    """The study's run per experiment: pairs/s, achieved TFLOP/s and MFU of the 3060's fp32 peak.

    The study's times include its validation passes, so the MFU of its training step alone was a little higher.
    """
    out = {}
    for experiment, seconds in STUDY_SECONDS.items():
        rate = STUDY_PAIR_PASSES / seconds
        tflops = pair_gflops(experiment) * rate / 1e3
        out[experiment] = {"pairs_per_s": rate, "tflops": tflops, "mfu": tflops / RTX3060_FP32_TFLOPS}
    return out


def fp32_mfu() -> float:
    """The study's fp32 MFU (the mean of its two sequence experiments), used for fp32 work: evaluation."""
    cal = calibration()
    return (cal["clip"]["mfu"] + cal["roberta"]["mfu"]) / 2


# ------------------------------------------------------------------ the plan
def split_sizes(num_pairs: int) -> dict[str, int]:
    """train/val/test as ``data.split_pairs`` makes them (5% each, at most 2,000), before any pair is cleaned away."""
    n_eval = min(2000, max(1, round(num_pairs * 0.05)))
    return {"train": num_pairs - 2 * n_eval, "val": n_eval, "test": n_eval}


def cache_bytes(train_pairs: int, target: str = "sequence") -> int:
    """Bytes of the teacher-output cache ``prepare_train`` would keep (16-bit, 77 x 768 per pair, or 768 pooled)."""
    return train_pairs * HIDDEN * (MAX_LENGTH if target == "sequence" else 1) * 2


def teacher_cache_path(train_pairs: int, target: str = "sequence") -> str:
    """Which path ``prepare_train`` takes on CUDA at the profiles' ``teacher_cache_gb``."""
    if cache_bytes(train_pairs, target) <= GPU_CACHE_LIMIT:
        return "cached on the GPU"
    return "no cache: the teacher runs on every batch"


def steps(cfg) -> int:
    """Training steps of one run: every training pair once per epoch, in batches."""
    train = split_sizes(cfg.num_pairs)["train"]
    return math.ceil(train / cfg.batch_size) * cfg.num_epochs


def distill_minutes(cfg, experiment: str, gpu: str = SIZING_GPU, mfu: float | None = None) -> dict[str, float]:
    """Minutes one distillation notebook (03-05) takes in a fresh Colab runtime, by part (an estimate).

    ``train``: every step's model FLOPs (``batch`` teacher rows, ``2 x batch + 1`` student rows with
    the empty prompt, backward = 2 x forward) at ``mfu`` of the GPU's 16-bit peak. ``evaluate``: the
    notebook's own evaluation before training, step 0, every ``eval_every`` steps and the end, and the
    test split, in fp32 at the study's fp32 MFU. ``checkpoints``: ``last/`` (weights + AdamW state,
    12 bytes a parameter) at each evaluation and ``best/`` (4 bytes) when it improves, here always.
    """
    g = GPUS[gpu]
    mfu = g.mfu[0] if mfu is None else mfu
    sizes = split_sizes(cfg.num_pairs)
    n_steps = steps(cfg)
    teacher_fwd, student_fwd = forward_gflops(experiment)
    step_gflop = cfg.batch_size * teacher_fwd + (2 * cfg.batch_size + 1) * 3 * student_fwd
    half = mfu * g.half_tflops * 1e3  # GFLOP/s
    fp32 = fp32_mfu() * g.fp32_tflops * 1e3
    evals_in_run = 1 + math.ceil(n_steps / cfg.eval_every)  # step 0, every eval_every and the last step
    eval_gflop = 2 * sizes["val"] * student_fwd
    evaluations = (1 + evals_in_run) * eval_gflop / fp32 + 2 * sizes["test"] * student_fwd / fp32
    teacher_targets = (sizes["val"] + sizes["test"]) * teacher_fwd / half
    params = STUDENT_PARAMS[experiment]
    checkpoint_bytes = (evals_in_run - 1) * params * (12 + 4)
    downloads = (PARAMS["clip_text"] + (0 if experiment == "clip" else PARAMS["roberta"])) * 4
    parts = {
        "install": INSTALL_MINUTES * 60,
        "download": downloads / (DOWNLOAD_MB_S * 1e6),
        "tokenize": sizes["train"] / 1000 * TOKENIZE_S_PER_1K * (2 if experiment == "clip" else 1),
        "train": n_steps * step_gflop / half,
        "evaluate": evaluations + teacher_targets,
        "checkpoints": checkpoint_bytes / (DISK_MB_S * 1e6),
    }
    parts = {k: v / 60 for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def sampling_unet_calls(cfg) -> dict[str, float]:
    """UNet calls per image (one call = one 64 x 64 latent, both CFG halves counted) the sampling notebooks make.

    Counted from the notebooks' cells with the profile's sizes; an unguided image (guidance 1) costs half.
    """
    s, p = cfg.num_inference_steps, cfg.num_eval_prompts or 16
    guided = 2 * s
    return {
        # two prompts and the same prompt again
        "00": 3 * guided,
        # CLIP en + ko (4 + 4), by hand and by the library for two samplers (4), six samplers, two seeds x two
        # samplers (4)
        "06": (4 + 4 + 4 + 6 + 4) * guided,
        # CLIP en + ko again (4 + 4), student (4), guidance sweep (4 guided images + 2 unguided), the UI (1), the export (4)
        "07": (4 + 4 + 4 + 8 + 1 + 4) * guided + 2 * s,
        # 2 teacher + 6 student conditions x the eval prompts, and the repeat check (batch of 2)
        "08": (8 * p + 2) * guided,
        # img2img: 10 prompts x strengths 0.2..1.0; then 2+2+2 guided, 2 unguided, 16 + 16 negative-prompt images
        "09": 10 * round(s * (0.2 + 0.4 + 0.6 + 0.8 + 1.0)) * guided // s + (6 + 32) * guided + 2 * s,
        # 8 prompts x 6 samples
        "10": 48 * guided,
    }


def sampled_images(cfg) -> dict[str, int]:
    """Images each sampling notebook decodes with the VAE (the counts of :func:`sampling_unet_calls`)."""
    p = cfg.num_eval_prompts or 16
    return {"00": 3, "06": 22 + 6, "07": 27, "08": 8 * p + 2, "09": 50 + 40, "10": 48}


SAMPLING_DOWNLOAD = {  # fp32 weights from the hub: diffusers downloads them and casts to fp16
    "00": ("unet", "vae", "clip_text", "safety_checker", "roberta"),
    "06": ("unet", "vae", "clip_text", "safety_checker"),
    "07": ("unet", "vae", "clip_text", "safety_checker", "roberta"),
    "08": ("unet", "vae", "clip_text", "safety_checker", "roberta", "scorer"),
    "09": ("unet", "vae", "clip_text", "safety_checker", "roberta"),
    "10": ("unet", "vae", "clip_text", "safety_checker", "roberta", "scorer"),
}
# 11 trains the toy world's UNet (4.19M parameters, 8 x 8 latents, batch 16) on any profile: on a GPU such a small step is
# bound by kernel launches, not FLOPs. Assumed, not measured: about 1,000 launches a step (forward, backward, AdamW,
# EMA) at ~20 us each. The CPU part (render 2,000 scenes, encode them, draw 3 x 48 checks) took 0.5 min on 2 cores.
TOY_UNET_STEP_S = 0.02
TOY_CPU_MINUTES = 0.5


def sampling_minutes(cfg, notebook: str, gpu: str = SIZING_GPU, mfu: float | None = None) -> dict[str, float]:
    """Minutes a sampling notebook (00, 06-10) takes in a fresh Colab runtime, the students already trained."""
    g = GPUS[gpu]
    mfu = g.mfu[0] if mfu is None else mfu
    half = mfu * g.half_tflops * 1e3
    calls = sampling_unet_calls(cfg)[notebook]
    parts = {
        "install": INSTALL_MINUTES * 60,
        "download": sum(PARAMS[name] for name in SAMPLING_DOWNLOAD[notebook]) * 4 / (DOWNLOAD_MB_S * 1e6),
        "sample": calls * MEASURED["unet_gflops_per_sample"] / half,
        "decode": sampled_images(cfg)[notebook] * MEASURED["vae_decode_gflops"] / half,
    }
    if notebook == "07":  # the export writes SD with the student in fp32
        parts["export"] = (PARAMS["unet"] + PARAMS["vae"] + PARAMS["roberta"] + PARAMS["safety_checker"]) * 4 / (
            DISK_MB_S * 1e6)
    parts = {k: v / 60 for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def data_minutes(cfg) -> dict[str, float]:
    """01: stream ``num_pairs`` pairs from the hub, clean them under both tokenizers, split and save."""
    parts = {"install": INSTALL_MINUTES * 60,
             "download": (cfg.num_pairs + 10_000) * 120 / (DOWNLOAD_MB_S * 1e6),  # ~120 bytes a pair (assumed)
             "prepare": cfg.num_pairs / 1000 * PREP_S_PER_1K}
    parts = {k: v / 60 for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def course_minutes(cfg, gpu: str = SIZING_GPU, mfu: float | None = None) -> dict[str, float]:
    """Estimated minutes per notebook 00-11 on ``gpu`` (each in a fresh Colab runtime)."""
    out = {"00": sampling_minutes(cfg, "00", gpu, mfu)["total"], "01": data_minutes(cfg)["total"],
           "02": INSTALL_MINUTES + 2 * PARAMS["clip_text"] * 4 / (DOWNLOAD_MB_S * 1e6) / 60 + 0.5}
    for notebook, experiment in (("03", "clip"), ("04", "roberta"), ("05", "roberta_pooler")):
        out[notebook] = distill_minutes(cfg, experiment, gpu, mfu)["total"]
    for notebook in ("06", "07", "08", "09", "10"):
        out[notebook] = sampling_minutes(cfg, notebook, gpu, mfu)["total"]
    out["11"] = toy_sd_minutes(cfg)["total"]
    return out


def toy_sd_minutes(cfg) -> dict[str, float]:
    """11: train the toy UNet for ``cfg.toy_unet_steps`` (the same on every GPU: launch-bound, see TOY_UNET_STEP_S)."""
    parts = {"install": INSTALL_MINUTES, "train": cfg.toy_unet_steps * TOY_UNET_STEP_S / 60, "cpu": TOY_CPU_MINUTES}
    parts["total"] = sum(parts.values())
    return parts


def max_pairs(cfg, minutes: float = SIZING_MINUTES, gpu: str = SIZING_GPU, mfu: float | None = None,
              experiment: str = "clip") -> int:
    """The most ``num_pairs`` whose slowest distillation notebook (03, CLIP) fits ``minutes`` (bisection)."""
    lo, hi = 1_000, 10_000_000
    while hi - lo > 100:
        mid = (lo + hi) // 2
        fits = distill_minutes(cfg.replace(num_pairs=mid), experiment, gpu, mfu)["total"] <= minutes
        lo, hi = (mid, hi) if fits else (lo, mid)
    return lo


def paper_hours(cfg, experiment: str, gpu: str) -> tuple[float, float]:
    """Hours one ``paper`` run takes on ``gpu`` at its MFU range: ``(slow, fast)``."""
    g = GPUS[gpu]
    return tuple(distill_minutes(cfg, experiment, gpu, m)["total"] / 60 for m in g.mfu)


def study_share(cfg) -> float:
    """Pair passes of one ``cfg`` run as a share of the study's 1,000,000."""
    return split_sizes(cfg.num_pairs)["train"] * cfg.num_epochs / STUDY_PAIR_PASSES


# ------------------------------------------------------------------ memory
def _gib(n_bytes: float) -> float:
    return n_bytes / GIB


def memory_table(cfg) -> dict[str, dict[str, float]]:
    """Estimated GPU memory (GiB) per notebook at its largest moment, by part, for ``cfg`` on CUDA.

    Training (03-05): the measured step at batch 32 (weights, AdamW state, gradients, activations), the
    pre-tokenised ids of every training pair (int64 ids and masks of three tokenisations) and the teacher
    cache where ``prepare_train`` keeps it on the GPU. Sampling (00, 06-10): SD v1.4 in fp16, the text
    encoder in use, and the larger of the UNet's activations (batch ``2 x sample_batch_size`` with CFG) and
    the VAE's; 08 also loads the scoring CLIP (fp32). 11's toy models take well under 1 GiB and are left out.
    Every row adds the CUDA context.
    """
    sizes = split_sizes(cfg.num_pairs)
    ids = sizes["train"] * 3 * 2 * MAX_LENGTH * 8
    table: dict[str, dict[str, float]] = {}
    for notebook, experiment in (("03", "clip"), ("04", "roberta"), ("05", "roberta_pooler")):
        target = "pooled" if experiment == "roberta_pooler" else "sequence"
        cache = cache_bytes(sizes["train"], target)
        base = MEASURED["train_base_gib"][experiment]
        params = STUDENT_PARAMS[experiment]
        weights = _gib(PARAMS["clip_text"] * 2 + params * 4)
        table[notebook] = {"weights": weights, "optimizer state": _gib(params * 8),
                           "gradients + activations": MEASURED["train_peak_gib"][experiment] - base,
                           "token ids": _gib(ids),
                           "teacher cache": _gib(cache) if cache <= GPU_CACHE_LIMIT else 0.0}
    # 03's hand-written step (cells before training): the teacher still fp32, the student, its copy `hand`
    # with gradients and AdamW state, and the copy `engine` with gradients, at batch 8 in fp32. Activations:
    # the measured CLIP step's (65 rows in bf16) scaled to 16 rows in fp32 (arithmetic, not measured)
    clip = PARAMS["clip_text"]
    act32 = MEASURED["train_peak_gib"]["clip"] - MEASURED["train_base_gib"]["clip"] - _gib(clip * 4)
    table["03 hand step"] = {"weights": _gib(4 * clip * 4), "optimizer state": _gib(clip * 8),
                             "gradients + activations": _gib(2 * clip * 4) + act32 * 16 / 65 * 2}
    sd = _gib((PARAMS["unet"] + PARAMS["vae"] + PARAMS["safety_checker"]) * 2)
    unet_act = MEASURED["unet_act_gib_b4"] * (2 * cfg.sample_batch_size) / 4
    vae_act = max(MEASURED["vae_decode_act_gib"], MEASURED["vae_encode_act_gib"])
    sampling = max(unet_act, vae_act)
    clip16, roberta16 = _gib(PARAMS["clip_text"] * 2), _gib(PARAMS["roberta"] * 2)
    table["00"] = {"weights": sd + clip16, "sampling activations": max(MEASURED["unet_act_gib_b4"] / 2, vae_act)}
    table["02"] = {"weights": _gib((PARAMS["clip_text"] + PARAMS["roberta"]) * 4)}
    table["06"] = {"weights": sd + clip16, "sampling activations": sampling}
    table["07"] = {"weights": sd + max(clip16, roberta16), "sampling activations": sampling}
    # 08: SD with the teacher, one student at a time, then the scorer while SD is still loaded
    table["08"] = {"weights": sd + 2 * clip16 + _gib(PARAMS["scorer"] * 4), "sampling activations": sampling}
    table["09"] = {"weights": sd + roberta16, "sampling activations": sampling}
    table["10"] = {"weights": sd + roberta16, "sampling activations": sampling}
    for row in table.values():
        row["CUDA context"] = CUDA_CONTEXT_GIB
        row["total"] = sum(row.values())
    return dict(sorted(table.items()))


def tightest(cfg) -> tuple[str, float]:
    """``(notebook, GiB)`` of the largest entry of :func:`memory_table`."""
    table = memory_table(cfg)
    notebook = max(table, key=lambda k: table[k]["total"])
    return notebook, table[notebook]["total"]


# ----------------------------------------------------------------- report
MEMORY_LIMIT_GIB = 12.0  # the study's RTX 3060 (12,288 MiB); a Colab T4 has 15 GiB


def derivation(cfg, paper=None) -> dict:
    """Every number of the sizing in one dict: calibration, rates, minutes, memory, paper-run hours."""
    from .profiles import PROFILES

    paper = paper or PROFILES["paper"]
    sizes = split_sizes(cfg.num_pairs)
    experiments = ("clip", "roberta", "roberta_pooler")
    rates = {}
    for name, g in GPUS.items():
        rates[name] = {e: [m * g.half_tflops * 1e3 / pair_gflops(e) for m in g.mfu] for e in experiments}
        rates[name]["study_loop_fp32"] = {e: fp32_mfu() * g.fp32_tflops * 1e3 / pair_gflops(e) for e in experiments}
    table = memory_table(cfg)
    notebook, largest = tightest(cfg)
    return {
        "calibration": calibration(),
        "pair_gflops": {e: pair_gflops(e) for e in experiments},
        "gpus": {name: {"fp32_tflops": g.fp32_tflops, "half_tflops": g.half_tflops, "half": g.half,
                        "mfu": list(g.mfu)} for name, g in GPUS.items()},
        "pairs_per_s": rates,
        "profile": {"num_pairs": cfg.num_pairs, "splits": sizes, "steps": steps(cfg), "batch_size": cfg.batch_size,
                    "eval_every": cfg.eval_every, "num_epochs": cfg.num_epochs,
                    "share_of_study": study_share(cfg),
                    "share_of_big_run": sizes["train"] * cfg.num_epochs / STUDY_BIG_RUN_PAIR_PASSES,
                    "teacher_cache_gib": cache_bytes(sizes["train"]) / GIB,
                    "teacher_cache_path": teacher_cache_path(sizes["train"])},
        "max_pairs_t4": max_pairs(cfg),
        "distill_minutes": {name: {e: {m: distill_minutes(cfg, e, name, m) for m in GPUS[name].mfu}
                                   for e in experiments} for name in GPUS},
        "course_minutes": {name: {m: course_minutes(cfg, name, m) for m in GPUS[name].mfu} for name in GPUS},
        "memory_gib": table, "tightest": {"notebook": notebook, "gib": largest,
                                          "margin_gib": MEMORY_LIMIT_GIB - largest},
        "paper_hours": {name: {e: paper_hours(paper, e, name) for e in experiments} for name in GPUS},
    }


def format_derivation(d: dict) -> str:
    """The derivation as plain text, in the order a teacher reads it."""
    lines = ["ESTIMATES: no GPU was measured; each figure follows from the numbers above it.", "",
             "1. FLOPs per pair (kdutils.bench.pair_flops, 77 tokens): " +
             ", ".join(f"{e} {v:.1f} GFLOP" for e, v in d["pair_gflops"].items()),
             "2. calibration, the study on an RTX 3060 in fp32 (1,000,000 pair passes): " +
             ", ".join(f"{e} {c['pairs_per_s']:.1f} pairs/s = {c['tflops']:.2f} TFLOP/s = {100 * c['mfu']:.1f}% "
                       f"of {RTX3060_FP32_TFLOPS}" for e, c in d["calibration"].items()),
             "3. peaks and assumed MFU of the engine (16-bit):"]
    for name, g in d["gpus"].items():
        r = d["pairs_per_s"][name]
        lines.append(f"   {name}: fp32 {g['fp32_tflops']} / {g['half']} {g['half_tflops']} TFLOP/s, MFU "
                     f"{100 * g['mfu'][0]:.0f}-{100 * g['mfu'][1]:.0f}% -> pairs/s " +
                     ", ".join(f"{e} {v[0]:.0f}-{v[1]:.0f}" for e, v in r.items() if e != "study_loop_fp32") +
                     " (the study's fp32 loop: " +
                     ", ".join(f"{e} {v:.0f}" for e, v in r["study_loop_fp32"].items()) + ")")
    p = d["profile"]
    lines += ["", f"4. class: {p['num_pairs']:,} pairs -> train {p['splits']['train']:,} / val {p['splits']['val']:,} / "
                  f"test {p['splits']['test']:,}; {p['num_epochs']} epoch of batch {p['batch_size']} = {p['steps']:,} steps, "
                  f"evaluated every {p['eval_every']}; {100 * p['share_of_study']:.1f}% of the study's pair passes "
                  f"({100 * p['share_of_big_run']:.1f}% of its 8M run)",
              f"   the slowest notebook (03, CLIP) fits 30 min on a T4 at the low MFU up to {d['max_pairs_t4']:,} pairs",
              f"   teacher cache: {p['teacher_cache_gib']:.1f} GiB -> {p['teacher_cache_path']}",
              "5. minutes per notebook in a fresh Colab runtime (install, downloads, work), at the high-low MFU:"]
    for name in d["course_minutes"]:
        slow, fast = d["course_minutes"][name].values()
        lines.append(f"   {name}: " + ", ".join(f"{k} {fast[k]:.0f}-{slow[k]:.0f}" for k in slow))
    lines += ["", "6. GPU memory (GiB) at each notebook's largest moment:"]
    for notebook, row in d["memory_gib"].items():
        parts = ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k != "total")
        lines.append(f"   {notebook}: {row['total']:.2f}  ({parts})")
    t = d["tightest"]
    lines.append(f"   tightest: {t['notebook']} at {t['gib']:.2f} GiB, {t['margin_gib']:.2f} GiB under "
                 f"{MEMORY_LIMIT_GIB:g} GiB")
    lines += ["", "7. one paper run (hours, at the high-low MFU): " + "; ".join(
        f"{name} " + ", ".join(f"{e} {h[1]:.1f}-{h[0]:.1f}" for e, h in hours.items())
        for name, hours in d["paper_hours"].items())]
    return "\n".join(lines)
