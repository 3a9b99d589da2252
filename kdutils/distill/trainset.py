"""Training data for the loop: the pairs tokenized once, the teacher's targets, the order of each epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .evaluation import teacher_targets
from .step import Tokens, step_width, teacher_batch, tokenize


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
        if self.cached is None:
            width = step_width(teacher, target, self.lengths["teacher"][idx])
            target_batch = teacher_batch(teacher, self.teacher_en.ids[idx_on_device], target, width)
        else:
            target_batch = self.cached[idx_on_device]
        en, ko, empty = self.student_en, self.student_ko, self.student_empty
        ids = torch.cat([en.ids[idx_on_device], ko.ids[idx_on_device], empty.ids])
        mask = torch.cat([en.mask[idx_on_device], ko.mask[idx_on_device], empty.mask])
        width = step_width(student, target, self.lengths["en"][idx], self.lengths["ko"][idx], self.lengths["empty"])
        return ids, mask, target_batch, width


def prepare_train(teacher, teacher_tokenizer, student_tokenizer, train, target: str, device, max_length: int,
                  cache_gb: float = 2.0) -> TrainData:
    """Tokenise the training pairs for both models and compute the teacher's fixed targets.

    The teacher's outputs for every pair are computed once and kept on the
    training device when they fit in ``cache_gb`` GiB (the profile's
    ``teacher_cache_gb``, a budget on that device; 0: never). On a GPU the ids
    move there too, so a step copies nothing from the host.
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
    cached = None
    if 0 < len(train) * bytes_per_pair <= cache_gb * 1024 ** 3:
        seq, pooled = teacher_targets(teacher, teacher_en, device)
        cached = (pooled if target == "pooled" else seq).to(device)
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
    from ..data import overlong

    too_long = overlong(student_tokenizer, train, max_length)
    if not any(too_long):
        return train
    if say:
        print(f"{experiment}: {sum(too_long)} of {len(too_long):,} training pairs have a side over {max_length} "
              f"tokens of this student's tokenizer and are left out (val/test keep them, cut as the pipeline cuts)")
    return train.select([i for i, cut in enumerate(too_long) if not cut])
