"""The distillation engine shared by notebooks 03-05 and ``python -m kdutils train``.

The loss is the study's: ``MSE(student(en), teacher(en)) + MSE(student(ko), teacher(en))``
on the last hidden state (``sequence``, what the UNet reads) or on pooled
vectors (``pooled``), plus an optional term that teaches the empty prompt used
by classifier-free guidance. The student is called exactly as diffusers'
``encode_prompt`` calls a text encoder, so what it learns is what the
pipeline gets. Training runs under Hugging Face Accelerate: mixed precision on
CUDA, fp32 on CPU, and data parallel under ``accelerate launch``.

Reading order: one step (``student_loss``, ``update``, ``distill_step``),
evaluation, then ``distill``, whose loop calls named pieces for setup
(``setup_run``), batches (``TrainData.batch``), evaluation and checkpoints
(``evaluate_and_checkpoint``, ``save_last``, ``resume_state``) and the end
(``finish``). Tables that put runs next to the study live in ``kdutils.report``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .files import folder_lock, is_leftover, read_json, recover, staging, swap_in, write_json, write_text
from .metrics import masked_mean, retrieval_accuracy
from .models import load_student, load_teacher, student_env_var, trained_student_source
from .profiles import EXPERIMENTS, TARGETS, check_experiment  # noqa: F401 (kd.distill.TARGETS as before)
from .tiny import model_label



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

    ``width`` (from ``step_width``) drops trailing padding columns. ``accelerator=None``
    runs in fp32 without autocast (notebook 03 checks its hand-written step against this).
    """
    b = len(target_batch)
    if width is not None:
        ids, mask = ids[:, :width], mask[:, :width]
    with accelerator.autocast() if accelerator is not None else contextlib.nullcontext():
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


# ------------------------------------ results, optimizer, precision, checkpoints
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


def cpu_bf16_supported() -> bool:
    """True when this CPU has bf16 matrix units: AVX512-BF16 or AMX.

    ``torch.backends.cpu.get_cpu_capability()`` is not enough: on an AMD EPYC
    with avx512_bf16 in /proc/cpuinfo it says only "AVX512". torch's own
    probes (``torch.cpu._is_avx512_bf16_supported``, ``_is_amx_tile_supported``)
    see the feature; the capability string is read as well, for builds that
    name it there. Tests mock this function.
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    for check in checks:
        try:
            if check is not None and check():
                return True
        except (RuntimeError, AttributeError):
            pass
    try:
        capability = torch.backends.cpu.get_cpu_capability().upper()
    except (RuntimeError, AttributeError):
        return False
    return "AMX" in capability or "BF16" in capability


def teacher_dtype(device, precision: str = "no") -> torch.dtype:
    """The frozen teacher's dtype (its outputs are targets only, it is never trained).

    fp16 on CUDA; bf16 on a CPU that trains in bf16 (``precision == "bf16"``),
    where the bf16 matrix units make its forward several times faster; fp32
    otherwise (a CPU in fp32, and Apple's MPS, where the course trains in fp32).
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and precision == "bf16":
        return torch.bfloat16
    return torch.float32


def make_optimizer(student, target: str, lr: float, weight_decay: float, device, freeze_words: bool = False):
    """AdamW for the student, no decay on biases and LayerNorm weights.

    Fused (one kernel for all parameters) on CUDA and CPU: on a 2-core CPU its
    step for the 123M-parameter CLIP student took 0.07 s instead of 0.44 s.
    For ``sequence`` targets RoBERTa's pooler is frozen: it is not in the loss,
    and data-parallel training would wait for its gradients forever.
    ``freeze_words`` freezes the word embeddings (``Profile.freeze_word_embeddings``).
    """
    if target == "sequence" and getattr(student, "pooler", None) is not None:
        student.pooler.requires_grad_(False)
    if freeze_words:
        student.get_input_embeddings().requires_grad_(False)
    return torch.optim.AdamW(_param_groups(student, weight_decay), lr=lr,
                             fused=torch.device(device).type in ("cuda", "cpu"))


def mixed_precision(device, setting: str = "auto") -> str:
    """The autocast precision for training on ``device``: ``"no"`` (fp32), ``"bf16"`` or ``"fp16"``.

    ``auto`` picks bf16 only on GPUs that compute in it (compute capability
    8.0 or more: A100, RTX 30xx and newer) and fp16 on older ones such as the
    T4, where Accelerate adds a gradient scaler. ``torch.cuda.is_bf16_supported()``
    is not the test: it also says yes on a T4, which only emulates bf16,
    slowly. On a CPU ``auto`` picks bf16 where the CPU has bf16 matrix units
    (AVX512-BF16 or AMX, :func:`cpu_bf16_supported`; a 2048² matmul ran 3 to 4
    times faster than in fp32 on such an AMD EPYC) and fp32 elsewhere. ``fp16``
    cannot be forced on a CPU (Accelerate would silently train in fp32).

    On Apple's MPS ``auto`` trains in fp32: every MPS device computes in fp32,
    while autocast and the fp16 gradient scaler on MPS came to torch late and
    depend on the torch and macOS versions, and no Mac was at hand to check
    them. A learner can still force ``bf16`` there.
    """
    from .profiles import PRECISIONS

    if setting not in PRECISIONS:
        raise ValueError(f"unknown mixed_precision {setting!r}; choose one of {PRECISIONS}")
    kind = torch.device(device).type
    if setting == "auto":
        if kind == "cpu":
            return "bf16" if cpu_bf16_supported() else "no"
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

    Everything goes to ``.NAME.tmp`` beside ``folder`` and is swapped in by
    renames (``kdutils.files.swap_in``): a process killed at any moment leaves
    the previous checkpoint or the new one complete, never half of one, and
    the next save or resume puts it back in place (``kdutils.files.recover``).
    """
    folder = Path(folder)
    tmp = staging(folder)
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bar_was_on, hub_bars_were_on = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar would print at every evaluation
    try:
        student.save_pretrained(str(tmp))
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
        if hub_bars_were_on:  # transformers' switch turns the hub's download bars off too
            enable_progress_bars()
    tokenizer.save_pretrained(str(tmp))
    (tmp / "kdsd_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if state is not None:
        torch.save(state, tmp / "training_state.pt")
    return swap_in(folder)


def load_weights(model, folder: Path, fix: str) -> None:
    """Load ``folder/model.safetensors`` into ``model``; a missing or damaged file says which and what to do."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{path} is damaged ({err}); {fix}") from None
    model.load_state_dict(weights)


