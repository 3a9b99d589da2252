"""The ``tiny`` profile's models, in the layout of the hub repositories they stand in for.

Each is loaded with the same ``from_pretrained`` calls as the real id:

- ``tiny/stable-diffusion``: the toy world's trained SD v1-style pipeline
  (``kdutils/toymodels.py``), committed in ``kdutils/assets/tiny/``; its
  ``text_encoder``/``tokenizer`` (a CLIP byte-level BPE) are the teacher;
- ``tiny/clip-scorer``: the toy world's trained ``CLIPModel`` that scores
  images, committed beside it;
- ``tiny/roberta-small``: the toy world's ``klue/roberta-small``: a small
  ``RobertaModel`` pretrained with masked-language modelling on a Korean-only
  corpus (``korean_corpus``), with a WordPiece vocabulary learned from that
  corpus, laid out like klue's; committed beside them;
- ``tiny/roberta-small-blank``: the same network and tokenizer with random
  weights (no pretraining), built here on first use with fixed seeds
  (rebuilding gives bit-identical files): what pretraining is measured against.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

TINY_PREFIX = "tiny/"
ASSETS_VERSION = "v5"
NAMES = ("roberta-small-blank",)  # built on first use into the cache
TRAINED = ("stable-diffusion", "clip-scorer", "roberta-small")  # trained by toymodels.py, committed
TRAINED_DIR = Path(__file__).resolve().parent / "assets" / "tiny"

HIDDEN = 64  # teacher hidden size = UNet cross-attention dim = student hidden size
MAX_LENGTH = 77
IMAGE_SIZE = 64


def model_label(model_id: str) -> str:
    """How a run records the Korean student it started from: a ``tiny/`` id with the toy world's assets version,
    so that a run from an older toy student is told apart from one of the committed student (``distill.outdated``)."""
    return f"{model_id}@{ASSETS_VERSION}" if model_id.startswith(TINY_PREFIX) else model_id


def cache_dir() -> Path:
    """Where the tiny assets built on first use live: ``outputs/cache`` (they are the same for every profile)."""
    from .profiles import output_root

    return output_root() / "cache"


def resolve(model_id: str) -> str:
    """A hub id unchanged, or the local folder of a ``tiny/...`` id (built on first use)."""
    if not model_id.startswith(TINY_PREFIX):
        return model_id
    name = model_id[len(TINY_PREFIX):]
    if name in TRAINED:
        folder = TRAINED_DIR / name
        if not (folder / "DONE").exists():
            raise FileNotFoundError(f"{folder} is missing or incomplete: the toy world's trained models come with "
                                    f"the repository; rebuild them with `python -m kdutils tiny --train`")
        return str(folder)
    if name not in NAMES:
        raise ValueError(f"unknown tiny model {model_id!r}; known: {[TINY_PREFIX + n for n in TRAINED + NAMES]}")
    root = cache_dir() / f"tiny-{ASSETS_VERSION}"
    if not all((root / n / "DONE").exists() for n in NAMES):
        build_all(root)
    return str(root / name)


def build_all(root: Path) -> Path:
    """Build every tiny asset under ``root``; each folder appears whole or not at all."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    builders = {"roberta-small-blank": build_blank_student}
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
    from .corpus import read_bundled

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


