"""Measuring the toy world: how often images show the colour, shape and position their prompt asked for.

``world.read_attributes`` reads each image; ``evaluate`` draws the world's held-out scenes from the same
initial latents for every text encoder and language, and ``compare_phrasings`` asks the same scenes in
the pairs' phrasing, in held-out words and in held-out phrasings. CMMD compares the images with true
renders of the same scenes. All numbers are measurements of the toy world, not of SD v1.4.
"""

from __future__ import annotations

import numpy as np

from . import world


def attribute_accuracy(images: list, scenes: list) -> dict[str, float]:
    """Share of images whose colour, shape and position ``world.read_attributes`` reads as asked."""
    read = [world.read_attributes(image) for image in images]
    return {name: float(np.mean([r.get(name) == getattr(s, name) for r, s in zip(read, scenes)]))
            for name in ("colour", "shape", "position")}


def generate_for(pipe, prompts: list[str], cfg, seed: int = 0, guidance_scale: float | None = None) -> list:
    from .pipeline import fixed_latents, generate

    latents = fixed_latents(pipe, cfg, len(prompts), seed=seed)
    return generate(pipe, prompts, latents, num_inference_steps=cfg.num_inference_steps,
                    guidance_scale=cfg.guidance_scale if guidance_scale is None else guidance_scale,
                    batch_size=cfg.sample_batch_size)


PROMPTS = {  # how each scene is asked for, by ``evaluate``'s language key
    "en": lambda scenes: [world.canonical_en(s) for s in scenes],
    "ko": lambda scenes: [world.canonical_ko(s) for s in scenes],  # the pairs' template phrasing
    "ko_forms": lambda scenes: world.held_form_prompts(scenes),  # the pairs' sentences with words no pair uses
    "ko_phrasing": lambda scenes: world.held_out_prompts(scenes),  # phrasings no pair uses
}


def evaluate(cfg, pipes: dict | None = None, scenes: list | None = None, languages=("en", "ko"),
             guidance_scale: float | None = None, scorer: tuple | None = None) -> dict:
    """Attribute accuracy of images drawn from the world's prompts, per encoder and language.

    ``pipes`` maps a name to a pipeline (default: the teacher's own SD); each is
    asked for every scene in each of ``languages`` (keys of ``PROMPTS``: ``en``, ``ko`` the pairs' phrasing,
    ``ko_phrasing`` held-out phrasings) from the same latents, at ``guidance_scale`` (default the profile's).
    Keys: ``<name>_<language>`` and ``<name>_<language>_held_out``, each
    ``{"colour", "shape", "position"}`` accuracies, and ``<name>_<language>_cmmd``: the CMMD between the
    images and jittered renders of the scenes they were asked for, under the world's scorer (lower is closer;
    renders of the same scenes with other jitter measure 0.006, see ``reference_cmmd``). ``scorer`` is
    ``metrics.load_scorer``'s ``(processor, model)`` when the caller already holds it.
    """
    from .metrics import cmmd, load_scorer
    from .pipeline import load_sd_pipeline

    scenes = scenes or world.eval_scenes()
    pipes = pipes or {"teacher": load_sd_pipeline(cfg)}
    guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
    held = [world.is_held_out(s) for s in scenes]
    processor, scorer = scorer or load_scorer(cfg, device="cpu")
    truth = true_renders(scenes)
    results = {"scenes": len(scenes), "held_out_scenes": int(sum(held)),
               "chance": {"colour": 1 / len(world.COLOURS), "shape": 1 / len(world.SHAPES),
                          "position": 1 / len(world.POSITIONS)},
               "settings": {"steps": cfg.num_inference_steps, "guidance": guidance}}
    for name, pipe in pipes.items():
        for lang in languages:
            images = generate_for(pipe, PROMPTS[lang](scenes), cfg, guidance_scale=guidance)
            results[f"{name}_{lang}"] = attribute_accuracy(images, scenes)
            results[f"{name}_{lang}_held_out"] = attribute_accuracy([i for i, h in zip(images, held) if h],
                                                                    [s for s, h in zip(scenes, held) if h])
            results[f"{name}_{lang}_cmmd"] = cmmd(processor, scorer, images, truth)
    return results


