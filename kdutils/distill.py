"""The distillation engine shared by notebooks 03-05 and ``python -m kdutils train``.

The loss is the study's: ``MSE(student(en), teacher(en)) + MSE(student(ko), teacher(en))``
on the last hidden state (``sequence``, what the UNet reads) or on pooled
vectors (``pooled``), plus an optional term that teaches the empty prompt used
by classifier-free guidance. The student is called exactly as diffusers'
``encode_prompt`` calls a text encoder, so what it learns is what the
pipeline gets. Training runs under Hugging Face Accelerate: mixed precision on
CUDA, fp32 on CPU, and data parallel under ``accelerate launch``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .models import EXPERIMENTS, load_student, load_teacher
from .metrics import masked_mean, retrieval_accuracy

TARGETS = {"clip": "sequence", "roberta": "sequence", "roberta_pooler": "pooled"}

# The study's lowest validation losses as it logged them (its numbers, its scale).
STUDY_RESULTS = {
    "clip": {"val_loss": 0.5647, "mse_en": 0.0694, "mse_ko": 0.4954},
    "roberta": {"val_loss": 0.9631, "mse_en": 0.4643, "mse_ko": 0.4988},
    "roberta_pooler": {"val_loss": 1.0813, "mse_en": 0.5319, "mse_ko": 0.5494},
}


# ----------------------------------------------------------------- encoding
@dataclass
class Tokens:
    """Pre-tokenised texts: ids and attention mask, padded to ``max_length``."""

    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, index) -> "Tokens":
        return Tokens(self.ids[index], self.mask[index])


def tokenize(tokenizer, texts: list[str], max_length: int | None = None) -> Tokens:
    """Tokenise as diffusers does for prompts: pad to ``max_length`` (77) and truncate."""
    batch = tokenizer(list(texts), padding="max_length", max_length=max_length or tokenizer.model_max_length,
                      truncation=True, return_tensors="pt")
    return Tokens(batch.input_ids, batch.attention_mask)


def encode(encoder, ids: torch.Tensor, mask: torch.Tensor):
    """Run a text encoder the way ``StableDiffusionPipeline.encode_prompt`` does.

    The attention mask is passed only when ``encoder.config.use_attention_mask``
    is true (the Korean students set it; CLIP, as in SD, gets none).
    Returns the model output: ``[0]`` is what the UNet reads.
    """
    config = getattr(encoder, "module", encoder).config  # also through a DDP wrapper
    use_mask = bool(getattr(config, "use_attention_mask", False))
    return encoder(ids, attention_mask=mask if use_mask else None)


@torch.no_grad()
def embed(encoder, tokenizer, texts: list[str], device: str | None = None, pooled: bool = False) -> torch.Tensor:
    """Embeddings of ``texts`` as the pipeline would compute them (no gradients)."""
    device = device or next(encoder.parameters()).device
    tokens = tokenize(tokenizer, texts)
    out = encode(encoder, tokens.ids.to(device), tokens.mask.to(device))
    return out.pooler_output if pooled else out[0]


def distill_loss(student_out: torch.Tensor, teacher_out: torch.Tensor, batch_size: int):
    """The study's loss on a student batch laid out as ``[en; ko]`` (each ``batch_size`` rows).

    Returns ``(loss, loss_en, loss_ko)`` with ``loss = loss_en + loss_ko``.
    """
    s = student_out.float()
    t = teacher_out.float()
    loss_en = F.mse_loss(s[:batch_size], t)
    loss_ko = F.mse_loss(s[batch_size:2 * batch_size], t)
    return loss_en + loss_ko, loss_en, loss_ko


@torch.no_grad()
def teacher_batch(teacher, ids: torch.Tensor, target: str, width: int | None = None) -> torch.Tensor:
    """The teacher's targets for one batch of English ids (no graph is kept).

    ``no_grad`` rather than ``inference_mode``: the MSE saves its target for
    the backward pass, which inference tensors do not allow. ``width`` (from
    ``step_width``) drops trailing padding columns.
    """
    out = encode(teacher, ids if width is None else ids[:, :width], None)
    return out.pooler_output if target == "pooled" else out[0]


def step_width(model, target: str, *lengths: torch.Tensor) -> int | None:
    """How many token columns a step needs, from token counts kept on the host.

    A ``pooled`` target depends on real tokens only when the model hides
    padding with the attention mask (the RoBERTa students) or reads causally
    and pools at the end token (CLIP, teacher or student). Then the step can
    stop at the longest sentence of the batch instead of 77, about half the
    work, with no host sync since the counts live on the CPU. ``sequence``
    targets need all 77 positions, because the UNet reads the padding
    positions too: ``None``.
    """
    config = getattr(model, "module", model).config
    real_tokens_only = getattr(config, "use_attention_mask", False) or config.model_type == "clip_text_model"
    if target != "pooled" or not real_tokens_only:
        return None
    return int(max(int(n.max()) for n in lengths))


def student_loss(student, accelerator, ids, mask, target_batch, target: str, empty_target=None,
                 empty_weight: float = 0.0, width: int | None = None):
    """The forward half of a step: ``(loss, loss_en, loss_ko)``, with the graph, for a batch ``[en; ko; ""]``.

    ``width`` (from ``step_width``) drops trailing padding columns.
    """
    b = len(target_batch)
    if width is not None:
        ids, mask = ids[:, :width], mask[:, :width]
    with accelerator.autocast():
        out = encode(student, ids, mask)
        s = out.pooler_output if target == "pooled" else out[0]
        loss, loss_en, loss_ko = distill_loss(s, target_batch, b)
        if empty_weight > 0 and len(s) > 2 * b:
            loss = loss + empty_weight * F.mse_loss(s[2 * b:].float(), empty_target.float())
    return loss, loss_en, loss_ko


def update(student, optimizer, scheduler, accelerator, grad_clip: float | None = 1.0) -> None:
    """The last part of a step: clip the gradients, step optimizer and schedule, free the gradients."""
    if grad_clip:
        accelerator.clip_grad_norm_(student.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def distill_step(student, optimizer, scheduler, accelerator, ids, mask, target_batch, target: str,
                 empty_target=None, empty_weight: float = 0.0, grad_clip: float | None = 1.0,
                 width: int | None = None) -> torch.Tensor:
    """One optimisation step on a student batch laid out ``[en; ko; ""]``.

    One forward pass for both languages (and the empty prompt), mixed precision
    through ``accelerator.autocast``, no host synchronisation: returns the
    detached ``(loss, loss_en, loss_ko)`` on the device, for the caller to log
    every few steps. ``width`` (from ``step_width``) drops trailing padding columns.
    """
    losses = student_loss(student, accelerator, ids, mask, target_batch, target, empty_target, empty_weight, width)
    accelerator.backward(losses[0])
    update(student, optimizer, scheduler, accelerator, grad_clip)
    return torch.stack([x.detach() for x in losses]).float()


# --------------------------------------------------------------- evaluation
@dataclass
class EvalData:
    """What evaluation needs for one split: tokens and the teacher's targets (on the CPU),
    plus the empty prompt ``""`` that classifier-free guidance feeds the UNet."""

    teacher_mask: torch.Tensor
    teacher_seq: torch.Tensor
    teacher_pooled: torch.Tensor
    en: Tokens
    ko: Tokens
    empty: Tokens
    empty_seq: torch.Tensor

    def __len__(self) -> int:
        return len(self.en)


@torch.no_grad()
def teacher_targets(teacher, tokens: Tokens, device, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher's sequence and pooled outputs for pre-tokenised English, kept on the CPU."""
    seqs, pooled = [], []
    for start in range(0, len(tokens), batch_size):
        part = tokens.take(slice(start, start + batch_size))
        out = encode(teacher, part.ids.to(device), part.mask.to(device))
        seqs.append(out[0].cpu())
        pooled.append(out.pooler_output.cpu())
    return torch.cat(seqs), torch.cat(pooled)


