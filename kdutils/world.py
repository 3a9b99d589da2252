"""A toy world of captioned shapes, where distilling a Korean text encoder can be checked.

Each scene is one filled shape on a light background, 64x64 RGB:

- 3 shapes (circle, square, triangle), 6 colours, 5 positions, 2 sizes: 180 scenes;
- English and Korean captions with synonyms and varied word order;
- ``HELD_OUT``: 12 (colour, shape, position) triples that never appear in a
  Korean training caption, to test composition rather than memorisation;
- ``read_attributes``: a pixel-based reader that says what an image shows, so
  generated images can be scored without a learned model.

Only numpy, Pillow and scipy are used; nothing here imports torch.
"""

from __future__ import annotations

import colorsys
import io
import itertools
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
POSITIONS = ("left", "right", "top", "bottom", "center")
SIZES = ("small", "large")

# ------------------------------------------------------------------ geometry
# All lengths are in pixels of the 64x64 canvas (continuous coordinates: the
# canvas spans 0..64). Anchors are the centre of the shape's bounding box.
IMAGE_SIZE = 64
SUPERSAMPLE = 4  # draw at 256x256, then average 4x4 blocks: smooth edges
ANCHORS = {"left": (17.0, 32.0), "right": (47.0, 32.0), "top": (32.0, 17.0), "bottom": (32.0, 47.0), "center": (32.0, 32.0)}
EXTENTS = {"small": 14.0, "large": 26.0}  # width = height of the bounding box
SIZE_THRESHOLD = 20.0  # the reader's cut between the two extents

# Jitter of a seeded render. With these bounds a large shape stays >= 1.5 px
# inside the canvas and a shape's centre stays >= 5.5 px from the midpoint
# between two anchors, so the attributes remain readable.
JITTER_SHIFT = 2.0  # px, each axis
JITTER_EXTENT = 1.0  # px
JITTER_HUE = 4.0  # degrees
JITTER_SATURATION = (0.88, 1.0)  # factor
JITTER_VALUE = (0.92, 1.04)  # factor
BACKGROUND = (226, 246)  # grey level; the un-jittered render uses 238

PALETTE = {  # chosen so the nearest hues are >= 25 degrees apart
    "red": (215, 38, 38),
    "orange": (240, 125, 15),
    "yellow": (235, 215, 20),
    "green": (40, 165, 60),
    "blue": (35, 85, 215),
    "purple": (140, 55, 185),
}


@dataclass(frozen=True, order=True)
class Scene:
    """One shape on the canvas: what every caption and every reading describes."""

    shape: str
    colour: str
    position: str
    size: str

    def __post_init__(self):
        for name, allowed in (("shape", SHAPES), ("colour", COLOURS), ("position", POSITIONS), ("size", SIZES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")

    @property
    def triple(self) -> tuple[str, str, str]:
        """(colour, shape, position): the key of ``HELD_OUT``."""
        return (self.colour, self.shape, self.position)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(d["shape"], d["colour"], d["position"], d["size"])


def all_scenes() -> list[Scene]:
    """The 3 x 6 x 5 x 2 = 180 scenes, in a fixed order."""
    return [Scene(*combo) for combo in itertools.product(SHAPES, COLOURS, POSITIONS, SIZES)]


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_scenes(n: int, seed=0, *, held_out: bool = True) -> list[Scene]:
    """``n`` scenes drawn uniformly with replacement; ``held_out=False`` skips ``HELD_OUT``."""
    pool = all_scenes() if held_out else train_scenes()
    rng = _rng(seed)
    return [pool[i] for i in rng.integers(len(pool), size=n)]


# ------------------------------------------------------------------ rendering
def _jittered_colour(rgb, rng: np.random.Generator | None) -> tuple[int, int, int]:
    if rng is None:
        return tuple(rgb)
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    h = (h + rng.uniform(-JITTER_HUE, JITTER_HUE) / 360) % 1.0
    s = s * rng.uniform(*JITTER_SATURATION)
    v = min(1.0, v * rng.uniform(*JITTER_VALUE))
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, v))


