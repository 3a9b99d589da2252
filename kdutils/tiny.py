"""Tiny random stand-ins for the hub models, built offline with fixed seeds.

Each asset is saved in the layout of the hub repository it replaces, so the
notebooks load it with the same ``from_pretrained`` calls as the real id:

- ``tiny/stable-diffusion``: an SD v1-style pipeline folder whose
  ``text_encoder``/``tokenizer`` (a CLIP byte-level BPE) are the teacher;
- ``tiny/roberta-small``: a ``RobertaModel`` with a WordPiece tokenizer laid
  out like ``klue/roberta-small``;
- ``tiny/clip-scorer``: a ``CLIPModel`` (text and vision) that scores images.

The weights are random: the models are the right shape, not the right
knowledge. Rebuilding gives bit-identical files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

TINY_PREFIX = "tiny/"
ASSETS_VERSION = "v2"
NAMES = ("stable-diffusion", "roberta-small", "clip-scorer")

HIDDEN = 64  # teacher hidden size = UNet cross-attention dim = student hidden size
MAX_LENGTH = 77
IMAGE_SIZE = 64


def cache_dir() -> Path:
    """Where tiny assets live: ``KDSD_CACHE`` or ``outputs/cache``."""
    if os.environ.get("KDSD_CACHE"):
        return Path(os.environ["KDSD_CACHE"])
    from .profiles import output_root

    return output_root() / "cache"


def resolve(model_id: str) -> str:
    """A hub id unchanged, or the local folder of a ``tiny/...`` id (built on first use)."""
    if not model_id.startswith(TINY_PREFIX):
        return model_id
    name = model_id[len(TINY_PREFIX):]
    if name not in NAMES:
        raise ValueError(f"unknown tiny model {model_id!r}; known: {[TINY_PREFIX + n for n in NAMES]}")
    root = cache_dir() / f"tiny-{ASSETS_VERSION}"
    if not all((root / n / "DONE").exists() for n in NAMES):
        build_all(root)
    return str(root / name)


def build_all(root: Path) -> Path:
    """Build every tiny asset under ``root``; each folder appears whole or not at all."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    builders = {"stable-diffusion": _build_sd, "roberta-small": _build_student, "clip-scorer": _build_scorer}
    for name in NAMES:
        final = root / name
        if (final / "DONE").exists():
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
        try:
            builders[name](tmp)
            (tmp / "DONE").write_text(ASSETS_VERSION + "\n")
            if final.exists() and not (final / "DONE").exists():
                shutil.rmtree(final)  # a half-built leftover
            try:
                os.replace(tmp, final)
            except OSError:
                if not (final / "DONE").exists():  # else another process built it first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ---------------------------------------------------------------- tokenizers
def _train_texts() -> tuple[list[str], list[str]]:
    from .data import read_bundled

    rows = [r for r in read_bundled() if r["split"] == "train"]
    return [r["en"] for r in rows], [r["ko"] for r in rows]


def learn_merges(word_counts: Counter, max_merges: int, min_frequency: int = 2,
                 join=lambda left, right: left + right) -> list[tuple[str, str]]:
    """Byte-pair merges learned greedily: the most frequent adjacent pair first.

    Ties are broken by the pair itself, so the result never depends on hash
    order; the ``tokenizers`` trainers break ties in hash order, which made two
    builds of the same corpus differ.
    """
    words = dict(word_counts)
    pairs: Counter = Counter()
    for word, count in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += count
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges and pairs:
        best, count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if count < min_frequency:
            break
        merges.append(best)
        merged = join(*best)
        for word in [w for w in words if best[0] in w and best[1] in w]:
            i, new = 0, []
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    new.append(merged)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            new = tuple(new)
            if new == word:
                continue
            count = words.pop(word)
            words[new] = words.get(new, 0) + count
            for pair in zip(word, word[1:]):
                pairs[pair] -= count
            for pair in zip(new, new[1:]):
                pairs[pair] += count
        pairs = +pairs  # drop pairs whose count fell to zero
    return merges