def prepare_eval(teacher, teacher_tokenizer, student_tokenizer, split, device, max_length: int) -> EvalData:
    """Tokenise a split (and ``""``) for both models and compute the teacher's targets once."""
    teacher_tokens = tokenize(teacher_tokenizer, split["en"], max_length)
    seq, pooled = teacher_targets(teacher, teacher_tokens, device)
    empty_seq, _ = teacher_targets(teacher, tokenize(teacher_tokenizer, [""], max_length), device)
    return EvalData(teacher_tokens.mask, seq, pooled, tokenize(student_tokenizer, split["en"], max_length),
                    tokenize(student_tokenizer, split["ko"], max_length),
                    tokenize(student_tokenizer, [""], max_length), empty_seq)


@torch.no_grad()
def evaluate(student, data: EvalData, target: str, device, batch_size: int = 64,
             accelerator=None) -> dict[str, float]:
    """Held-out metrics of a student against the teacher's English targets.

    Runs in fp32 whatever the training precision (autocast is switched off
    here), so numbers compare across machines and precisions. MSE values are
    multiplied by 100. ``mse_en``/``mse_ko`` are on the
    experiment's target (its loss terms; ``val_loss`` is their sum);
    ``seq_mse_*`` and ``cos_*`` always compare the 77 x hidden sequence the
    UNet reads; ``r1_ko2en``/``r1_en2ko`` are top-1 retrieval accuracies of
    masked mean-pooled embeddings; ``empty_mse`` compares the embeddings of ``""``.
    """
    device = torch.device(device)
    was_training = student.training
    student.eval()
    try:
        with torch.autocast(device.type, enabled=False):
            return _evaluate(student, data, target, device, batch_size, accelerator)
    finally:
        student.train(was_training)


