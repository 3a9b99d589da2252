"""kdutils.world: the toy world of shapes, its captions, held-out combinations and attribute reader.

The reader accuracies asserted below were measured with these seeds (n=1000):
clean 100 % on every attribute; blur 1.5 + noise 8: 100 %; blur 2 + noise 12 +
colour shift 10 + JPEG 60: shape 99.0 %, the rest 100 %. Thresholds keep a margin.
"""

import itertools
import json
import re

import numpy as np
import pytest
from PIL import Image

from kdutils import world
from kdutils.world import Scene

ATTRIBUTES = ("colour", "shape", "position", "size")

# The Korean words the captions must use, written out here rather than taken
# from the module, so that a change of template is checked against the brief.
KO_WORDS = {
    "colour": {"red": ("빨간", "빨강"), "green": ("초록",), "blue": ("파란", "파랑"), "yellow": ("노란", "노랑"),
               "purple": ("보라",), "orange": ("주황",)},
    "shape": {"circle": ("원", "동그라미"), "square": ("사각형", "네모"), "triangle": ("삼각형", "세모")},
    "position": {"left": ("왼쪽",), "right": ("오른쪽",), "top": ("위",), "bottom": ("아래",), "center": ("가운데",)},
    "size": {"small": ("작은",), "large": ("큰",)},
}
EN_WORDS = {
    "colour": {c: (c,) for c in world.COLOURS},
    "shape": {s: (s,) for s in world.SHAPES},
    "position": {"left": ("left",), "right": ("right",), "top": ("top",), "bottom": ("bottom",), "center": ("center", "middle")},
    "size": {"small": ("small", "little"), "large": ("large", "big")},
}


def mentioned(text, table, lang):
    """The values of one attribute that ``text`` names."""
    words = set(text.replace(",", " ").split())
    if lang == "ko":
        return {value for value, forms in table.items() if any(form in text for form in forms)}
    return {value for value, forms in table.items() if words & set(forms)}


def parse(text, lang):
    """Read a caption back to a (colour, shape, position) triple; fail on ambiguity."""
    table = KO_WORDS if lang == "ko" else EN_WORDS
    found = [mentioned(text, table[name], lang) for name in ("colour", "shape", "position")]
    assert all(len(values) == 1 for values in found), (text, found)
    return tuple(values.pop() for values in found)


def reads_right(image, scene):
    reading = world.read_attributes(image)
    return all(reading[name] == getattr(scene, name) for name in ATTRIBUTES)


# ------------------------------------------------------------------ scenes and rendering
def test_scene_list_and_validation():
    scenes = world.all_scenes()
    assert len(scenes) == len(set(scenes)) == 180
    assert Scene.from_dict(scenes[7].to_dict()) == scenes[7]
    with pytest.raises(ValueError):
        Scene("hexagon", "red", "left", "small")
    sample = world.sample_scenes(50, seed=3)
    assert sample == world.sample_scenes(50, seed=3) and len(sample) == 50


def test_render_is_deterministic():
    scene = Scene("triangle", "orange", "top", "large")
    a, b = world.render(scene, 11), world.render(scene, 11)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert a.tobytes() == b.tobytes()
    assert world.render(scene, 12).tobytes() != a.tobytes()  # the jitter is real
    assert world.render(scene).tobytes() == world.render(scene, None).tobytes()  # canonical: no jitter
    circle = np.asarray(world.render(Scene("circle", "blue", "left", "large"), 3), dtype=int)
    assert len(np.unique(circle.reshape(-1, 3), axis=0)) > 10  # anti-aliased edges, not two flat colours


def test_every_scene_renders_inside_the_canvas_and_reads_back():
    for i, scene in enumerate(world.all_scenes()):
        for rng in (None, i):
            pixels = np.asarray(world.render(scene, rng), dtype=int)
            ring = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
            assert (ring == ring[0]).all() and ring[0, 0] == ring[0, 1] == ring[0, 2], (scene, "touches the border")
            assert reads_right(Image.fromarray(pixels.astype(np.uint8)), scene), (scene, rng)


# ------------------------------------------------------------------ reader
def test_reader_is_exact_on_clean_renders():
    accuracy = world.reader_accuracy(300, seed=1)
    assert accuracy == {name: 1.0 for name in ATTRIBUTES + ("all",)}


