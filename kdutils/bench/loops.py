"""The two training steps the bench compares, on full-size architectures with random weights.

``reference_step`` is the study's step: fp32, a teacher forward that builds a graph, separate student
passes for en and ko, and three ``.cpu().numpy()`` calls. ``fast_step`` is the engine's ``distill_step``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..distill import (TARGETS, distill_step, make_accelerator, make_optimizer, mixed_precision, step_width,
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
