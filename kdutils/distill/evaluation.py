"""Measuring a student on held-out pairs: embedding errors, the empty prompt, retrieval (03's table of metrics)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..metrics import masked_mean, retrieval_accuracy
from .step import Tokens, encode, tokenize


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
    # Equal shards, wrapping around, so that all_gather lines up and [:n] drops exactly the extra rows. By hand:
    # split_between_processes(apply_padding=True) pads every short shard at its own end, so with two or more
    # padded shards the gathered rows are out of order (n=9 on 4 processes repeats row 8 and loses row 7), and
    # gather_for_metrics trims padding only for a prepared DataLoader
    per_rank = math.ceil(n / world)
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