@pytest.mark.parametrize("degradation, floor", [
    (dict(blur=1.5, noise=8), {"colour": 0.99, "shape": 0.98, "position": 0.99, "size": 0.99}),
    (dict(blur=2.0, noise=12, shift=10, jpeg=60), {"colour": 0.98, "shape": 0.95, "position": 0.98, "size": 0.98}),
])
def test_reader_survives_blur_noise_and_jpeg(degradation, floor):
    accuracy = world.reader_accuracy(250, seed=2, **degradation)
    for name, minimum in floor.items():
        assert accuracy[name] >= minimum, (degradation, accuracy)


def test_shape_mask_covers_the_shape_where_it_was_drawn():
    for scene in (Scene("circle", "red", "left", "large"), Scene("square", "blue", "top", "small")):
        mask = world.shape_mask(world.render(scene))
        ys, xs = np.nonzero(mask)
        assert mask.shape == (world.IMAGE_SIZE, world.IMAGE_SIZE) and mask.dtype == bool
        cx, cy = world.ANCHORS[scene.position]
        assert abs(xs.mean() + 0.5 - cx) < 3 and abs(ys.mean() + 0.5 - cy) < 3
        side = world.EXTENTS[scene.size]
        assert 0.5 * side**2 < mask.sum() < 1.2 * side**2
    assert not world.shape_mask(Image.new("RGB", (64, 64), (200, 200, 200))).any()


def test_reader_on_blank_noisy_and_odd_inputs():
    blank = Image.new("RGB", (64, 64), (236, 236, 236))
    for image in (blank, world.degrade(blank, 0, noise=20), np.zeros((64, 64, 3)), Image.new("RGB", (512, 512), "white")):
        reading = world.read_attributes(image)
        assert reading["found"] is False and all(reading[name] is None for name in ATTRIBUTES)

    scene = Scene("square", "purple", "bottom", "large")
    image = world.render(scene, 5)
    assert reads_right(np.asarray(image), scene)  # uint8 array
    assert reads_right(np.asarray(image) / 255.0, scene)  # float array in 0..1
    assert reads_right(image.resize((256, 256)), scene)  # another size
    speck = np.asarray(image).copy()
    speck[5:8, 5:8] = (20, 160, 40)  # a small distractor blob: the largest one wins
    assert reads_right(speck, scene)

    grey = Image.new("RGB", (64, 64), (236, 236, 236))
    grey.paste((90, 90, 90), (20, 20, 40, 40))
    reading = world.read_attributes(grey)
    assert reading["found"] and reading["colour"] is None and reading["shape"] == "square"


# ------------------------------------------------------------------ captions
def test_korean_particles():
    assert [world.subject(w) for w in ("원", "동그라미", "사각형", "네모", "삼각형", "세모")] == \
        ["원이", "동그라미가", "사각형이", "네모가", "삼각형이", "세모가"]
    for scene in world.all_scenes():
        for text in world.every_caption(scene, "ko"):
            assert not re.search(r"(원|사각형|삼각형)가|(동그라미|네모|세모)이", text), text


def test_every_caption_names_its_attributes_and_nothing_else():
    for scene in world.all_scenes():
        for lang, table in (("ko", KO_WORDS), ("en", EN_WORDS)):
            captions = world.every_caption(scene, lang)
            assert len(captions) >= 10
            for text in captions:
                assert parse(text, lang) == scene.triple, text
                assert mentioned(text, table["size"], lang) <= {scene.size}, text
            assert any(mentioned(t, table["size"], lang) for t in captions)  # the size is named...
            assert any(not mentioned(t, table["size"], lang) for t in captions)  # ...or left out


def test_random_and_canonical_captions():
    rng = np.random.default_rng(0)
    scenes = world.sample_scenes(200, seed=4)
    for scene in scenes:
        assert world.caption_ko(scene, rng) in world.every_caption(scene, "ko")
        assert world.caption_en(scene, rng) in world.every_caption(scene, "en")
        assert world.caption_ko(scene, rng, with_size=False) in world.every_caption(scene, "ko")
        assert not mentioned(world.caption_en(scene, rng, with_size=False), EN_WORDS["size"], "en")
    scene = scenes[0]
    assert world.caption_ko(scene, 9) == world.caption_ko(scene, 9)
    assert len({world.caption_ko(scene, seed) for seed in range(40)}) > 10  # varied word order and synonyms

    assert world.canonical_en(Scene("circle", "red", "left", "small")) == "a small red circle on the left"
    assert world.canonical_en(Scene("square", "orange", "top", "large")) == "a large orange square at the top"
    assert world.canonical_ko(Scene("circle", "red", "left", "small")) == "왼쪽에 있는 작은 빨간 원"
    for canonical in (world.canonical_en, world.canonical_ko):
        texts = [canonical(s) for s in world.all_scenes()]
        assert len(set(texts)) == 180  # the size is always named, so every scene has its own prompt