@dataclass
class TrainState:
    """What changes as a run goes: its step, the best validation loss so far and the logs.

    ``last/`` keeps it (with the weights, optimizer, schedule and random
    generators), so a resumed run ends where an uninterrupted one ends.
    """

    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)


# ------------------------------------------------------------ training data
@dataclass
class TrainData:
    """The training pairs tokenised once for both models, and the teacher's targets that do not change.

    Token counts stay on the host, so ``step_width`` never waits for the GPU.
    ``cached`` holds the teacher's target for every pair, or is ``None``
    (then each step runs the teacher on its batch).
    """

    teacher_en: Tokens
    student_en: Tokens
    student_ko: Tokens
    student_empty: Tokens
    empty_target: torch.Tensor
    cached: torch.Tensor | None
    lengths: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.student_en)

    def batch(self, teacher, student, target: str, idx: torch.Tensor, idx_on_device: torch.Tensor):
        """One step's inputs for the pairs ``idx``: ``(ids, mask, target_batch, width)``.

        The student's rows are laid out ``[en; ko; ""]`` for one forward pass;
        ``idx_on_device`` is ``idx`` on the device, to index tensors there.
        """
        device = idx_on_device.device
        if self.cached is None:
            width = step_width(teacher, target, self.lengths["teacher"][idx])
            target_batch = teacher_batch(teacher, self.teacher_en.ids[idx_on_device], target, width)
        elif self.cached.device.type == device.type:
            target_batch = self.cached[idx_on_device]
        else:  # a cache too large for the GPU: gather on the host into pinned memory, copy asynchronously
            target_batch = self.cached[idx].pin_memory().to(device, non_blocking=True)
        en, ko, empty = self.student_en, self.student_ko, self.student_empty
        ids = torch.cat([en.ids[idx_on_device], ko.ids[idx_on_device], empty.ids])
        mask = torch.cat([en.mask[idx_on_device], ko.mask[idx_on_device], empty.mask])
        width = step_width(student, target, self.lengths["en"][idx], self.lengths["ko"][idx], self.lengths["empty"])
        return ids, mask, target_batch, width


