"""The RoBERTa students pad with [MASK] so that every padding position can carry its own word."""

import pytest
import torch

import kdutils as kd
from kdutils.distill import encode, tokenize


def padding_outputs(padding: str) -> torch.Tensor:
    cfg = kd.get_profile("tiny", student_padding=padding)
    tokenizer, student = kd.load_student(cfg, "roberta")
    tokens = tokenize(tokenizer, ["왼쪽에 있는 작은 빨간 원"])
    n = int(tokens.mask.sum())
    with torch.no_grad():
        out = encode(student.eval(), tokens.ids, tokens.mask)[0][0]
    return out[n:]


def test_pad_gives_every_padding_position_one_vector_and_mask_does_not():
    pad = padding_outputs("pad")
    masked = padding_outputs("mask")
    assert len(pad) == len(masked) > 60
    assert torch.allclose(pad, pad[0].expand_as(pad), atol=1e-5), "[PAD] shares one position id: one output"
    assert len(torch.unique(masked.round(decimals=4), dim=0)) == len(masked), "[MASK] positions count on"


def test_the_profiles_choose_the_padding_and_reject_unknown_values():
    assert kd.get_profile("paper").student_padding == "pad"  # as the study trained
    assert kd.get_profile("tiny").student_padding == kd.get_profile("class").student_padding == "mask"
    with pytest.raises(ValueError, match="student_padding"):
        kd.get_profile("tiny", student_padding="zeros")
    with pytest.raises(ValueError, match="padding"):
        kd.models.set_padding(kd.load_tokenizers(kd.get_profile("tiny"))[1], "zeros")


def test_the_attention_mask_and_the_sentence_tokens_do_not_change(tmp_path):
    cfg = kd.get_profile("tiny")
    tokenizer = kd.models.set_padding(kd.load_tokenizers(cfg)[1], "mask")
    plain = kd.load_tokenizers(cfg)[1]
    text = ["빨간 원이 왼쪽에 있다"]
    a, b = tokenize(tokenizer, text, 77), tokenize(plain, text, 77)
    n = int(b.mask.sum())
    assert torch.equal(a.mask, b.mask) and torch.equal(a.ids[:, :n], b.ids[:, :n])
    assert set(a.ids[0, n:].tolist()) == {tokenizer.mask_token_id}
    tokenizer.save_pretrained(tmp_path)  # a trained student's tokenizer keeps the choice
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path).pad_token == "[MASK]"