def test_english_vocabulary_covers_every_caption():
    vocabulary = world.english_vocabulary()
    assert vocabulary == sorted(set(vocabulary)) and len(vocabulary) == 30
    used = {w for s in world.all_scenes() for t in world.every_caption(s, "en") for w in t.replace(",", " ").split()}
    assert used == set(vocabulary)
    assert all(re.fullmatch(r"[a-z]+", w) for w in vocabulary)


# ------------------------------------------------------------------ held-out combinations and pairs
def test_held_out_set_leaves_every_value_and_pair_in_training():
    assert len(world.HELD_OUT) == 12 and all(len(t) == 3 for t in world.HELD_OUT)
    train = {s.triple for s in world.train_scenes()}
    assert len(world.train_scenes()) == 156 and not train & world.HELD_OUT
    axes = (world.COLOURS, world.SHAPES, world.POSITIONS)
    for i, values in enumerate(axes):
        assert {t[i] for t in train} == set(values)
    for i, j in itertools.combinations(range(3), 2):
        assert {(t[i], t[j]) for t in train} == set(itertools.product(axes[i], axes[j])), (i, j)
    assert world.is_held_out(Scene("circle", "red", "right", "large"))
    assert not world.is_held_out(Scene("circle", "red", "left", "large"))


def test_train_pairs_never_show_held_out_combinations():
    pairs = world.caption_pairs(1000, seed=0, split="train")
    assert pairs == world.caption_pairs(1000, seed=0, split="train")
    assert pairs != world.caption_pairs(1000, seed=1, split="train")
    assert json.loads(json.dumps(pairs, ensure_ascii=False)) == pairs
    for pair in pairs:
        scene = Scene.from_dict(pair["scene"])
        assert not pair["held_out"] and not world.is_held_out(scene)
        assert parse(pair["ko"], "ko") == parse(pair["en"], "en") == scene.triple
        assert parse(pair["ko"], "ko") not in world.HELD_OUT
        # both sides of a pair name the size, or neither does
        assert bool(mentioned(pair["ko"], KO_WORDS["size"], "ko")) == bool(mentioned(pair["en"], EN_WORDS["size"], "en"))
    scenes = {Scene.from_dict(p["scene"]) for p in pairs}
    assert scenes == set(world.train_scenes())  # shuffled epochs: 1000 >= 156 covers them all
    for name, values in zip(ATTRIBUTES, (world.COLOURS, world.SHAPES, world.POSITIONS, world.SIZES)):
        assert {getattr(s, name) for s in scenes} == set(values)


def test_eval_pairs_include_the_held_out_scenes():
    first = world.caption_pairs(24, seed=0, split="eval")
    assert {Scene.from_dict(p["scene"]) for p in first} == {s for s in world.all_scenes() if world.is_held_out(s)}
    assert all(p["held_out"] for p in first)
    full = world.caption_pairs(180, seed=0, split="eval")
    assert sorted(Scene.from_dict(p["scene"]) for p in full) == sorted(world.all_scenes())
    assert world.caption_pairs(30, seed=0, split="train") != world.caption_pairs(30, seed=0, split="eval")
    with pytest.raises(ValueError):
        world.caption_pairs(3, split="test")


def test_translated_pairs_follow_the_korean_sentence():
    rng = np.random.default_rng(5)
    for scene in world.sample_scenes(100, seed=6):
        ko, en = world.translation_pair(scene, rng)
        assert ko in world.every_caption(scene, "ko") and en in world.every_caption(scene, "en")
        assert parse(ko, "ko") == parse(en, "en") == scene.triple
    pairs = world.caption_pairs(300, seed=0, translate=True)
    assert pairs == world.caption_pairs(300, seed=0, translate=True)
    for pair in pairs:
        assert not pair["held_out"] and parse(pair["ko"], "ko") == parse(pair["en"], "en")
        assert bool(mentioned(pair["ko"], KO_WORDS["size"], "ko")) == bool(mentioned(pair["en"], EN_WORDS["size"], "en"))
    # the English side is a function of the Korean sentence
    assert len({(p["ko"], p["en"]) for p in pairs}) == len({p["ko"] for p in pairs})