def build_clip_tokenizer():
    """A CLIP tokenizer whose BPE merges are learned from the English training text.

    Its base vocabulary is the 256 byte symbols and their end-of-word forms, as
    in real CLIP, so text it never saw (Korean) falls back to byte pieces.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for symbol in byte_symbols + [s + "</w>" for s in byte_symbols]:
        vocab[symbol] = len(vocab)
    base = CLIPTokenizer(vocab={**vocab, "<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1},
                         merges=[])
    backend = base.backend_tokenizer
    en, _ = _train_texts()
    words: Counter = Counter()
    for text in en:
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[tuple(piece[:-1]) + (piece[-1] + "</w>",)] += 1
    merges = learn_merges(words, max_merges=900)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)


def _build_student_tokenizer(folder: Path):
    """A WordPiece vocabulary laid out like klue/roberta-small's ([CLS]=0, [PAD]=1, [SEP]=2)."""
    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    en, ko = _train_texts()
    words: Counter = Counter()
    for text in ko + en:
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            words[(piece[0],) + tuple("##" + ch for ch in piece[1:])] += 1
    chars = sorted({symbol for word in words for symbol in word})
    merges = learn_merges(words, max_merges=2500, join=lambda left, right: left + right.removeprefix("##"))
    tokens = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"] + chars
    seen = set(tokens)
    for left, right in merges:
        token = left + right.removeprefix("##")
        if token not in seen:
            seen.add(token)
            tokens.append(token)
    raw = folder / "_raw"
    raw.mkdir()
    (raw / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(
        str(raw), model_max_length=MAX_LENGTH, do_lower_case=False, strip_accents=False
    )
    shutil.rmtree(raw)
    return tokenizer


# -------------------------------------------------------------------- models
def _seeded(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        projection_dim=HIDDEN, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def _make_sentence_level(text_encoder) -> None:
    """Rescale a random CLIP text encoder so its outputs depend on the sentence's words.

    With the default initialisation the tiny embeddings vanish next to the
    random MLPs and every output is an arbitrary function of token and
    position, which no student can learn from a few hundred pairs. A trained
    CLIP instead carries the words of the prompt and a running summary of it.
    So: unit-scale token embeddings, zero query/key weights (each position
    averages everything before it, as causal attention with no preference
    would), a stronger value path and a weaker MLP. Still random: no semantics.
    """
    import torch

    with torch.no_grad():
        text_encoder.embeddings.token_embedding.weight.mul_(50.0)
        for layer in text_encoder.encoder.layers:
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
            layer.self_attn.v_proj.weight.mul_(10.0)
            layer.self_attn.out_proj.weight.mul_(10.0)
            layer.mlp.fc2.weight.mul_(0.3)


def _build_sd(folder: Path) -> None:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_clip_tokenizer()
    _seeded(0)
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    _make_sentence_level(text_encoder)
    _seeded(1)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=HIDDEN,
        attention_head_dim=8, norm_num_groups=32,
    )
    _seeded(2)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=IMAGE_SIZE,
        block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = PNDMScheduler(  # SD v1.4's scheduler settings
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))


def _build_student(folder: Path) -> None:
    from transformers import RobertaConfig, RobertaModel

    tokenizer = _build_student_tokenizer(folder)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH + 3,
        type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # klue uses 0.1; tiny trains too briefly
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    _seeded(3)
    RobertaModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def _build_scorer(folder: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPVisionConfig

    tokenizer = build_clip_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=2,
        num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=16, projection_dim=HIDDEN,
    )
    config = CLIPConfig(text_config=_text_config(tokenizer).to_dict(), vision_config=vision.to_dict(),
                        projection_dim=HIDDEN)
    _seeded(4)
    CLIPModel(config).save_pretrained(str(folder))
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                         crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
