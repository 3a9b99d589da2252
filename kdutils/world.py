"""A toy world of captioned shapes, where distilling a Korean text encoder can be checked.

Each scene is one filled shape on a light background, 64x64 RGB:

- 3 shapes (circle, square, triangle), 6 colours, 5 positions, 2 sizes: 180 scenes;
- English and Korean captions with synonyms and varied word order;
- ``HELD_OUT``: 12 (colour, shape, position) triples that never appear in a
  Korean training caption, to test composition rather than memorisation;
- ``read_attributes``: a pixel-based reader that says what an image shows, so
  generated images can be scored without a learned model.

The scenes and their drawing live in ``kdutils.scene``, the reader in ``kdutils.reader``; this module
writes the captions, phrasings, corpus and pairs, and passes every name of the two others on, so
``kd.world.*`` is the whole world.

Only numpy, Pillow and scipy are used; nothing here imports torch.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from .scene import (  # noqa: F401 (kd.world.* is the whole world)
    SHAPES, COLOURS, POSITIONS, SIZES, IMAGE_SIZE, SUPERSAMPLE, ANCHORS, EXTENTS, SIZE_THRESHOLD, JITTER_SHIFT,
    JITTER_EXTENT, JITTER_HUE, JITTER_SATURATION, JITTER_VALUE, BACKGROUND, PALETTE, Scene, all_scenes, _rng,
    sample_scenes, render, HELD_OUT, is_held_out, train_scenes, eval_scenes,
)
from .reader import (  # noqa: F401 (kd.world.* is the whole world)
    MIN_CONTRAST, MIN_AREA, MIN_SATURATION, PALETTE_HUES, TRIANGLE_SKEW, SQUARE_CORNERS, shape_mask,
    read_attributes, degrade, reader_accuracy,
)


# ------------------------------------------------------------------ captions
# Each caption is a template filled with one option per slot. Listing every
# option makes the captions enumerable: the vocabulary and the tests use that.
P_SIZE = 0.75  # how often a random caption names the size

EN_SIZE = {"small": ("small", "little"), "large": ("large", "big")}
EN_WHERE = {  # after the noun: "a red circle on the left"
    "left": ("on the left", "on the left side"),
    "right": ("on the right", "on the right side"),
    "top": ("at the top",),
    "bottom": ("at the bottom",),
    "center": ("in the center", "in the middle"),
}
EN_SHORT = {  # telegraphic: "red circle, left side"
    "left": ("left", "left side"),
    "right": ("right", "right side"),
    "top": ("top",),
    "bottom": ("bottom",),
    "center": ("center", "middle"),
}
EN_TEMPLATES = (
    "a {size} {colour} {shape} {where}",
    "there is a {size} {colour} {shape} {where}",
    "{where} there is a {size} {colour} {shape}",
    "a picture of a {size} {colour} {shape} {where}",
    "the {size} {colour} {shape} is {where}",
    "{size} {colour} {shape}, {short}",
)

KO_SIZE = {"small": ("작은",), "large": ("큰",)}
KO_COLOUR = {  # before a noun: "빨간 원", "초록색 원"
    "red": ("빨간", "빨간색"),
    "green": ("초록색",),
    "blue": ("파란", "파란색"),
    "yellow": ("노란", "노란색"),
    "purple": ("보라색",),
    "orange": ("주황색",),
}
KO_COLOUR_NOUN = {"red": "빨강", "green": "초록", "blue": "파랑", "yellow": "노랑", "purple": "보라", "orange": "주황"}
KO_SHAPE = {"circle": ("원", "동그라미"), "square": ("사각형", "네모"), "triangle": ("삼각형", "세모")}
KO_WHERE = {  # place nouns; the first one is also used where a bare 위/아래 would read oddly
    "left": ("왼쪽",),
    "right": ("오른쪽",),
    "top": ("위쪽", "위"),
    "bottom": ("아래쪽", "아래"),
    "center": ("가운데",),
}
KO_TEMPLATES = (
    "{side}의 {size} {colour} {shape}",                 # 왼쪽의 작은 빨간 원
    "{where}에 있는 {size} {colour} {shape}",           # 왼쪽에 있는 작은 빨간 원
    "{size} {colour} {shape_subject} {where}에 있다",    # 작은 빨간 원이 왼쪽에 있다
    "{where}에 {size} {colour} {shape_subject} 있다",    # 왼쪽에 작은 빨간 원이 있다
    "{where}에는 {size} {colour} {shape_subject} 하나 있다",
    "{size} {colour} {shape_subject} {where}에 있는 그림",
    "{size} {colour} {shape}, {side}",                   # 빨간 원, 왼쪽
)


# The English translation of each Korean template, for distillation pairs. A translation follows its
# source sentence, so the English word order, which the teacher's sequence encodes position by position,
# is a function of the Korean sentence: a student can learn it. (Independent random templates on both
# sides would ask it to guess the English word order.) Where English allows, the translation also keeps
# the Korean order ("왼쪽에 있는 작은 빨간 원" -> "on the left there is a small red circle"), as a
# translator often does. Measured in the toy world (README): with the freer translations of version 1
# ("a small red circle on the left"), the tiny 2-layer student could not move words that far in its
# training time. Version 3 moved "..., 색은 빨강" (a colour noun) out of the pairs into KO_HELD_TEMPLATES.
KO_TO_EN = (2, 2, 4, 2, 2, 0, 5)  # KO_TEMPLATES[i] -> EN_TEMPLATES[KO_TO_EN[i]]
VERSION = 3  # of the captions and translations; saved data splits of an older version are rebuilt

# ------------------------------------------------------------------ held-out phrasings
# The distillation pairs use a deliberately narrow part of Korean: the forms and templates above. People
# write the same things in many other ways. The forms and templates below appear in NO distillation pair,
# on either side, in any split (not even inside another word: tests/test_world.py checks every pair the
# tiny profile trains and measures on), but the monolingual corpus (``korean_sentences``) uses them all, as
# it uses the forms above. A student pretrained on that corpus has read them; a blank student has not.
KO_SIZE_HELD = {"small": ("조그만",), "large": ("커다란",)}
KO_COLOUR_HELD = {  # colour nouns used as modifiers ("빨강 네모"), and other words for the colour
    "red": ("빨강", "빨강색"),
    "green": ("녹색",),
    "blue": ("파랑", "파랑색"),
    "yellow": ("노랑", "노랑색"),
    "purple": (),  # 보랏빛 is in a bundled pair ("보랏빛 라벤더 꽃밭"); purple is held out by template only
    "orange": ("오렌지색",),
}
KO_SHAPE_HELD = {"circle": ("원형",), "square": ("정사각형",), "triangle": ("세모꼴",)}
KO_WHERE_HELD = {"left": ("왼편", "좌측"), "right": ("오른편", "우측"), "top": ("상단",), "bottom": ("하단",),
                 "center": ("중앙",)}
KO_HELD_TEMPLATES = (  # other endings (있어요/있습니다/있음/있네요), particles, orders, fragments and spacing
    "{size} {colour} {shape_topic} {where}에 있어요",      # 작은 빨간 원은 왼쪽에 있어요
    "{where}에 {size} {colour} {shape_subject} 있습니다",   # 왼쪽에 작은 빨간 원이 있습니다
    "{where}에 {colour} {shape} 있음",                    # 왼쪽에 빨간 원 있음 (no particle)
    "{where}에 있는 {size} {shape}, 색은 {colour_noun}",   # 왼쪽에 있는 작은 원, 색은 빨강
    "{colour_noun} {shape} {where}",                      # 빨강 네모 왼쪽 (a telegraphic fragment)
    "{shape}, {colour_noun}, {where}",                    # 원, 빨강, 왼쪽 (free order)
    "{where} {size} {colour}{shape}",                     # 왼쪽 작은 빨간원 (no space)
    "{size} {colour} {shape_subject} {where}에 있네요",    # 작은 빨간 원이 왼쪽에 있네요
)
HELD_FORMS = tuple(sorted({form for table in (KO_SIZE_HELD, KO_COLOUR_HELD, KO_SHAPE_HELD, KO_WHERE_HELD)
                           for forms in table.values() for form in forms}))


def has_final_consonant(word: str) -> bool:
    """True when the last Hangul syllable ends in a consonant (batchim): 원 yes, 네모 no."""
    code = ord(word[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def subject(word: str) -> str:
    """The noun with its subject particle: 원이, 네모가."""
    return word + ("이" if has_final_consonant(word) else "가")


def _tidy(text: str) -> str:
    text = " ".join(text.split()).replace(" ,", ",")
    return re.sub(r"\ba (?=[aeiou])", "an ", text)  # "a orange" -> "an orange"


def _en_slots(scene: Scene, with_size: bool) -> dict[str, tuple[str, ...]]:
    return {"size": EN_SIZE[scene.size] if with_size else ("",), "colour": (scene.colour,), "shape": (scene.shape,),
            "where": EN_WHERE[scene.position], "short": EN_SHORT[scene.position]}


def _ko_slots(scene: Scene, with_size: bool) -> dict[str, tuple[str, ...]]:
    return {"size": KO_SIZE[scene.size] if with_size else ("",), "colour": KO_COLOUR[scene.colour],
            "shape": KO_SHAPE[scene.shape], "where": KO_WHERE[scene.position]}


def topic(word: str) -> str:
    """The noun with its topic particle: 원은, 네모는."""
    return word + ("은" if has_final_consonant(word) else "는")


def _held_slots(scene: Scene, with_size: bool) -> dict[str, tuple[str, ...]]:
    return {"size": KO_SIZE_HELD[scene.size] if with_size else ("",), "colour": KO_COLOUR_HELD[scene.colour],
            "shape": KO_SHAPE_HELD[scene.shape], "where": KO_WHERE_HELD[scene.position]}


def _all_ko_slots(scene: Scene, with_size: bool) -> dict[str, tuple[str, ...]]:
    """Every form of each slot: those of the pairs, then the held-out ones."""
    pair, held = _ko_slots(scene, with_size), _held_slots(scene, with_size)
    return {name: tuple(dict.fromkeys(pair[name] + held[name])) for name in pair}


def _fill_ko(template: str, choice: dict[str, str], scene: Scene) -> str:
    extra = {"shape_subject": subject(choice["shape"]), "shape_topic": topic(choice["shape"]),
             "colour_noun": KO_COLOUR_NOUN[scene.colour], "side": KO_WHERE[scene.position][0]}
    return _tidy(template.format(**{**extra, **choice}))


def _fill(template: str, choice: dict[str, str], scene: Scene, lang: str) -> str:
    return _tidy(template.format(**choice)) if lang == "en" else _fill_ko(template, choice, scene)


def _caption(scene: Scene, rng, with_size: bool | None, lang: str) -> str:
    rng = _rng(rng)
    if with_size is None:
        with_size = bool(rng.random() < P_SIZE)
    templates, slots = (EN_TEMPLATES, _en_slots) if lang == "en" else (KO_TEMPLATES, _ko_slots)
    template = templates[rng.integers(len(templates))]
    choice = {name: options[rng.integers(len(options))] for name, options in slots(scene, with_size).items()}
    return _fill(template, choice, scene, lang)


def caption_en(scene: Scene, rng=None, *, with_size: bool | None = None) -> str:
    """A random English caption; ``with_size=None`` names the size with probability ``P_SIZE``."""
    return _caption(scene, rng, with_size, "en")


def caption_ko(scene: Scene, rng=None, *, with_size: bool | None = None) -> str:
    """A random Korean caption; ``with_size`` as in ``caption_en``."""
    return _caption(scene, rng, with_size, "ko")


def canonical_en(scene: Scene) -> str:
    """The one fixed English caption, for evaluation prompts: "a small red circle on the left"."""
    return _fill(EN_TEMPLATES[0], {name: opts[0] for name, opts in _en_slots(scene, True).items()}, scene, "en")


def canonical_ko(scene: Scene) -> str:
    """The one fixed Korean caption, for evaluation prompts: "왼쪽에 있는 작은 빨간 원"."""
    return _fill(KO_TEMPLATES[1], {name: opts[0] for name, opts in _ko_slots(scene, True).items()}, scene, "ko")


def every_caption(scene: Scene, lang: str = "en") -> list[str]:
    """Every caption the random generator can produce for ``scene``, sorted."""
    templates, slots = (EN_TEMPLATES, _en_slots) if lang == "en" else (KO_TEMPLATES, _ko_slots)
    out = set()
    for with_size in (True, False):
        table = slots(scene, with_size)
        for template in templates:
            for values in itertools.product(*table.values()):
                out.add(_fill(template, dict(zip(table, values)), scene, lang))
    return sorted(out)


def held_out_phrasing(scene: Scene, rng=None, *, with_size: bool | None = None) -> str:
    """A Korean caption no distillation pair could teach: a ``KO_HELD_TEMPLATES`` template whose every slot
    takes a held-out form (``KO_*_HELD``) half of the time, where the value has one, else a form of the pairs."""
    rng = _rng(rng)
    if with_size is None:
        with_size = bool(rng.random() < P_SIZE)
    template = KO_HELD_TEMPLATES[rng.integers(len(KO_HELD_TEMPLATES))]
    pair, held = _ko_slots(scene, with_size), _held_slots(scene, with_size)
    choice = {}
    for name in pair:
        options = held[name] if held[name] and rng.random() < 0.5 else pair[name]
        choice[name] = options[rng.integers(len(options))]
    return _fill_ko(template, choice, scene)


def held_out_prompts(scenes: list[Scene] | None = None, seed: int = 0) -> list[str]:
    """One fixed held-out phrasing per scene (default ``eval_scenes()``), always naming the size, for measuring."""
    scenes = eval_scenes() if scenes is None else scenes
    rng = np.random.default_rng([seed, 21])
    return [held_out_phrasing(scene, rng, with_size=True) for scene in scenes]


def held_form_prompts(scenes: list[Scene] | None = None, seed: int = 0) -> list[str]:
    """One prompt per scene (default ``eval_scenes()``) in a template of the pairs, with a held-out word form in
    every slot that has one (``KO_*_HELD``): only the words are new, the sentence is one the pairs teach."""
    scenes = eval_scenes() if scenes is None else scenes
    rng = np.random.default_rng([seed, 22])
    out = []
    for scene in scenes:
        pair, held = _ko_slots(scene, True), _held_slots(scene, True)
        choice = {name: (held[name] or pair[name])[rng.integers(len(held[name] or pair[name]))] for name in pair}
        choice["side"] = choice["where"]
        out.append(_fill_ko(KO_TEMPLATES[rng.integers(len(KO_TEMPLATES))], choice, scene))
    return out


def every_held_out_phrasing(scene: Scene, template: str) -> set[str]:
    """Every sentence ``template`` can make for ``scene`` with any form, of the pairs or held out."""
    out = set()
    for with_size in (True, False):
        table = _all_ko_slots(scene, with_size)
        for values in itertools.product(*table.values()):
            out.add(_fill_ko(template, dict(zip(table, values)), scene))
    return out


# Things whose colour, shape, place or size everybody knows, for the corpus's sentences that are not about the
# pictures. In real text a word is known by the company it keeps (빨간 사과, 빨강 사과, 붉은 사과; 화면 상단,
# 화면 위쪽); in sentences about random scenes nothing but the word itself tells one colour, or one side,
# from another. Measured: with colour and shape things only, every held-out colour and shape form had its own
# synonym as nearest embedding, but every position word's nearest was another position.
KO_THINGS = {
    "red": ("사과", "딸기", "장미", "소방차", "우체통", "고추", "토마토"),
    "green": ("나뭇잎", "잔디", "개구리", "오이", "풀밭", "브로콜리", "청개구리"),
    "blue": ("하늘", "바다", "청바지", "파도", "물감 통", "호수", "수영장 물"),
    "yellow": ("바나나", "레몬", "병아리", "해바라기", "개나리", "옥수수", "참외"),
    "purple": ("포도", "가지", "라벤더", "제비꽃", "자두", "블루베리 잼", "라일락"),
    "orange": ("귤", "당근", "호박", "감", "오렌지", "살구", "단풍"),
    "circle": ("공", "바퀴", "동전", "보름달", "접시", "단추", "시계"),
    "square": ("창문", "상자", "타일", "액자", "주사위", "손수건", "바둑판"),
    "triangle": ("삼각김밥", "피라미드", "지붕", "표지판", "샌드위치 조각", "텐트", "트라이앵글"),
    "left": ("왼손", "왼발", "심장", "운전석", "첫 글자", "시작 버튼", "뒤로 가기 화살표"),
    "right": ("오른손", "오른발", "조수석", "마지막 글자", "스크롤 막대", "앞으로 가기 화살표", "닫기 단추"),
    "top": ("하늘", "천장", "구름", "제목", "산꼭대기", "머리", "다락방"),
    "bottom": ("땅", "바닥", "뿌리", "각주", "발바닥", "지하실", "바다 밑바닥"),
    "center": ("과녁", "배꼽", "노른자", "광장", "무대", "태풍의 눈", "중앙선"),
    "small": ("개미", "콩", "모래알", "먼지", "좁쌀", "벼룩", "씨앗"),
    "large": ("코끼리", "고래", "빌딩", "공룡", "트럭", "비행기", "거인"),
}
KO_THING_TEMPLATES = {
    "colour": ("{colour} {thing}", "{colour} {thing}{subject_particle} 있다", "{thing}의 색은 {colour_noun}",
               "{colour} {thing} 하나", "접시 위의 {colour} {thing}"),
    "shape": ("{shape} 모양의 {thing}", "{thing}{topic_particle} {shape} 모양이다", "{shape}처럼 생긴 {thing}",
              "{thing}의 모양은 {shape}"),
    "where": ("{thing}{topic_particle} {where}에 있다", "{where}에 있는 {thing}", "{thing}{subject_particle} {where}에 보인다",
              "{where}의 {thing}", "{thing}{topic_particle} 늘 {where}에 있어요"),
    "size": ("{size} {thing}", "{size} {thing} 한 마리", "{thing}처럼 {size} 것", "{size} {thing}{subject_particle} 있다"),
}
THING_KINDS = {"colour": COLOURS, "shape": SHAPES, "where": POSITIONS, "size": SIZES}


def thing_sentence(rng) -> str:
    """A Korean sentence about a familiar thing's colour, shape, place or size, in any form of that word."""
    kinds = tuple(THING_KINDS)
    kind = kinds[rng.integers(len(kinds))]
    values = THING_KINDS[kind]
    value = values[rng.integers(len(values))]
    scene = Scene(value if kind == "shape" else "circle", value if kind == "colour" else "red",
                  value if kind == "where" else "left", value if kind == "size" else "small")
    table = _all_ko_slots(scene, True)
    template = KO_THING_TEMPLATES[kind][rng.integers(len(KO_THING_TEMPLATES[kind]))]
    word = table[kind][rng.integers(len(table[kind]))]
    thing = KO_THINGS[value][rng.integers(len(KO_THINGS[value]))]
    text = template.format(thing=thing, colour=word, shape=word, where=word, size=word,
                           colour_noun=KO_COLOUR_NOUN.get(value, ""),
                           subject_particle=subject(thing)[len(thing):], topic_particle=topic(thing)[len(thing):])
    return _tidy(text)