def _evaluate(student, data: EvalData, target: str, device, batch_size: int, accelerator) -> dict[str, float]:
    n = len(data.en)
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    per_rank = math.ceil(n / world)  # equal shards (wrapping around) so that all_gather lines up
    rows = (torch.arange(per_rank * world) % n)[rank * per_rank:(rank + 1) * per_rank]
    per_example, pooled_ko, teacher_pooled_en = [], [], []
    for start in range(0, len(rows), batch_size):
        idx = rows[start:start + batch_size]
        t_seq = data.teacher_seq[idx].to(device).float()
        t_pool = data.teacher_pooled[idx].to(device).float()
        t_mask = data.teacher_mask[idx].to(device)
        values = []
        for name, side in (("en", data.en), ("ko", data.ko)):
            part = side.take(idx)
            out = encode(student, part.ids.to(device), part.mask.to(device))
            s_seq = out[0].float()
            s_obj, t_obj = (out.pooler_output.float(), t_pool) if target == "pooled" else (s_seq, t_seq)
            values.append(((s_obj - t_obj) ** 2).flatten(1).mean(1))
            values.append(((s_seq - t_seq) ** 2).flatten(1).mean(1))
            values.append(F.cosine_similarity(s_seq, t_seq, dim=-1).mean(1))
            if name == "ko":
                pooled_ko.append(masked_mean(s_seq, part.mask.to(device)))
        teacher_pooled_en.append(masked_mean(t_seq, t_mask))
        per_example.append(torch.stack(values, 1))
    stats = torch.cat(per_example)
    ko_vectors, en_vectors = torch.cat(pooled_ko), torch.cat(teacher_pooled_en)
    if accelerator is not None and world > 1:  # rank order = row order; drop the wrapped-around rows
        stats, ko_vectors, en_vectors = (accelerator.gather(x)[:n] for x in (stats, ko_vectors, en_vectors))
    means = stats.mean(0).tolist()
    empty_out = encode(student, data.empty.ids.to(device), data.empty.mask.to(device))[0].float()
    metrics = {
        "mse_en": 100 * means[0], "mse_ko": 100 * means[3],
        "seq_mse_en": 100 * means[1], "seq_mse_ko": 100 * means[4],
        "cos_en": means[2], "cos_ko": means[5],
        "r1_ko2en": retrieval_accuracy(ko_vectors, en_vectors),
        "r1_en2ko": retrieval_accuracy(en_vectors, ko_vectors),
        "empty_mse": 100 * F.mse_loss(empty_out, data.empty_seq.to(device).float()).item(),
        "num_pairs": int(len(stats)),
    }
    metrics["val_loss"] = metrics["mse_en"] + metrics["mse_ko"]
    return metrics


# ----------------------------------------------------------------- training
@dataclass
class DistillResult:
    """Where a run wrote its checkpoints and what it measured."""

    output_dir: Path
    best_dir: Path
    best_step: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)
    test_metrics: dict | None = None
    finished: bool = True