def true_renders(scenes: list, seed: int = 10_000) -> list:
    """Jittered renders of ``scenes``: the reference distribution CMMD compares generated images with."""
    return [world.render(scene, seed + i) for i, scene in enumerate(scenes)]


def reference_cmmd(cfg, scenes: list | None = None) -> float:
    """CMMD between two sets of renders of the same scenes with different jitter: the floor a perfect model reaches."""
    from .metrics import cmmd, load_scorer

    scenes = scenes or world.eval_scenes()
    processor, scorer = load_scorer(cfg, device="cpu")
    return cmmd(processor, scorer, true_renders(scenes, seed=20_000), true_renders(scenes))


PHRASING_LABELS = {"ko": "ko", "ko_forms": "ko held-out words", "ko_phrasing": "ko held-out phrasing"}


def compare_phrasings(cfg, teacher, students: dict, guidance_scales=None, scenes: list | None = None,
                      phrasings=("ko", "ko_forms", "ko_phrasing")):
    """Attribute accuracy of the teacher's English beside each student's Korean, per guidance, as a table.

    ``teacher`` is the SD pipeline, ``students`` maps a name to a Korean pipeline. Rows: ``teacher, en``
    then, per student and phrasing, ``<name>, <label>``: ``ko`` (the pairs' phrasing, ``world.canonical_ko``),
    ``ko held-out words`` (the pairs' sentences with word forms no pair uses, ``world.held_form_prompts``) and
    ``ko held-out phrasing`` (endings, particles, orders and spacing no pair uses, ``world.held_out_prompts``),
    each on ``all scenes`` and on the ``held-out combinations``. Columns: ``(guidance,
    colour/shape/position/mean/CMMD)``, CMMD on all scenes only. ``guidance_scales`` defaults to the profile's
    and 7.5 (diffusers' default, which people bring from SD).
    """
    import pandas as pd

    from .metrics import load_scorer

    guidance_scales = guidance_scales or (cfg.guidance_scale, 7.5)
    scorer = load_scorer(cfg, device="cpu")  # once for every evaluate below
    labels = [("teacher", "en", "teacher, en")] + [(name, lang, f"{name}, {PHRASING_LABELS[lang]}")
                                                   for name in students for lang in phrasings]
    columns = {}
    for guidance in guidance_scales:
        drawn = {**evaluate(cfg, {"teacher": teacher}, scenes, ("en",), guidance, scorer),
                 **evaluate(cfg, students, scenes, phrasings, guidance, scorer)}
        rows = {(label, subset): drawn[f"{name}_{lang}{suffix}"] for name, lang, label in labels
                for subset, suffix in (("all scenes", ""), ("held-out combinations", "_held_out"))}
        frame = pd.DataFrame(rows).T
        frame["mean"] = frame.mean(axis=1)
        frame["CMMD"] = [drawn[f"{name}_{lang}_cmmd"] if subset == "all scenes" else float("nan")
                         for name, lang, _ in labels for subset in ("all scenes", "held-out combinations")]
        columns[guidance] = frame
    return pd.concat(columns, axis=1, names=["guidance", "attribute"])


def evaluate_course(cfg, scenes: list | None = None) -> dict:
    """``evaluate`` for the teacher and every student trained so far in ``cfg``'s profile, sharing one SD."""
    from .distill import load_metrics
    from .models import EXPERIMENTS
    from .pipeline import korean_pipeline, load_sd_pipeline

    pipe = load_sd_pipeline(cfg)
    pipes = {"teacher": pipe}
    for experiment in EXPERIMENTS:
        try:
            best = load_metrics(cfg, experiment)["best_dir"]
        except FileNotFoundError:
            continue
        pipes[experiment] = korean_pipeline(cfg, best, base=pipe)
    return evaluate(cfg, pipes, scenes)