def korean_sentences(n: int, seed=0, *, twice: float = 0.5, spacing: float = 0.1, things: float = 0.5) -> list[str]:
    """``n`` lines of Korean about the world for a monolingual corpus, in every form this module knows.

    A line describes a random scene outside ``HELD_OUT`` with a random template of the pairs or of the
    held-out phrasings, every slot filled with any of its forms. With probability ``twice`` it describes
    the same scene again in other words ("왼쪽에 빨간 원이 있다. 빨강 동그라미는 좌측에 있어요"), as
    text often says a thing twice: that is where a language model can learn that 빨강 and 빨간 or 좌측
    and 왼쪽 mean the same thing. With scenes drawn at random, no other context tells colours apart
    (measured: with single descriptions, the pretrained embedding nearest to 녹색 was 주황색's). With
    probability ``spacing`` one space of each sentence is dropped, as people do ("빨간원"). A share
    ``things`` of the lines are about familiar things instead (``KO_THINGS``: "빨강 사과", "원형 접시"). No English.
    """
    rng = np.random.default_rng([seed, 31]) if not isinstance(seed, np.random.Generator) else seed
    scenes = train_scenes()
    templates = KO_TEMPLATES + KO_HELD_TEMPLATES

    def sentence(scene):
        table = _all_ko_slots(scene, bool(rng.random() < P_SIZE))
        nouns = (KO_COLOUR_NOUN[scene.colour],) + tuple(f for f in table["colour"] if f.endswith("색"))
        table.update(side=table["where"], colour_noun=nouns)  # here any form fills every slot
        choice = {name: options[rng.integers(len(options))] for name, options in table.items()}
        text = _fill_ko(templates[rng.integers(len(templates))], choice, scene)
        spaces = [i for i, ch in enumerate(text) if ch == " " and text[i - 1] != ","]
        if spaces and rng.random() < spacing:
            i = spaces[rng.integers(len(spaces))]
            text = text[:i] + text[i + 1:]
        return text

    out = []
    for _ in range(n):
        if rng.random() < things:
            out.append(thing_sentence(rng))
            continue
        scene = scenes[rng.integers(len(scenes))]
        out.append(sentence(scene) + (". " + sentence(scene) if rng.random() < twice else ""))
    return out