def render(scene: Scene, rng=None) -> Image.Image:
    """Draw ``scene`` as a 64x64 RGB image.

    ``rng=None`` gives the canonical, un-jittered picture; an int seed or a
    ``numpy.random.Generator`` adds a small jitter of position, extent, hue,
    brightness and background. The same seed always gives the same bytes.
    """
    rng = None if rng is None else _rng(rng)
    cx, cy = ANCHORS[scene.position]
    extent = EXTENTS[scene.size]
    grey = (BACKGROUND[0] + BACKGROUND[1]) // 2
    if rng is not None:
        cx += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)
        cy += rng.uniform(-JITTER_SHIFT, JITTER_SHIFT)
        extent += rng.uniform(-JITTER_EXTENT, JITTER_EXTENT)
        grey = int(rng.integers(BACKGROUND[0], BACKGROUND[1] + 1))
    fill = _jittered_colour(PALETTE[scene.colour], rng)

    k = SUPERSAMPLE
    canvas = Image.new("RGB", (IMAGE_SIZE * k, IMAGE_SIZE * k), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = ((cx - extent / 2) * k, (cy - extent / 2) * k, (cx + extent / 2) * k, (cy + extent / 2) * k)
    if scene.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif scene.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:  # an upright isosceles triangle filling half its bounding box
        draw.polygon([(cx * k, y0), (x1, y1), (x0, y1)], fill=fill)
    return canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


# ------------------------------------------------------------------ held-out combinations
# 12 of the 90 (colour, shape, position) triples (13 %), both sizes: 24 of the
# 180 scenes. Chosen by hand so that each colour is held out twice, each shape
# four times and each position two or three times, and no colour x shape,
# colour x position or shape x position pair is held out twice. Every single
# value and every pair of values therefore still appears in training.
HELD_OUT = frozenset({
    ("red", "circle", "right"),
    ("red", "triangle", "top"),
    ("green", "square", "left"),
    ("green", "circle", "bottom"),
    ("blue", "triangle", "center"),
    ("blue", "square", "right"),
    ("yellow", "circle", "top"),
    ("yellow", "triangle", "left"),
    ("purple", "square", "bottom"),
    ("purple", "circle", "center"),
    ("orange", "triangle", "right"),
    ("orange", "square", "top"),
})


def is_held_out(scene: Scene) -> bool:
    """True when the scene's (colour, shape, position) is never in a Korean training caption."""
    return scene.triple in HELD_OUT


def train_scenes() -> list[Scene]:
    """The 156 scenes that training pairs may use."""
    return [s for s in all_scenes() if not is_held_out(s)]


def eval_scenes() -> list[Scene]:
    """The 48 scenes the course measures on: every held-out combination plus as many others, both sizes."""
    held = [s for s in all_scenes() if is_held_out(s)]
    rng = np.random.default_rng(7)
    others = [s for s in all_scenes() if not is_held_out(s)]
    return held + [others[i] for i in rng.permutation(len(others))[:len(held)]]


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


# ------------------------------------------------------------------ attribute reader
MIN_CONTRAST = 40.0  # RGB distance (0..255) below which nothing counts as a shape
MIN_AREA = 12  # pixels of the 64x64 canvas
MIN_SATURATION = 0.15  # a greyer foreground has no readable colour
PALETTE_HUES = {name: 360 * colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in PALETTE.items()}
# Shape cues are moments of the foreground "mass" (how far each pixel is from
# the background). Blurring adds a Gaussian to the mass, and a Gaussian has no
# cumulants beyond the second, so the third and fourth cumulants below barely
# change under blur, unlike edges, corners or fill ratios.
# - skew: skewness of the vertical profile. An upright triangle is bottom-heavy
#   (ideal -0.57); a circle or a square is symmetric (0).
# - corners: fourth cumulant along the two diagonals over that along the two
#   axes. A square's corners make it 0.5; a circle's is 1.
TRIANGLE_SKEW = -0.15
SQUARE_CORNERS = 0.8


def _nothing() -> dict:
    return {"colour": None, "shape": None, "position": None, "size": None, "found": False, "features": {}}


def _to_array(image) -> np.ndarray:
    """A PIL image or an HxWx3 array (uint8, or float in 0..1) as 64x64x3 float32 in 0..255."""
    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            arr = np.clip(np.rint(arr.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        image = Image.fromarray(arr)
    image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _hue_saturation(pixels: np.ndarray) -> tuple[float, float]:
    """Saturation-weighted circular mean hue (degrees) and median saturation of Nx3 pixels."""
    rgb = pixels / 255.0
    hi, lo = rgb.max(1), rgb.min(1)
    chroma = hi - lo
    sat = np.where(hi > 0, chroma / np.maximum(hi, 1e-6), 0.0)
    r, g, b = rgb.T
    safe = np.maximum(chroma, 1e-6)
    hue = np.select([hi == r, hi == g], [((g - b) / safe) % 6, (b - r) / safe + 2], (r - g) / safe + 4) * 60.0
    angle = np.deg2rad(hue)
    mean = np.arctan2((sat * np.sin(angle)).sum(), (sat * np.cos(angle)).sum())
    return float(np.rad2deg(mean) % 360), float(np.median(sat))


def _shape_cues(mass: np.ndarray) -> tuple[float, float]:
    """(skew, corners) of a non-negative HxW mass map; see ``TRIANGLE_SKEW``."""
    ys, xs = np.nonzero(mass)
    weight = mass[ys, xs] / mass[ys, xs].sum()
    ys, xs = ys + 0.5, xs + 0.5

    def cumulants(u):  # 2nd, 3rd and 4th cumulant of coordinate u under the mass
        c = u - weight @ u
        k2 = weight @ c**2
        return k2, weight @ c**3, weight @ c**4 - 3 * k2**2

    k2y, k3y, k4y = cumulants(ys)
    k4x = cumulants(xs)[2]
    k4d = cumulants((xs + ys) / np.sqrt(2))[2] + cumulants((xs - ys) / np.sqrt(2))[2]
    axes = k4x + k4y
    corners = k4d / axes if axes < 0 else float("inf")  # only flat-topped profiles have corners to compare
    return float(k3y / k2y**1.5), float(corners)


def _nearest(value: float, table: dict[str, float], period: float) -> str:
    def distance(name):
        d = abs(value - table[name]) % period
        return min(d, period - d)

    return min(table, key=distance)


def _foreground(image):
    """(pixels, distance to the background, peak, blob, blobs): the reader's first half; blob is None without a
    clear shape, blobs the number of connected foreground pieces."""
    from scipy import ndimage

    pixels = _to_array(image)
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(edge, axis=0)
    distance = np.sqrt(((pixels - background) ** 2).sum(-1))
    distance = np.clip(distance - np.median(distance), 0, None)  # remove the noise level; most pixels are background
    smooth = ndimage.uniform_filter(distance, size=3)
    peak = float(smooth.max())
    if peak < MIN_CONTRAST:
        return pixels, distance, peak, None, 0
    labels, count = ndimage.label(smooth > 0.5 * peak)
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    blob = ndimage.binary_fill_holes(labels == largest)
    if int(blob.sum()) < MIN_AREA:
        return pixels, distance, peak, None, count
    return pixels, distance, peak, blob, count


def shape_mask(image) -> np.ndarray:
    """Where the shape is: a 64x64 boolean mask of the pixels ``read_attributes`` takes as the shape (all False
    when it finds none)."""
    blob = _foreground(image)[3]
    return np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool) if blob is None else blob


def read_attributes(image) -> dict:
    """Read colour, shape, position and size back from a picture, from pixels alone.

    Foreground is where the (3x3-smoothed) colour distance to the border,
    less its median, exceeds half its peak; the largest connected blob is the shape. Colour is
    its hue, position the centre of its bounding box, size its extent, and
    shape two blur-proof moments of its mass (see ``TRIANGLE_SKEW``). With no clear foreground every attribute is
    ``None`` and ``found`` is False. ``features`` holds the raw measurements.
    """
    from scipy import ndimage

    pixels, distance, peak, blob, count = _foreground(image)
    if blob is None:
        return _nothing()
    area = int(blob.sum())

    ys, xs = np.nonzero(blob)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    width, height = int(x1 - x0), int(y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    fill = area / (width * height)

    near = ndimage.binary_dilation(blob, iterations=5)  # the blob plus its blurred rim
    skew, corners = _shape_cues(distance * near)

    core = blob & (distance > 0.75 * peak)  # skip the blurred rim, which is mixed with the background
    hue, saturation = _hue_saturation(pixels[core if core.sum() >= MIN_AREA // 2 else blob])

    shape = "triangle" if skew < TRIANGLE_SKEW else "square" if corners < SQUARE_CORNERS else "circle"
    position = min(ANCHORS, key=lambda p: (cx - ANCHORS[p][0]) ** 2 + (cy - ANCHORS[p][1]) ** 2)
    return {
        "colour": _nearest(hue, PALETTE_HUES, 360.0) if saturation >= MIN_SATURATION else None,
        "shape": shape,
        "position": position,
        "size": "large" if max(width, height) >= SIZE_THRESHOLD else "small",
        "found": True,
        "features": {"hue": hue, "saturation": saturation, "skew": skew, "corners": corners, "fill": fill, "cx": float(cx),
                     "cy": float(cy), "width": width, "height": height, "contrast": peak, "blobs": int(count)},
    }


# ------------------------------------------------------------------ degradations and accuracy
def degrade(image: Image.Image, rng=None, *, blur: float = 0.0, noise: float = 0.0, shift: float = 0.0,
            jpeg: int | None = None) -> Image.Image:
    """Make a render look generated: Gaussian blur (radius in px), Gaussian noise
    (std in 0..255), a random per-channel colour offset (up to ``shift`` in 0..255)
    and JPEG compression at quality ``jpeg``."""
    rng = _rng(rng)
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(image, dtype=np.float32)
    if shift > 0:
        arr = arr + rng.uniform(-shift, shift, size=3)
    if noise > 0:
        arr = arr + rng.normal(0.0, noise, size=arr.shape)
    image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8))
    if jpeg is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=int(jpeg))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image


def reader_accuracy(n: int = 500, seed=0, *, blur: float = 0.0, noise: float = 0.0, shift: float = 0.0,
                    jpeg: int | None = None) -> dict[str, float]:
    """Per-attribute accuracy of ``read_attributes`` on ``n`` fresh jittered renders,
    degraded as in ``degrade``; ``all`` counts images with all four right."""
    rng = np.random.default_rng(seed)
    names = ("colour", "shape", "position", "size")
    hits = dict.fromkeys(names + ("all",), 0)
    for scene in sample_scenes(n, rng):
        image = degrade(render(scene, rng), rng, blur=blur, noise=noise, shift=shift, jpeg=jpeg)
        reading = read_attributes(image)
        right = [reading[name] == getattr(scene, name) for name in names]
        for name, ok in zip(names, right):
            hits[name] += ok
        hits["all"] += all(right)
    return {name: count / n for name, count in hits.items()}