def _param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights."""
    no_decay = set()
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            no_decay.update(f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters(recurse=False))
    decay, plain = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (plain if name in no_decay or name.endswith("bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def teacher_dtype(device) -> torch.dtype:
    """The frozen teacher runs in fp16 on CUDA (its outputs are targets only), fp32 elsewhere."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def make_optimizer(student, target: str, lr: float, weight_decay: float, device):
    """AdamW for the student, no decay on biases and LayerNorm weights.

    Fused (one kernel for all parameters) on CUDA and CPU: on a 2-core CPU its
    step for the 123M-parameter CLIP student took 0.07 s instead of 0.44 s.
    For ``sequence`` targets RoBERTa's pooler is frozen: it is not in the loss,
    and data-parallel training would wait for its gradients forever.
    """
    if target == "sequence" and getattr(student, "pooler", None) is not None:
        student.pooler.requires_grad_(False)
    return torch.optim.AdamW(_param_groups(student, weight_decay), lr=lr,
                             fused=torch.device(device).type in ("cuda", "cpu"))


def mixed_precision(device, setting: str = "auto") -> str:
    """The autocast precision for training on ``device``: ``"no"`` (fp32), ``"bf16"`` or ``"fp16"``.

    ``auto`` picks bf16 only on GPUs that compute in it (compute capability
    8.0 or more: A100, RTX 30xx and newer) and fp16 on older ones such as the
    T4, where Accelerate adds a gradient scaler. ``torch.cuda.is_bf16_supported()``
    is not the test: it also says yes on a T4, which only emulates bf16,
    slowly. On a CPU ``auto`` stays in fp32; ``bf16`` can be forced there
    (the CPU runs bf16 autocast), ``fp16`` cannot (Accelerate would silently
    train in fp32).
    """
    from .profiles import PRECISIONS

    if setting not in PRECISIONS:
        raise ValueError(f"unknown mixed_precision {setting!r}; choose one of {PRECISIONS}")
    kind = torch.device(device).type
    if setting == "auto":
        if kind != "cuda":
            return "no"
        return "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    if setting == "fp16" and kind != "cuda":
        raise ValueError(f"fp16 autocast needs a CUDA GPU, not {kind!r}; use mixed_precision='bf16' or 'no'")
    if setting == "bf16" and kind == "cuda" and torch.cuda.get_device_capability() < (8, 0):
        import warnings

        warnings.warn(f"{torch.cuda.get_device_name()} has no bf16 units (compute capability "
                      f"{'.'.join(map(str, torch.cuda.get_device_capability()))}): bf16 is emulated and slow; "
                      f"mixed_precision='auto' picks fp16 here", stacklevel=2)
    return setting