def english_vocabulary() -> list[str]:
    """Every English word the captions use, sorted (the comma is the only punctuation)."""
    words = set()
    for scene in all_scenes():
        for text in every_caption(scene, "en"):
            words.update(text.replace(",", " ").split())
    return sorted(words)


# ------------------------------------------------------------------ pairs
def translation_pair(scene: Scene, rng=None, *, with_size: bool | None = None) -> tuple[str, str]:
    """A random Korean caption and its English translation (``KO_TO_EN``, the first English synonyms)."""
    rng = _rng(rng)
    if with_size is None:
        with_size = bool(rng.random() < P_SIZE)
    index = int(rng.integers(len(KO_TEMPLATES)))
    choice = {name: options[rng.integers(len(options))] for name, options in _ko_slots(scene, with_size).items()}
    english = {name: options[0] for name, options in _en_slots(scene, with_size).items()}
    return (_fill(KO_TEMPLATES[index], choice, scene, "ko"),
            _fill(EN_TEMPLATES[KO_TO_EN[index]], english, scene, "en"))


def caption_pairs(n: int, seed=0, split: str = "train", *, translate: bool = False) -> list[dict]:
    """``n`` records ``{"ko", "en", "scene", "held_out"}`` for distillation, JSON-ready.

    ``translate=True`` pairs each Korean caption with its English translation
    (``translation_pair``) instead of an independent random English caption.

    ``train`` cycles through the 156 scenes outside ``HELD_OUT`` in shuffled
    epochs. ``eval`` cycles through all 180 scenes, the 24 held-out ones first in
    every epoch, so any ``n >= 24`` contains them all. The Korean and English
    caption of a pair agree on whether the size is named.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}; expected 'train' or 'eval'")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    if split == "train":
        groups = [train_scenes()]
    else:
        groups = [[s for s in all_scenes() if is_held_out(s)], train_scenes()]
    records: list[dict] = []
    while len(records) < n:
        epoch = [group[i] for group in groups for i in rng.permutation(len(group))]
        for scene in epoch[: n - len(records)]:
            with_size = bool(rng.random() < P_SIZE)
            if translate:
                ko, en = translation_pair(scene, rng, with_size=with_size)
            else:
                ko, en = caption_ko(scene, rng, with_size=with_size), caption_en(scene, rng, with_size=with_size)
            records.append({"ko": ko, "en": en,
                            "scene": scene.to_dict(), "held_out": is_held_out(scene)})
    return records
