"""Loading the teacher and the students, and counting parameters."""

from __future__ import annotations

from .tiny import resolve

EXPERIMENTS = ("clip", "roberta", "roberta_pooler")


def count_parameters(model) -> int:
    """Number of parameters (the study reports 123,060,080 for CLIP and 68,090,880 for roberta-small)."""
    return sum(p.numel() for p in model.parameters())


def load_tokenizers(cfg):
    """``(teacher_tokenizer, student_tokenizer)``: SD's CLIP tokenizer and the Korean student's, as shipped.

    For measuring and cleaning text (no model is loaded, nothing is truncated).
    """
    from transformers import AutoTokenizer, CLIPTokenizer

    return (CLIPTokenizer.from_pretrained(resolve(cfg.sd_id), subfolder="tokenizer"),
            AutoTokenizer.from_pretrained(resolve(cfg.student_id)))


def load_teacher(cfg, device: str | None = None, dtype=None):
    """The frozen teacher: SD's own ``tokenizer`` and ``text_encoder`` (CLIP), in eval mode.

    Returns ``(teacher_tokenizer, teacher)``.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    teacher_tokenizer = CLIPTokenizer.from_pretrained(resolve(cfg.sd_id), subfolder="tokenizer")
    teacher = CLIPTextModel.from_pretrained(resolve(cfg.sd_id), subfolder="text_encoder")
    teacher.requires_grad_(False).eval()
    teacher.to(device or cfg.torch_device, dtype=dtype)
    return teacher_tokenizer, teacher


def load_student(cfg, experiment: str, teacher_hidden_size: int | None = None):
    """A fresh student for an experiment, before any distillation.

    ``clip``: a CLIPTextModel initialised from the teacher, with the CLIP
    tokenizer for both languages. ``roberta``/``roberta_pooler``: the Korean
    encoder ``cfg.student_id`` with its WordPiece tokenizer, set up so that the
    diffusers pipeline passes it the attention mask it was trained with.
    Returns ``(student_tokenizer, student)``.
    """
    from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer

    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {EXPERIMENTS}")
    if experiment == "clip":
        student_tokenizer = CLIPTokenizer.from_pretrained(resolve(cfg.sd_id), subfolder="tokenizer")
        student = CLIPTextModel.from_pretrained(resolve(cfg.sd_id), subfolder="text_encoder")
    else:
        student_tokenizer = AutoTokenizer.from_pretrained(resolve(cfg.student_id))
        student = AutoModel.from_pretrained(resolve(cfg.student_id))
        student.config.use_attention_mask = True  # diffusers' encode_prompt reads this flag
    student_tokenizer.model_max_length = cfg.max_length
    if teacher_hidden_size is not None and student.config.hidden_size != teacher_hidden_size:
        raise ValueError(
            f"student hidden size {student.config.hidden_size} != teacher hidden size {teacher_hidden_size}: "
            f"the UNet reads {teacher_hidden_size}-wide embeddings; pick a student of that width "
            f"(klue/roberta-small has 768, like SD v1's CLIP)"
        )
    return student_tokenizer, student