def prepare_train(teacher, teacher_tokenizer, student_tokenizer, train, target: str, device, max_length: int,
                  cache_teacher: bool | None = None) -> TrainData:
    """Tokenise the training pairs for both models and compute the teacher's fixed targets.

    ``cache_teacher=None`` caches the teacher's outputs for every pair when
    they fit in 2 GB of host memory. On a GPU the ids (and a cache of up to
    2 GB) move there, so a step copies nothing from the host.
    """
    device = torch.device(device)
    teacher_en = tokenize(teacher_tokenizer, train["en"], max_length)
    student_en = tokenize(student_tokenizer, train["en"], max_length)
    student_ko = tokenize(student_tokenizer, train["ko"], max_length)
    student_empty = tokenize(student_tokenizer, [""], max_length)
    empty_seq, empty_pooled = teacher_targets(teacher, tokenize(teacher_tokenizer, [""], max_length), device)
    empty_target = (empty_pooled if target == "pooled" else empty_seq).to(device)
    lengths = {"teacher": teacher_en.mask.sum(1), "en": student_en.mask.sum(1), "ko": student_ko.mask.sum(1),
               "empty": student_empty.mask.sum(1)}
    bytes_per_pair = (teacher.config.hidden_size * (max_length if target == "sequence" else 1)
                      * torch.finfo(teacher.dtype).bits // 8)
    if cache_teacher is None:
        cache_teacher = len(train) * bytes_per_pair <= 2 * 1024 ** 3
    cached = None
    if cache_teacher:
        seq, pooled = teacher_targets(teacher, teacher_en, device)
        cached = pooled if target == "pooled" else seq
        if device.type == "cuda" and cached.numel() * cached.element_size() <= 2 * 1024 ** 3:
            cached = cached.to(device)
    if device.type == "cuda":  # the ids are small: keep them on the GPU
        for tokens in (teacher_en, student_en, student_ko, student_empty):
            tokens.ids, tokens.mask = tokens.ids.to(device), tokens.mask.to(device)
    return TrainData(teacher_en, student_en, student_ko, student_empty, empty_target, cached, lengths)


def epoch_order(num_pairs: int, epoch: int, seed: int, world: int = 1, rank: int = 0) -> torch.Tensor:
    """This process's pair indices for ``epoch``: a permutation from the seed alone, so resume is exact.

    Each of the ``world`` processes takes every ``world``-th pair of the same
    permutation (the remainder that does not divide evenly is left out).
    """
    perm = torch.randperm(num_pairs, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[: num_pairs // world * world][rank::world]


def trainable_pairs(train, student_tokenizer, max_length: int, experiment: str, say: bool = True):
    """The training pairs without those that the student's tokenizer would cut at ``max_length``.

    A cut sentence is not a pair to learn from. Cleaning already filtered by
    the Korean student's tokenizer; the CLIP student reads Korean as byte
    pieces and loses more. Val/test keep every pair (cut as the pipeline cuts).
    """
    from .data import overlong

    too_long = overlong(student_tokenizer, train, max_length)
    if not any(too_long):
        return train
    if say:
        print(f"{experiment}: {sum(too_long)} of {len(too_long):,} training pairs have a side over {max_length} "
              f"tokens of this student's tokenizer and are left out (val/test keep them, cut as the pipeline cuts)")
    return train.select([i for i, cut in enumerate(too_long) if not cut])


# -------------------------------------------------------------------- setup
@dataclass
class Run:
    """Everything a training run sets up before its first step (``setup_run``); the loop only reads it."""

    cfg: Any
    experiment: str
    target: str
    accelerator: Any
    out: Path
    teacher: torch.nn.Module
    teacher_tokenizer: Any
    student: torch.nn.Module  # as Accelerate prepared it (wrapped for data parallel under accelerate launch)
    raw_student: torch.nn.Module  # the plain model: evaluated, saved and handed back, always in fp32
    student_tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: TrainData
    val: EvalData
    steps_per_epoch: int
    total_steps: int
    meta: dict  # written with every checkpoint and into metrics.json

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def best_dir(self) -> Path:
        return self.out / "best"

    @property
    def last_dir(self) -> Path:
        return self.out / "last"

    def describe(self) -> str:
        precision = self.meta["mixed_precision"]
        return (f"{self.experiment}: {self.meta['train_pairs']:,} pairs, {self.total_steps} steps on "
                f"{self.meta['num_processes']} process(es), device {self.device.type}, student autocast "
                f"{precision if precision != 'no' else 'off (fp32)'}, teacher {self.meta['teacher_dtype']}, "
                f"evaluation in fp32")


def check_inputs(experiment: str, splits) -> None:
    """Fail early, saying what to do, on an unknown experiment or a missing train/val split."""
    check_experiment(experiment)
    for name in ("train", "val"):
        if name not in splits or len(splits[name]) == 0:
            raise ValueError(f"the {name!r} split is empty or missing; prepare data with kd.data.prepare_splits(cfg)")


RUN_ENTRIES = ("best", "last", "metrics.json", "history.csv", "train_log.csv")  # what a run writes in its folder


def run_dir(cfg, experiment: str) -> Path:
    """Where ``distill`` writes ``experiment``'s run by default: ``<output folder>/distill/<experiment>``."""
    return Path(cfg.output_dir) / "distill" / experiment


def run_entries(out: Path) -> list[str]:
    """The names in ``out`` that belong to a run (``best``, ``last``, ``metrics.json`` ...); raises on others.

    A complete copy that an interrupted swap left (``.last.new``, ``.last.old``) counts as its checkpoint.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; give the run another output folder (--output-dir)")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    entries = {n[1:-4] if n.startswith(".") and n.endswith((".new", ".old")) else n
               for n in names if not (is_leftover(n) and n.endswith((".tmp", ".lock")))}
    foreign = sorted(entries - set(RUN_ENTRIES))
    if foreign:
        raise FileExistsError(f"{out} holds files that are not a training run's ({', '.join(foreign[:5])}"
                              f"{' ...' if len(foreign) > 5 else ''}); a run is not mixed into them. Give it a new "
                              f"or empty folder (output_dir= / --output-dir)")
    return sorted(entries)


def check_run_folder(out: Path, *, resume: bool = False, overwrite: bool = False, clean: bool = False) -> None:
    """Refuse a fresh run into a folder that already holds one, saying how to keep, continue or replace it.

    ``resume`` continues (or reuses) the run there; ``overwrite`` replaces it.
    With ``clean`` (the process that writes, holding the folder's lock) a swap
    that a crash interrupted is finished first, and ``overwrite`` removes the old run.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run in the folder, "
                         "overwrite replaces it")
    out = Path(out)
    entries = run_entries(out)
    if clean:
        for name in ("best", "last"):
            note = recover(out / name)
            if note:
                print(note)
    if not entries or resume:
        return
    if not overwrite:
        if "metrics.json" in entries:
            what = "a finished run (metrics.json"
            try:
                what += f", best/ at step {read_json(out / 'metrics.json', '')['best_step']})"
            except (ValueError, KeyError):
                what += ")"
        else:
            what = "an unfinished run"
            try:
                what += f" (last/ at step {read_json(out / 'last' / 'kdsd_meta.json', '')['step']})"
            except (ValueError, KeyError, OSError):
                pass
        raise FileExistsError(f"{out} already holds {what}, and a new run would replace it. To keep it, train into "
                              f"another folder (output_dir= / --output-dir); to continue or reuse it, resume=True "
                              f"(--resume); to replace it, overwrite=True (--overwrite)")
    if clean:
        for name in entries:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"overwrite: removed the previous run in {out} ({', '.join(entries)})")


def setup_models(cfg, experiment: str, device, models: tuple | None = None, precision: str = "no") -> tuple:
    """``(teacher_tokenizer, teacher, student_tokenizer, student)``, loaded for ``experiment`` or the caller's.

    The frozen teacher ends up on ``device`` in ``teacher_dtype(device, precision)``
    (fp16 on CUDA, bf16 on a CPU training in bf16); the student's width must
    match it, since the UNet reads that width.
    """
    half = teacher_dtype(device, precision)
    if models is None:
        teacher_tokenizer, teacher = load_teacher(cfg, device=device, dtype=half)
        student_tokenizer, student = load_student(cfg, experiment, teacher.config.hidden_size)
        return teacher_tokenizer, teacher, student_tokenizer, student
    teacher_tokenizer, teacher, student_tokenizer, student = models
    teacher.requires_grad_(False).eval().to(device, half)
    if student.config.hidden_size != teacher.config.hidden_size:
        raise ValueError(f"student hidden size {student.config.hidden_size} != teacher hidden size "
                         f"{teacher.config.hidden_size}")
    return models


def setup_run(cfg, experiment: str, splits, *, models: tuple | None = None, val: EvalData | None = None,
              output_dir: str | Path | None = None, cache_teacher: bool | None = None) -> Run:
    """Everything before the first step: accelerator and precision, models, data, optimizer and schedule."""
    from transformers import get_cosine_schedule_with_warmup

    from .profiles import seed_everything
    from .data import fingerprint

    check_inputs(experiment, splits)
    target = TARGETS[experiment]
    precision = mixed_precision(cfg.torch_device, cfg.mixed_precision)
    accelerator = make_accelerator(cfg.torch_device, precision)
    device = accelerator.device
    seed_everything(cfg.seed)
    out = Path(output_dir) if output_dir else run_dir(cfg, experiment)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    teacher_tokenizer, teacher, student_tokenizer, student = setup_models(cfg, experiment, device, models, precision)
    seed_everything(cfg.seed)  # the same state however the models arrived
    student.to(device).train()

    train = trainable_pairs(splits["train"], student_tokenizer, cfg.max_length, experiment,
                            say=accelerator.is_main_process)
    data = prepare_train(teacher, teacher_tokenizer, student_tokenizer, train, target, device, cfg.max_length,
                         cache_teacher)
    if val is None:
        val = prepare_eval(teacher, teacher_tokenizer, student_tokenizer, splits["val"], device, cfg.max_length)
    world = accelerator.num_processes
    steps_per_epoch = math.ceil(len(train) // world / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.num_epochs
    optimizer = make_optimizer(student, target, cfg.lr, cfg.weight_decay, device,
                               freeze_words=cfg.freeze_word_embeddings and experiment in FREEZABLE)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    student, optimizer = accelerator.prepare(student, optimizer)
    # Accelerate wraps the student's forward in autocast, and that wrapper would stay on the caller's model.
    # student_loss autocasts the training forward itself, so drop the wrapper: evaluation and the student
    # handed back run in fp32 whatever the training precision.
    raw_student = accelerator.unwrap_model(student, keep_fp32_wrapper=False)
    meta = {"profile": cfg.name, "experiment": experiment, "target": target, "teacher": cfg.sd_id,
            "student": cfg.sd_id if experiment == "clip" else model_label(cfg.student_id),
            "data_fingerprint": fingerprint(splits), "total_steps": total_steps,
            "num_processes": world, "train_pairs": len(train), "mixed_precision": precision,
            "teacher_dtype": str(teacher_dtype(device, precision)).removeprefix("torch."), "seed": cfg.seed,
            "student_padding": None if experiment == "clip" else cfg.student_padding,
            **{name: getattr(cfg, name) for name in TRAINING_SETTINGS}}
    return Run(cfg, experiment, target, accelerator, out, teacher, teacher_tokenizer, student, raw_student,
               student_tokenizer, optimizer, scheduler, data, val, steps_per_epoch, total_steps, meta)


# --------------------------------------------------------------- the loop
def distill(cfg, experiment: str, splits, *, models: tuple | None = None, val: EvalData | None = None,
            output_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
            stop_after: int | None = None, cache_teacher: bool | None = None, log_every: int = 10,
            progress: bool = True) -> DistillResult:
    """Train a student for ``experiment`` on ``splits`` (train/val/test with ``ko``/``en``).

    Evaluates on val every ``cfg.eval_every`` steps and at the end, keeps the
    checkpoint with the lowest validation loss in ``best/`` and the resumable
    state in ``last/``, then scores ``best`` on the test split. ``resume``
    continues the run in the output folder from ``last/`` and ends where an
    uninterrupted run ends (a finished run is reused as it is); its settings
    must match (``resume_settings``). Without ``resume``, a folder that
    already holds a run is refused unless ``overwrite=True`` replaces it
    (``check_run_folder``). The run holds a lock on its folder, so a second
    run into it stops at once. ``stop_after`` stops after that many steps (as a crash would).

    A notebook that already loaded ``models = (teacher_tokenizer, teacher,
    student_tokenizer, student)`` and computed ``val = prepare_eval(...)``
    passes them, so nothing is loaded or computed twice. The teacher is then
    moved to the device (fp16 on CUDA) in place; the student comes back in
    fp32 with the best checkpoint's weights and without Accelerate's autocast
    wrapper, so measuring it afterwards compares with the metrics here.
    """
    check_inputs(experiment, splits)
    out = Path(output_dir) if output_dir else run_dir(cfg, experiment)
    main = os.environ.get("RANK", "0") == "0"  # under accelerate launch only the main process writes
    with folder_lock(out, "training run") if main else contextlib.nullcontext():
        check_run_folder(out, resume=resume, overwrite=overwrite, clean=main)
        run = setup_run(cfg, experiment, splits, models=models, val=val, output_dir=out, cache_teacher=cache_teacher)
        return _train(run, splits, resume, stop_after, log_every, progress)


def _train(run: Run, splits, resume: bool, stop_after: int | None, log_every: int, progress: bool) -> DistillResult:
    """The training loop of ``distill``, from its first (or resumed) step to the test scores."""
    from tqdm.auto import tqdm

    cfg, experiment = run.cfg, run.experiment
    if progress and run.main:
        print(run.describe())
    state = resume_state(run) if resume else TrainState()
    if state.step == 0:  # the untrained student, so curves and "loss falls" start from it
        state.history.append({**measure(run), "step": 0, "epoch": 0.0, "seconds": 0.0})
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    running, running_steps, order_epoch = torch.zeros(3, device=run.device), 0, -1
    # at most one refresh a second: in a notebook every refresh is a kernel message, and the thousands of a slow
    # run can overflow the output queue while nbval waits (it then fails with "Timeout ... waiting for output")
    bar = tqdm(range(state.step, run.total_steps), initial=state.step, total=run.total_steps, desc=experiment,
               disable=not (progress and run.main), unit="step", mininterval=1.0)
    started = time.perf_counter()
    for step in bar:
        epoch, i = divmod(step, run.steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(len(run.data), epoch, cfg.seed, world, rank), epoch
            order_on_device = order.to(run.device)
        rows = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
        ids, mask, target_batch, width = run.data.batch(run.teacher, run.student, run.target, order[rows],
                                                        order_on_device[rows])
        running += distill_step(run.student, run.optimizer, run.scheduler, run.accelerator, ids, mask, target_batch,
                                run.target, run.data.empty_target, cfg.empty_prompt_weight, cfg.grad_clip, width)
        running_steps += 1
        state.step = step + 1
        if state.step % log_every == 0 or state.step == run.total_steps:  # the only host sync of the loop
            bar.set_postfix(loss=f"{log_losses(run, state, running, running_steps):.3f}")
            running.zero_()
            running_steps = 0
        if state.step % cfg.eval_every == 0 or state.step == run.total_steps:
            evaluate_and_checkpoint(run, state, seconds=time.perf_counter() - started)
        if stop_after is not None and stop_after <= state.step < run.total_steps:
            if run.main:
                save_last(run, state)
            bar.close()
            return DistillResult(run.out, run.best_dir, state.best_step, state.best_val, state.history,
                                 state.train_log, finished=False)
    bar.close()
    run.accelerator.wait_for_everyone()
    return finish(run, state, splits)


# ------------------------------------------- evaluation, checkpoints, reports
def measure(run: Run) -> dict[str, float]:
    """The student's validation metrics now (fp32, all processes together)."""
    return evaluate(run.raw_student, run.val, run.target, run.device, accelerator=run.accelerator)


def log_losses(run: Run, state: TrainState, running: torch.Tensor, num_steps: int) -> float:
    """Average the summed ``(loss, loss_en, loss_ko)`` of the last ``num_steps`` steps over steps and
    processes into ``train_log`` (x100).

    The one place the loop waits for the device. Returns the loss for the progress bar.
    """
    mean = (run.accelerator.reduce(running, reduction="mean") / num_steps).tolist()
    loss, loss_en, loss_ko = (100 * x for x in mean)
    state.train_log.append({"step": state.step, "epoch": state.step / run.steps_per_epoch, "loss": loss,
                            "loss_en": loss_en, "loss_ko": loss_ko, "lr": run.scheduler.get_last_lr()[0]})
    return loss


def evaluate_and_checkpoint(run: Run, state: TrainState, seconds: float) -> dict[str, float]:
    """Measure on val; save ``best/`` if this is the lowest val loss so far, and ``last/`` in any case."""
    metrics = measure(run)
    metrics.update(step=state.step, epoch=round(state.step / run.steps_per_epoch, 3), seconds=round(seconds, 1))
    state.history.append(metrics)
    if metrics["val_loss"] < state.best_val:
        state.best_val, state.best_step = metrics["val_loss"], state.step
        if run.main:
            save_checkpoint(run.best_dir, run.raw_student, run.student_tokenizer,
                            {**run.meta, "step": state.step, "metrics": metrics})
    if run.main:
        save_last(run, state)
    return metrics


def save_last(run: Run, state: TrainState) -> None:
    """Write ``last/``: the weights and everything a resumed run needs to continue bit for bit."""
    training_state = {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
                      "step": state.step, "best_val": state.best_val, "best_step": state.best_step,
                      "history": state.history, "train_log": state.train_log, "rng": _rng_state()}
    save_checkpoint(run.last_dir, run.raw_student, run.student_tokenizer, {**run.meta, "step": state.step},
                    training_state)


def resume_state(run: Run) -> TrainState:
    """Load ``last/`` into the run's student, optimizer, schedule and random generators.

    Its settings must match the run's (``resume_settings``). A finished run
    whose ``last/`` was deleted resumes from its ``metrics.json`` (nothing is
    left to train); an empty folder starts from step 0 and says so, and so
    does a run with ``best/`` but no ``last/`` (killed before its first
    ``last/``, or ``last/`` deleted), keeping ``best/`` until a checkpoint beats it.
    """
    last, metrics_file = run.last_dir, run.out / "metrics.json"
    fix = (f"the run cannot continue from it ({run.best_dir} is a separate copy). Start over with overwrite=True "
           f"(--overwrite), or keep this folder and train into another one (output_dir= / --output-dir)")
    if last.exists():
        notes = resume_settings(read_json(last / "kdsd_meta.json", fix), run.meta, last)
        path = last / "training_state.pt"
        try:
            saved = torch.load(path, weights_only=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path} is missing; {fix}") from None
        except Exception as err:  # a truncated or overwritten file: torch raises several kinds
            raise ValueError(f"{path} is damaged ({type(err).__name__}: {err}); {fix}") from None
        load_weights(run.raw_student, last, fix)
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        _set_rng_state(saved["rng"])
        state = TrainState(saved["step"], saved["best_val"], saved["best_step"], saved["history"], saved["train_log"])
        where = f"{last} at step {state.step}/{run.total_steps}"
    elif metrics_file.exists():
        metrics = read_json(metrics_file, f"without last/ the run cannot rewrite it; train again with overwrite=True "
                                          f"(--overwrite), or into another folder")
        notes = resume_settings(metrics, run.meta, metrics_file)
        state = TrainState(run.total_steps, metrics["best_val_loss"], metrics["best_step"], metrics["history"],
                           metrics["train_log"])
        where = f"{metrics_file} (a finished run without last/)"
    elif run.best_dir.exists():  # killed before its first last/, or last/ was deleted: start again, keep best/
        best = read_json(run.best_dir / "kdsd_meta.json", "delete best/ too, or train into another folder")
        notes = resume_settings(best, run.meta, run.best_dir)
        if run.main:
            print(f"no last/ in {run.out} to continue from: training again from step 0; best/ (step {best['step']}, "
                  f"val loss {best['metrics']['val_loss']:.4f}) is kept until a checkpoint beats it"
                  + "".join(f"; {note}" for note in notes))
        return TrainState(best_val=best["metrics"]["val_loss"], best_step=best["step"])
    else:
        if run.main:
            print(f"nothing to resume in {run.out}: training from step 0")
        return TrainState()
    if run.main:
        print(f"resumed from {where}" + "".join(f"; {note}" for note in notes))
    return state


# the Profile values a run records (in kdsd_meta.json and metrics.json) besides its meta
TRAINING_SETTINGS = ("lr", "batch_size", "num_epochs", "weight_decay", "warmup_ratio", "grad_clip",
                     "empty_prompt_weight", "max_length", "eval_every", "freeze_word_embeddings")
# the experiments whose student already knows Korean words, so that freezing its word embeddings keeps them
FREEZABLE = ("roberta", "roberta_pooler")
# what a resumed run must share with the run it continues: the data, the model, the order of the pairs, the
# optimisation; anything else would splice two different runs into one history
RESUME_MUST_MATCH = ("experiment", "teacher", "student", "data_fingerprint", "seed", "student_padding",
                     "num_processes", "lr", "batch_size", "num_epochs", "weight_decay", "warmup_ratio", "grad_clip",
                     "empty_prompt_weight", "max_length", "freeze_word_embeddings")
# what may change on resume: how often it evaluates, and the precision of this machine (weights stay fp32)
RESUME_APPLIED = ("eval_every", "mixed_precision")


def resume_settings(saved: dict, now: dict, where: Path) -> list[str]:
    """Check that a run may continue the one saved at ``where``; return notes on the settings it applies.

    Raises ValueError naming every setting in ``RESUME_MUST_MATCH`` that differs.
    """
    differ = [f"{k} {saved[k]!r} (now {now[k]!r})" for k in RESUME_MUST_MATCH if k in saved and saved[k] != now[k]]
    if differ:
        raise ValueError(f"cannot resume from {where}: it was trained with other settings: {'; '.join(differ)}. "
                         f"Resume with the same settings, train into another folder (output_dir= / --output-dir), "
                         f"or start over with overwrite=True (--overwrite)")
    notes = [f"{k} {saved[k]!r} -> {now[k]!r} from here on" for k in RESUME_APPLIED if k in saved and saved[k] != now[k]]
    unchecked = [k for k in RESUME_MUST_MATCH if k not in saved]
    if unchecked:
        notes.append(f"not recorded by the kdutils that wrote it, so not checked: {', '.join(unchecked)}")
    return notes


def finish(run: Run, state: TrainState, splits) -> DistillResult:
    """Load ``best/`` back into the student, score it on the test split, and write the run's report."""
    load_weights(run.raw_student, run.best_dir, "the run's best checkpoint cannot be read back; train again with "
                 "overwrite=True (--overwrite), or into another folder")
    test_metrics = None
    if "test" in splits and len(splits["test"]):
        test = prepare_eval(run.teacher, run.teacher_tokenizer, run.student_tokenizer, splits["test"], run.device,
                            run.cfg.max_length)
        test_metrics = evaluate(run.raw_student, test, run.target, run.device, accelerator=run.accelerator)
    result = DistillResult(run.out, run.best_dir, state.best_step, state.best_val, state.history, state.train_log,
                           test_metrics)
    if run.main:
        write_report(run, result)
    return result


def write_report(run: Run, result: DistillResult) -> None:
    """``metrics.json`` (what later notebooks and ``load_metrics`` read), ``history.csv`` and ``train_log.csv``."""
    summary = {**run.meta, "best_step": result.best_step, "best_val_loss": result.best_val_loss,
               "best_dir": str(result.best_dir), "test": result.test_metrics, "history": result.history,
               "train_log": result.train_log}
    _write_csv(run.out / "history.csv", result.history)
    _write_csv(run.out / "train_log.csv", result.train_log)
    write_json(run.out / "metrics.json", summary)  # last: a run with metrics.json is finished


# -------------------------------------------------------------- finished runs
def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    if not rows:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())


def load_metrics(cfg, experiment: str) -> dict:
    """The ``metrics.json`` of ``experiment``'s student: the one the user named, else this profile's run.

    A student named with ``KDSD_TRAINED_<EXPERIMENT>`` (a folder or hub id,
    see ``kd.models.trained_student_source``) wins. Its metrics come from the
    ``metrics.json`` of the run it belongs to when that came along; a student
    without one (an exported pipeline, a bare ``best/``) gives what its
    checkpoint records, with ``test`` and ``history`` empty.
    """
    fix = (f"resume the run to write it again from its last/ (`python -m kdutils train --experiment {experiment} "
           f"--resume`, or distill(..., resume=True)); without last/, train again with --overwrite")
    given = trained_student_source(cfg, experiment)
    if given is not None:
        beside = given.parent / "metrics.json"
        metrics = read_json(beside, fix) if beside.is_file() else {}
        if metrics.get("experiment") != experiment:
            meta = read_json(given / "kdsd_meta.json", "copy the student's folder again, or train it again")
            metrics = {**meta, "best_step": meta.get("step"), "test": None, "history": [], "train_log": []}
        return {**metrics, "best_dir": str(given), "source": str(given)}
    path = run_dir(cfg, experiment) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics for {experiment!r} in profile {cfg.name!r} ({path}); "
                                f"run its notebook or `python -m kdutils train --experiment {experiment}` first, "
                                f"or name a trained one with {student_env_var(experiment)}=<folder or hub id>")
    metrics = read_json(path, fix)
    metrics["best_dir"] = str(path.parent / "best")  # where it is now, even if outputs/ moved
    return metrics


def outdated(cfg, metrics: dict, splits) -> list[str]:
    """How a finished run differs from what ``cfg`` would train now (empty when it does not).

    Catches students left in ``outputs/`` by an older course version or by a
    run with other settings: other pairs, another teacher, other padding.
    """
    from .data import fingerprint

    why = []
    if metrics.get("teacher") != cfg.sd_id:
        why.append(f"from teacher {metrics.get('teacher')!r}, not {cfg.sd_id!r}")
    if metrics.get("data_fingerprint") != fingerprint(splits):
        why.append("on other pairs than this profile's splits")
    student = model_label(cfg.student_id)
    if metrics.get("experiment") not in (None, "clip") and metrics.get("student") not in (None, student):
        why.append(f"from student {metrics.get('student')!r}, not {student!r}")
    # runs from before the meta recorded padding are caught by their pairs (the [PAD] students trained on world v1)
    padding = metrics.get("student_padding")
    if metrics.get("experiment") != "clip" and padding is not None and padding != cfg.student_padding:
        why.append(f"with {padding!r} padding, not {cfg.student_padding!r}")
    return why


def ensure_trained(cfg, experiment: str, *, train_missing: bool = True) -> Path | None:
    """The checkpoint of ``experiment``'s student: the one the user named, else this profile's ``best/``.

    Lets the sampling notebooks run on their own. A student named with
    ``KDSD_TRAINED_<EXPERIMENT>`` (folder or hub id: what a teacher trained
    once for a class) is used as it is. Otherwise a missing student is trained
    here (an interrupted run in its folder is continued): about half a minute
    in ``tiny``; in ``class``/``paper`` run its notebook (or pass
    ``train_missing=False`` to get ``None`` instead). A
    student trained on other pairs or with other settings (``outdated``) is
    used with a warning that says what differs and how to train it again.
    """
    import warnings

    from .data import prepare_splits

    given = trained_student_source(cfg, experiment)
    if given is not None:
        print(f"using the {experiment!r} student named by {student_env_var(experiment)}: {given}")
        return given
    try:
        metrics = load_metrics(cfg, experiment)
    except FileNotFoundError:
        if not train_missing:
            return None
        print(f"no trained {experiment!r} student in profile {cfg.name!r} yet: training it now")
        distill(cfg, experiment, prepare_splits(cfg), resume=True)
        return Path(load_metrics(cfg, experiment)["best_dir"])
    why = outdated(cfg, metrics, prepare_splits(cfg))
    if why:
        warnings.warn(f"the {experiment!r} student in {metrics['best_dir']} was trained " + "; ".join(why)
                      + f". Its numbers may not match this lesson's; to train it again, delete "
                      f"{Path(metrics['best_dir']).parent} and rerun, or run its notebook.", stacklevel=2)
    return Path(metrics["best_dir"])