def test_the_measured_scenes_are_every_held_out_combination_and_as_many_seen_ones():
    scenes = world.eval_scenes()
    held = [s for s in scenes if world.is_held_out(s)]
    assert len(scenes) == 48 and len(set(scenes)) == 48 and len(held) == 24
    assert {s.triple for s in held} == set(world.HELD_OUT)
    assert scenes == world.eval_scenes()  # the same scenes in every run and notebook


# ------------------------------------------------------------------ held-out phrasings and the Korean corpus
@pytest.fixture(scope="module")
def every_pair():
    """Every pair the tiny profile trains, validates and tests on, both sides: the world's and the bundled ones."""
    from kdutils import data

    rows = data.read_toyworld() + data.read_bundled()
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    return [(r["ko"], r["en"]) for r in rows]


@pytest.fixture(scope="module")
def corpus_sentences():
    from kdutils.tiny import korean_corpus

    return {sentence for line in korean_corpus() for sentence in line.split(". ")}


def held_template_sentences(template):
    return set().union(*(world.every_held_out_phrasing(scene, template) for scene in world.all_scenes()))


def test_held_out_forms_appear_in_no_pair_but_in_the_corpus(every_pair):
    from kdutils.tiny import korean_corpus

    corpus = "\n".join(korean_corpus())
    assert len(world.HELD_FORMS) >= 15
    for form in world.HELD_FORMS:
        hits = [pair for pair in every_pair if form in pair[0] or form in pair[1]]
        assert not hits, (form, hits[:3])  # not even inside another word, in any split, on either side
        assert corpus.count(form) >= 100, form
    for table in (world.KO_COLOUR_HELD, world.KO_SHAPE_HELD, world.KO_WHERE_HELD, world.KO_SIZE_HELD):
        values = [value for value, forms in table.items() if forms]
        assert len(values) >= len(table) - 1  # every value has one, but purple (its other word is in a bundled pair)


def test_held_out_templates_make_no_pair_but_corpus_sentences(every_pair, corpus_sentences):
    korean = {ko for ko, _ in every_pair}
    for template in world.KO_HELD_TEMPLATES:
        sentences = held_template_sentences(template)
        assert not sentences & korean, (template, sorted(sentences & korean)[:3])
        assert len(sentences & corpus_sentences) >= 50, template
    for template in world.KO_TEMPLATES:  # the pairs' own templates are in the corpus too
        assert len(held_template_sentences(template) & corpus_sentences) >= 50, template


def test_held_out_prompts_are_fixed_and_untaught(every_pair):
    prompts = world.held_out_prompts()
    scenes = world.eval_scenes()
    assert prompts == world.held_out_prompts() and len(prompts) == len(scenes) == 48
    korean = {ko for ko, _ in every_pair}
    held_forms = 0
    for prompt, scene in zip(prompts, scenes):
        assert prompt not in korean
        assert any(prompt in world.every_held_out_phrasing(scene, t) for t in world.KO_HELD_TEMPLATES), prompt
        held_forms += any(form in prompt for form in world.HELD_FORMS)
    assert held_forms >= len(prompts) // 2  # most also use a held-out word form
    assert len({p for p in prompts}) == len(prompts)


def test_the_korean_corpus_is_korean_about_seen_scenes_and_fixed():
    from kdutils.tiny import korean_corpus

    lines = world.korean_sentences(500, seed=2)
    assert lines == world.korean_sentences(500, seed=2) and lines != world.korean_sentences(500, seed=3)
    assert not any(re.search(r"[A-Za-z]", line) for line in lines)
    assert all(re.search(r"[가-힣]", line) for line in korean_corpus())  # the bundled Korean side mixes in some English
    assert sum(". " in line for line in lines) > 90  # many lines say the same thing twice, in other words
    # and many are about familiar things, for every kind of word: a colour, a shape, a place, a size
    for kind, values in world.THING_KINDS.items():
        assert any(thing in line for value in values for thing in world.KO_THINGS[value] for line in lines), kind
    assert any("천장" in line or "하늘" in line for line in lines if "상단" in line or "위" in line)
    assert any("빨간원" in line or "있는그림" in line for line in lines)  # spacing variants
