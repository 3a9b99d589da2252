"""Pretraining the toy world's ``klue/roberta-small``: a WordPiece vocabulary and masked-language modelling on Korean.

``toymodels.build`` runs it last and commits the result as ``tiny/roberta-small``; lesson 04 measures what
it buys against the blank student of the same vocabulary.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .files import staging, swap_in
from .tiny import MAX_LENGTH, TRAINED_DIR
from .trainloop import train_steps


@dataclass(frozen=True)
class PretrainRecipe:
    """Masked-language-model pretraining of the toy world's ``klue/roberta-small``; ``quick()`` is for tests."""

    sentences: int = 40_000  # generated lines about the world, before the bundled corpus's Korean
    steps: int = 10_000
    batch: int = 128
    lr: float = 2e-3
    mask_rate: float = 0.15  # BERT's: of these, 80% become [MASK], 10% a random token, 10% stay
    seed: int = 0
    threads: int = 2

    @classmethod
    def quick(cls) -> "PretrainRecipe":
        return cls(sentences=300, steps=3, batch=8, threads=1)


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, tokenizer, rate: float, generator) -> tuple:
    """BERT's masking: ``(inputs, labels)`` with ``rate`` of the ordinary tokens to predict (labels -100 elsewhere)."""
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, tokenizer.mask_token_id), ids)
    first = len(tokenizer.all_special_ids)  # the specials come first in the vocabulary, ordinary pieces after
    random_ids = torch.randint(first, len(tokenizer), ids.shape, generator=generator)
    return torch.where(chosen & (roll >= 0.9), random_ids, inputs), labels


def _masked_lm_steps(model, tokenizer, encoded: list[list[int]], recipe: PretrainRecipe, progress: bool) -> list[float]:
    """``recipe.steps`` masked-LM steps on random batches of ``encoded`` sentences; the losses."""
    generator = torch.Generator().manual_seed(recipe.seed + 15)

    def loss_at(step):
        rows = [encoded[i] for i in torch.randint(len(encoded), (recipe.batch,), generator=generator).tolist()]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = ids != tokenizer.pad_token_id
        special = ~mask | (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
        inputs, labels = mask_tokens(ids, special, tokenizer, recipe.mask_rate, generator)
        hidden = model.roberta(input_ids=inputs, attention_mask=mask.long())[0]
        chosen = labels != -100  # the vocabulary-wide head only where a token is to be predicted: 7x less work
        return F.cross_entropy(model.lm_head(hidden[chosen]), labels[chosen])

    return train_steps(model.parameters(), recipe.steps, recipe.lr, loss_at, "pretraining (masked LM)", progress,
                       weight_decay=1e-4, warmup=min(200, recipe.steps // 10 + 1), clip=1.0)


def pretrain_student(output: str | Path = TRAINED_DIR / "roberta-small", recipe: PretrainRecipe = PretrainRecipe(),
                     progress: bool = True) -> dict:
    """Learn a WordPiece vocabulary from the Korean corpus and pretrain the tiny RoBERTa on it (masked LM).

    Saves a ``RobertaModel`` (the encoder without its MLM head, as the students load it) and the tokenizer
    under ``output``, with ``pretraining.json``; the pooler keeps its fixed-seed initialisation, as
    masked-language modelling does not train it.
    """
    from transformers import RobertaForMaskedLM

    from .tiny import blank_student, build_student_tokenizer, korean_corpus, student_config

    started = time.perf_counter()
    output = Path(output)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        corpus = korean_corpus(recipe.sentences, recipe.seed)
        final, output = output, staging(output)  # written beside it, swapped in when complete: an interrupted run
        tokenizer = build_student_tokenizer(output, corpus)  # leaves the student that was there
        encoded = tokenizer(corpus, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        torch.manual_seed(recipe.seed + 4)
        model = RobertaForMaskedLM(student_config(tokenizer)).train()
        model.roberta.load_state_dict(blank_student(tokenizer).state_dict(), strict=False)  # the blank student's start
        losses = _masked_lm_steps(model, tokenizer, encoded, recipe, progress)
        encoder = blank_student(tokenizer)
        missing = encoder.load_state_dict(model.roberta.state_dict(), strict=False).missing_keys
        assert all(key.startswith("pooler.") for key in missing), missing
        encoder.save_pretrained(str(output))
        tokenizer.save_pretrained(str(output))
        tail = losses[-min(100, len(losses)):]
        report = {"recipe": asdict(recipe), "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "corpus_sentences": len(corpus), "corpus_tokens": sum(map(len, encoded)), "vocab_size": len(tokenizer),
                  "mlm_loss_first_100": round(float(np.mean(losses[:100])), 3), "mlm_loss_last_100": round(float(np.mean(tail)), 3),
                  "seconds": round(time.perf_counter() - started, 1)}
        (output / "pretraining.json").write_text(json.dumps(report, indent=2) + "\n")
        (output / "DONE").write_text("toy world\n")
        swap_in(final)
        return report
    finally:
        torch.set_num_threads(threads)