def build_clip_tokenizer(extra_texts=()):
    """A CLIP tokenizer whose BPE merges are learned from the English training text (and ``extra_texts``).

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
    for text in list(en) + list(extra_texts):
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text)):
            words[tuple(piece[:-1]) + (piece[-1] + "</w>",)] += 1
    merges = learn_merges(words, max_merges=900)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_LENGTH)


KOREAN_CORPUS_SENTENCES = 40_000  # sentences about the world; the bundled corpus's Korean is added to them
BUNDLED_REPEATS = 10  # how often each bundled Korean sentence occurs, so that not all is shapes


def korean_corpus(n: int = KOREAN_CORPUS_SENTENCES, seed: int = 0) -> list[str]:
    """The toy world's monolingual Korean corpus, what its ``klue/roberta-small`` is pretrained on.

    ``world.korean_sentences`` (every form and phrasing the world knows, the held-out ones included) and
    the Korean side of the bundled corpus's train split, which is not about shapes; no English.
    """
    from . import world

    _, ko = _train_texts()
    return world.korean_sentences(n, seed) + ko * BUNDLED_REPEATS


# A toy morpheme analyser for learning the student's vocabulary. klue/roberta's vocabulary was learned from
# text that MeCab-ko had first cut into morphemes, so a noun and its particle are separate pieces (원 + ##은),
# and WordPiece then reads "원은" as 원 ##은 although "원은" never appeared whole. Learned from whole words
# instead, every word+particle becomes one token (원은, 원이, 좌측에): measured, 2,500 merges over the toy
# corpus made "원은" and "원이" unrelated tokens, so a particle the pairs never use hid a shape they teach.
KO_PARTICLES = ("습니다", "에는", "에서", "으로", "처럼", "어요", "네요", "이다", "인다", "이", "가", "은", "는", "을", "를",
                "에", "의", "도", "다", "음", "요")


def known_korean_words() -> frozenset:
    """Words the analyser keeps whole: every form of the world (작은, 빨간, 가운데 ...) and its familiar things."""
    from . import world

    words = set(world.KO_COLOUR_NOUN.values()) | {"있", "그림", "하나", "모양", "색"}  # and the templates' own words
    for table in (world.KO_SIZE, world.KO_COLOUR, world.KO_SHAPE, world.KO_WHERE, world.KO_SIZE_HELD,
                  world.KO_COLOUR_HELD, world.KO_SHAPE_HELD, world.KO_WHERE_HELD, world.KO_THINGS):
        for forms in table.values():
            for form in forms:
                words.update(form.split())
    return frozenset(words)


def korean_morphemes(word: str, known: frozenset | None = None) -> list[str]:
    """``word`` cut into a stem and its particles or endings, continuation pieces marked ``##``.

    ``원은`` -> ``["원", "##은"]``, ``있습니다`` -> ``["있", "##습니다"]``, ``빨간원`` (a dropped space) ->
    ``["빨간", "##원"]``, ``위쪽에는큰`` -> ``["위쪽", "##에는", "##큰"]``. Words of the world are kept whole;
    anything else is cut by the ending rules alone, which is rough but only decides which pieces the
    vocabulary learns.
    """
    known = known_korean_words() if known is None else known
    if word in known or not any("\uac00" <= ch <= "\ud7a3" for ch in word):
        return [word]
    for i in range(len(word) - 1, 0, -1):  # two words written together: the second one is a word of the world
        if word[i:] in known:
            head = korean_morphemes(word[:i], known)
            if head[0] in known:
                return head + ["##" + word[i:]]
    for suffix in KO_PARTICLES:
        if word.endswith(suffix) and len(word) > len(suffix):
            return korean_morphemes(word[:-len(suffix)], known) + ["##" + suffix]
    return [word]


def _one_piece(token: str, known: frozenset) -> bool:
    """True when the analyser would not cut ``token`` (a word start, or a ``##`` continuation)."""
    core = token.removeprefix("##")
    if token.startswith("##") and core in KO_PARTICLES:
        return True
    return len(korean_morphemes(core, known)) == 1


def build_student_tokenizer(folder: Path, corpus: list[str] | None = None):
    """A WordPiece vocabulary laid out like klue/roberta-small's ([CLS]=0, [PAD]=1, [SEP]=2).

    Learned, like klue's, from its Korean corpus (``korean_corpus``) cut into morphemes first
    (``korean_morphemes``), plus the English the student is asked to read in distillation (the bundled
    corpus's and the world's captions), as klue's vocabulary holds English pieces too. The merges are
    ``learn_merges``'s, so the same corpus always gives the same vocabulary.
    """
    from tokenizers import normalizers, pre_tokenizers
    from transformers import BertTokenizerFast

    from . import world

    normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    en, _ = _train_texts()
    captions = [text for scene in world.train_scenes() for text in world.every_caption(scene, "en")]
    known = known_korean_words()
    words: Counter = Counter()
    for text in list(korean_corpus() if corpus is None else corpus) + en + captions:
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            for morpheme in korean_morphemes(piece, known):
                head, rest = (("##" + morpheme[2], morpheme[3:]) if morpheme.startswith("##")
                              else (morpheme[0], morpheme[1:]))
                words[(head,) + tuple("##" + ch for ch in rest)] += 1
    chars = sorted({symbol for word in words for symbol in word})
    merges = learn_merges(words, max_merges=2500, join=lambda left, right: left + right.removeprefix("##"))
    tokens = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"] + chars
    seen = set(tokens)
    for left, right in merges:
        token = left + right.removeprefix("##")
        # a merge on the way to a longer word ("있는" on the way to "있는데") would let WordPiece read "있는" whole;
        # a piece the analyser cuts is left out, as no piece of klue's vocabulary spans two morphemes
        if token not in seen and _one_piece(token, known):
            seen.add(token)
            tokens.append(token)
    raw = Path(folder) / "_raw"
    raw.mkdir(parents=True)
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


def text_config(tokenizer):
    """The tiny CLIP text tower's config: hidden 64, 2 layers, 4 heads, 77 positions."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
        projection_dim=HIDDEN, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def student_config(tokenizer):
    """The tiny RoBERTa's config: klue/roberta-small's layout at hidden 64, 2 layers, 4 heads."""
    from transformers import RobertaConfig

    return RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_LENGTH + 3,
        type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # klue uses 0.1; tiny trains too briefly
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )


def blank_student(tokenizer):
    """The tiny ``RobertaModel`` with its fixed-seed random weights: the start of pretraining, and the blank student."""
    from transformers import RobertaModel

    _seeded(3)
    return RobertaModel(student_config(tokenizer))


def build_blank_student(folder: Path) -> None:
    """``tiny/roberta-small-blank``: the pretrained student's tokenizer, with no pretraining."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve(TINY_PREFIX + "roberta-small"))
    blank_student(tokenizer).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