def make_accelerator(device, precision: str):
    """An ``Accelerator`` for one training run at ``precision`` (from ``mixed_precision``).

    Accelerate keeps one precision per process, so a kernel that trains once
    in bf16 and then in fp32 would stop with "AcceleratorState has already
    been initialized". Only that precision setting is cleared; the process
    state (ranks, device, process group) stays as the launcher set it.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", precision) != precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(cpu=torch.device(device).type == "cpu", mixed_precision=precision)


def _rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, student, tokenizer, meta: dict, state: dict | None = None) -> Path:
    """Write ``save_pretrained`` files, tokenizer, ``kdsd_meta.json`` (and training state) atomically.

    Everything goes to a temporary folder that replaces ``folder`` in one
    rename, so a crash never leaves a half-written checkpoint.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar would print at every evaluation
    try:
        student.save_pretrained(str(tmp))
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(str(tmp))
    (tmp / "kdsd_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if state is not None:
        torch.save(state, tmp / "training_state.pt")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def distill(cfg, experiment: str, splits, *, models: tuple | None = None, val: EvalData | None = None,
            output_dir: str | Path | None = None, resume: bool = False, stop_after: int | None = None,
            cache_teacher: bool | None = None, log_every: int = 10, progress: bool = True) -> DistillResult:
    """Train a student for ``experiment`` on ``splits`` (train/val/test with ``ko``/``en``).

    Evaluates on val every ``cfg.eval_every`` steps and at the end, keeps the
    checkpoint with the lowest validation loss in ``best/`` and the resumable
    state in ``last/``, then scores ``best`` on the test split. ``resume``
    continues from ``last/`` and ends where an uninterrupted run ends;
    ``stop_after`` stops after that many steps (as a crash would).

    A notebook that already loaded ``models = (teacher_tokenizer, teacher,
    student_tokenizer, student)`` and computed ``val = prepare_eval(...)``
    passes them, so nothing is loaded or computed twice. The teacher is then
    moved to the device (fp16 on CUDA) in place; the student comes back in
    fp32 with the best checkpoint's weights and without Accelerate's autocast
    wrapper, so measuring it afterwards compares with the metrics here.
    """
    from tqdm.auto import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from . import seed_everything
    from .data import fingerprint, overlong

    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {EXPERIMENTS}")
    for name in ("train", "val"):
        if name not in splits or len(splits[name]) == 0:
            raise ValueError(f"the {name!r} split is empty or missing; prepare data with kd.data.prepare_splits(cfg)")
    target = TARGETS[experiment]
    precision = mixed_precision(cfg.torch_device, cfg.mixed_precision)
    accelerator = make_accelerator(cfg.torch_device, precision)
    device = accelerator.device
    seed_everything(cfg.seed)
    out = Path(output_dir) if output_dir else Path(cfg.output_dir) / "distill" / experiment
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)

    half = teacher_dtype(device)
    if models is None:
        teacher_tokenizer, teacher = load_teacher(cfg, device=device, dtype=half)
        student_tokenizer, student = load_student(cfg, experiment, teacher.config.hidden_size)
    else:
        teacher_tokenizer, teacher, student_tokenizer, student = models
        teacher.requires_grad_(False).eval().to(device, half)
        if student.config.hidden_size != teacher.config.hidden_size:
            raise ValueError(f"student hidden size {student.config.hidden_size} != teacher hidden size "
                             f"{teacher.config.hidden_size}")
    seed_everything(cfg.seed)  # the same state however the models arrived
    student.to(device).train()

    # A side that the student's tokenizer would cut at max_length is not a pair to learn from. Cleaning already
    # filtered by the Korean student's tokenizer; the CLIP student reads Korean as byte pieces and loses more.
    train = splits["train"]
    too_long = overlong(student_tokenizer, train, cfg.max_length)
    if any(too_long):
        train = train.select([i for i, cut in enumerate(too_long) if not cut])
        if main:
            print(f"{experiment}: {sum(too_long)} of {len(too_long):,} training pairs have a side over {cfg.max_length} "
                  f"tokens of this student's tokenizer and are left out (val/test keep them, cut as the pipeline cuts)")
    # pre-tokenised tensors: tokenisation never runs inside the loop
    teacher_train = tokenize(teacher_tokenizer, train["en"], cfg.max_length)
    student_en = tokenize(student_tokenizer, train["en"], cfg.max_length)
    student_ko = tokenize(student_tokenizer, train["ko"], cfg.max_length)
    if val is None:
        val = prepare_eval(teacher, teacher_tokenizer, student_tokenizer, splits["val"], device, cfg.max_length)
    empty_student = tokenize(student_tokenizer, [""], cfg.max_length)
    empty_seq, empty_pooled = teacher_targets(teacher, tokenize(teacher_tokenizer, [""], cfg.max_length), device)
    empty_target = (empty_pooled if target == "pooled" else empty_seq).to(device)
    bytes_per_pair = (teacher.config.hidden_size * (cfg.max_length if target == "sequence" else 1)
                      * torch.finfo(half).bits // 8)
    if cache_teacher is None:  # cache when it fits in 2 GB of host memory
        cache_teacher = len(train) * bytes_per_pair <= 2 * 1024 ** 3
    on_gpu = device.type == "cuda"
    # token counts stay on the host: step_width reads them without waiting for the GPU
    lengths_en, lengths_ko = student_en.mask.sum(1), student_ko.mask.sum(1)
    lengths_empty = empty_student.mask.sum(1)
    lengths_teacher = teacher_train.mask.sum(1)
    cached = None
    if cache_teacher:
        seq, pooled = teacher_targets(teacher, teacher_train, device)
        cached = pooled if target == "pooled" else seq
        if on_gpu and cached.numel() * cached.element_size() <= 2 * 1024 ** 3:
            cached = cached.to(device)
    if on_gpu:  # the ids are small: keep them on the GPU, so a step copies nothing from the host
        for tokens in (teacher_train, student_en, student_ko, empty_student):
            tokens.ids, tokens.mask = tokens.ids.to(device), tokens.mask.to(device)

    world, rank = accelerator.num_processes, accelerator.process_index
    per_process = len(train) // world
    steps_per_epoch = math.ceil(per_process / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.num_epochs
    optimizer = make_optimizer(student, target, cfg.lr, cfg.weight_decay, device)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    student, optimizer = accelerator.prepare(student, optimizer)
    # Accelerate wraps the student's forward in autocast, and that wrapper would stay on the caller's model.
    # student_loss autocasts the training forward itself, so drop the wrapper: evaluation and the student
    # handed back run in fp32 whatever the training precision.
    raw_student = accelerator.unwrap_model(student, keep_fp32_wrapper=False)

    meta_base = {"profile": cfg.name, "experiment": experiment, "target": target, "teacher": cfg.sd_id,
                 "student": cfg.sd_id if experiment == "clip" else cfg.student_id,
                 "data_fingerprint": fingerprint(splits), "total_steps": total_steps,
                 "num_processes": world, "train_pairs": len(train), "mixed_precision": precision,
                 "teacher_dtype": str(half).removeprefix("torch."), "seed": cfg.seed}
    if main and progress:
        print(f"{experiment}: {len(train):,} pairs, {total_steps} steps on {world} process(es), device {device.type}, "
              f"student autocast {precision if precision != 'no' else 'off (fp32)'}, teacher {meta_base['teacher_dtype']}, "
              f"evaluation in fp32")
    start_step, best_val, best_step, history, train_log = 0, math.inf, -1, [], []
    last_dir, best_dir = out / "last", out / "best"
    if resume and (last_dir / "training_state.pt").exists():
        state = torch.load(last_dir / "training_state.pt", weights_only=False)
        from safetensors.torch import load_file

        raw_student.load_state_dict(load_file(str(last_dir / "model.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step, best_val, best_step = state["step"], state["best_val"], state["best_step"]
        history, train_log = state["history"], state["train_log"]
        _set_rng_state(state["rng"])
        if main:
            print(f"resumed from {last_dir} at step {start_step}/{total_steps}")

    def save_last(step: int) -> None:
        state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                 "best_val": best_val, "best_step": best_step, "history": history, "train_log": train_log,
                 "rng": _rng_state()}
        save_checkpoint(last_dir, raw_student, student_tokenizer, {**meta_base, "step": step}, state)

    if start_step == 0:  # the untrained student, so curves and "loss falls" start from it
        metrics = evaluate(raw_student, val, target, device, accelerator=accelerator)
        history.append({**metrics, "step": 0, "epoch": 0.0, "seconds": 0.0})
    empty_weight = cfg.empty_prompt_weight
    running = torch.zeros(3, device=device)
    running_steps = 0
    bar = tqdm(range(start_step, total_steps), initial=start_step, total=total_steps, desc=experiment,
               disable=not (progress and main), unit="step")
    perm_epoch, shard = -1, None
    started = time.perf_counter()
    for step in bar:
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:  # a fresh permutation per epoch, from the seed alone (so resume is exact)
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            shard, perm_epoch = perm[: per_process * world][rank::world], epoch
            shard_on_device = shard.to(device)
        idx = shard[i * cfg.batch_size:(i + 1) * cfg.batch_size]
        tok = shard_on_device[i * cfg.batch_size:(i + 1) * cfg.batch_size]  # indexes tensors on the device
        if cached is None:
            target_batch = teacher_batch(teacher, teacher_train.ids[tok], target,
                                         step_width(teacher, target, lengths_teacher[idx]))
        elif cached.device.type == device.type:
            target_batch = cached[tok]
        else:  # a cache too large for the GPU: gather on the host into pinned memory, copy asynchronously
            target_batch = cached[idx].pin_memory().to(device, non_blocking=True)
        ids = torch.cat([student_en.ids[tok], student_ko.ids[tok], empty_student.ids])
        mask = torch.cat([student_en.mask[tok], student_ko.mask[tok], empty_student.mask])
        width = step_width(student, target, lengths_en[idx], lengths_ko[idx], lengths_empty)
        running += distill_step(student, optimizer, scheduler, accelerator, ids, mask, target_batch, target,
                                empty_target, empty_weight, cfg.grad_clip, width)
        running_steps += 1
        done = step + 1
        if done % log_every == 0 or done == total_steps:  # the only host sync of the loop
            mean = (accelerator.reduce(running, reduction="mean") / running_steps).tolist()
            train_log.append({"step": done, "epoch": done / steps_per_epoch, "loss": 100 * mean[0],
                              "loss_en": 100 * mean[1], "loss_ko": 100 * mean[2], "lr": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{100 * mean[0]:.3f}")
            running.zero_()
            running_steps = 0
        if done % cfg.eval_every == 0 or done == total_steps:
            metrics = evaluate(raw_student, val, target, device, accelerator=accelerator)
            metrics.update(step=done, epoch=round(done / steps_per_epoch, 3),
                           seconds=round(time.perf_counter() - started, 1))
            history.append(metrics)
            if metrics["val_loss"] < best_val:
                best_val, best_step = metrics["val_loss"], done
                if main:
                    save_checkpoint(best_dir, raw_student, student_tokenizer,
                                    {**meta_base, "step": done, "metrics": metrics})
            if main:
                save_last(done)
        if stop_after is not None and done >= stop_after and done < total_steps:
            if main:
                save_last(done)
            bar.close()
            return DistillResult(out, best_dir, best_step, best_val, history, train_log, finished=False)
    bar.close()
    accelerator.wait_for_everyone()

    # score the best checkpoint on the test split
    from safetensors.torch import load_file

    raw_student.load_state_dict(load_file(str(best_dir / "model.safetensors")))
    test = prepare_eval(teacher, teacher_tokenizer, student_tokenizer, splits["test"], device, cfg.max_length) \
        if "test" in splits and len(splits["test"]) else None
    test_metrics = None
    if test is not None:
        test_metrics = evaluate(raw_student, test, target, device, accelerator=accelerator)
    result = DistillResult(out, best_dir, best_step, best_val, history, train_log, test_metrics)
    if main:
        summary = {**meta_base, "best_step": best_step, "best_val_loss": best_val, "best_dir": str(best_dir),
                   "test": test_metrics, "history": history, "train_log": train_log}
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        _write_csv(out / "history.csv", history)
        _write_csv(out / "train_log.csv", train_log)
    return result


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def load_metrics(cfg, experiment: str) -> dict:
    """The ``metrics.json`` a finished run of ``experiment`` wrote in this profile."""
    path = Path(cfg.output_dir) / "distill" / experiment / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics for {experiment!r} in profile {cfg.name!r} ({path}); "
                                f"run its notebook or `python -m kdutils train --experiment {experiment}` first")
    metrics = json.loads(path.read_text(encoding="utf-8"))
    metrics["best_dir"] = str(path.parent / "best")  # where it is now, even if outputs/ moved
    return metrics


def compare_experiments(cfg):
    """Every experiment trained so far in this profile next to the study's logged losses.

    All MSE values are x100 (the study logged plain ``nn.MSELoss`` values, so
    its numbers are multiplied by 100 here). ``val_loss``/``mse_en``/``mse_ko``
    are validation values at the best step; ``test_*`` columns score that
    checkpoint on the test split.
    """
    import pandas as pd

    rows = []
    for experiment in EXPERIMENTS:
        try:
            m = load_metrics(cfg, experiment)
        except FileNotFoundError:
            continue
        best = next(h for h in m["history"] if h["step"] == m["best_step"])
        t = m["test"] or {}
        rows.append({"experiment": experiment, "source": f"this course ({cfg.name})", "best_step": m["best_step"],
                     "val_loss": best["val_loss"], "mse_en": best["mse_en"], "mse_ko": best["mse_ko"],
                     **{f"test_{k}": t.get(k) for k in ("seq_mse_ko", "cos_ko", "r1_ko2en", "empty_mse")}})
    for experiment, study in STUDY_RESULTS.items():
        rows.append({"experiment": experiment, "source": "study (its logged valid loss)",
                     **{k: 100 * v for k, v in study.items()}})
    return pd.DataFrame(rows).set_index(["experiment", "source"]).sort_index()


def ensure_trained(cfg, experiment: str, *, train_missing: bool = True) -> Path | None:
    """The ``best/`` checkpoint of ``experiment`` in this profile, training it first if missing.

    Lets the sampling notebooks run on their own: in ``tiny`` a missing
    student costs about half a minute; in ``class``/``paper`` run its notebook
    (or pass ``train_missing=False`` to get ``None`` instead).
    """
    from .data import prepare_splits

    try:
        return Path(load_metrics(cfg, experiment)["best_dir"])
    except FileNotFoundError:
        if not train_missing:
            return None
        print(f"no trained {experiment!r} student in profile {cfg.name!r} yet: training it now")
        distill(cfg, experiment, prepare_splits(cfg))
        return Path(load_metrics(cfg, experiment)["best_dir"])
