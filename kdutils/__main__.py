"""Command line: ``python -m kdutils {course,site,train,export,bench,sizing,tiny,colab} ...``."""

from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import fields
from pathlib import Path

from .models import EXPERIMENTS, looks_like_repo_id
from .profiles import ENV_PREFIX, PADDINGS, PRECISIONS, PROFILES, Profile, check_value


def _course(args: argparse.Namespace) -> int:
    from .course import CourseError, run_course

    try:
        out = run_course(profile=args.profile, only=args.only, solutions=args.solutions)
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"executed notebooks and summary: {out}")
    return 0


def _site(args: argparse.Namespace) -> int:
    from .site import SiteError, build_site, serve

    if args.profile:
        import os

        os.environ["KDSD_PROFILE"] = args.profile
    try:
        html = build_site(args.course, args.output, solutions=False if args.no_solutions else None,
                          allow_stale=args.allow_stale)
    except SiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.serve:
        serve(html, args.serve)
    return 0


def _profile_value(name: str):
    """An argparse type for the profile field ``name``: parsed and range-checked by ``check_value``."""
    def parse(text: str):
        try:
            return check_value(name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


# field type -> metavar
_METAVARS = {bool: "yes|no", int: "N", float: "X", str: "TEXT", int | None: "N|none", str | None: "TEXT|none"}
_CHOICES = {"mixed_precision": PRECISIONS, "student_padding": PADDINGS}


def add_profile_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`Profile` field (``num_epochs`` -> ``--num-epochs``), typed as the field.

    The profile's name is ``--profile``. A flag that is not given stays out of
    the namespace, so only what the user typed overrides the profile.
    """
    group = parser.add_argument_group("profile values", f"override one value of the profile; a flag wins over "
                                                        f"its {ENV_PREFIX}<NAME> environment variable")
    hints = typing.get_type_hints(Profile)
    for f in fields(Profile):
        if f.name == "name":
            continue
        kind = hints[f.name]
        if kind not in _METAVARS:
            raise TypeError(f"Profile.{f.name} has type {kind}, which has no command-line parser; "
                            f"add one to _METAVARS in kdutils/__main__.py and to check_value in kdutils/profiles.py")
        values = {name: repr(getattr(p, f.name)) for name, p in PROFILES.items()}
        defaults = (next(iter(values.values())) if len(set(values.values())) == 1
                    else ", ".join(f"{name} {value}" for name, value in values.items()))
        aliases = []
        if f.name == "output_dir":  # also --output, as before; empty means outputs/<profile>
            aliases, defaults = ["--output"], "outputs/<profile>"
        metavar = "{" + ",".join(_CHOICES[f.name]) + "}" if f.name in _CHOICES else _METAVARS[kind]
        group.add_argument(f"--{f.name.replace('_', '-')}", *aliases, dest=f.name, type=_profile_value(f.name),
                           default=argparse.SUPPRESS, metavar=metavar,
                           help=f"default: {defaults}")


def profile_overrides(args: argparse.Namespace) -> dict:
    """The profile values given as flags, as keywords for :func:`kdutils.setup`."""
    return {f.name: getattr(args, f.name) for f in fields(Profile) if f.name != "name" and hasattr(args, f.name)}


def _train(args: argparse.Namespace) -> int:
    import kdutils as kd
    from kdutils.precision import process_state

    overrides = profile_overrides(args)
    state = process_state(kd.get_profile(args.profile, **overrides).torch_device)
    cfg = kd.setup(args.profile, quiet=not state.is_main_process, **overrides)
    out = kd.distill.run_dir(cfg, args.experiment)
    kd.distill.check_run_folder(out, resume=args.resume, overwrite=args.overwrite)  # before minutes of data work
    with state.main_process_first():  # one process writes the splits
        splits = kd.data.prepare_splits(cfg)
    result = kd.distill.distill(cfg, args.experiment, splits, resume=args.resume, overwrite=args.overwrite,
                                progress=state.is_main_process)
    if state.is_main_process:
        print(f"best checkpoint: {result.best_dir} (step {result.best_step}, val loss {result.best_val_loss:.4f})")
        print(f"metrics: {result.output_dir / 'metrics.json'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    import kdutils as kd
    from kdutils.pipeline import export_pipeline

    cfg = kd.setup(args.profile, quiet=True)
    out = export_pipeline(cfg, args.student, args.output, safety_checker=not args.no_safety_checker,
                          overwrite=args.overwrite, fp16=args.fp16)
    print(f"pipeline saved to {out}; load it with StableDiffusionPipeline.from_pretrained({str(out)!r})")
    if args.push_to_hub:
        return _push(out, args.push_to_hub, private=args.private)
    return 0


def _sizing(args: argparse.Namespace) -> int:
    import json

    from . import sizing, standins

    if args.check:
        try:
            result = standins.standin_check(args.check)
        except ImportError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(json.dumps(result, indent=2))
        return 0
    report = sizing.derivation(PROFILES["class"])
    print(json.dumps(report, indent=2) if args.json else sizing.format_derivation(report))
    return 0


def _push(folder: Path, repo_id: str, *, private: bool) -> int:
    """Upload an exported pipeline folder as it is on disk (``kdsd_export.json`` included) to a hub model repo.

    This is what the pipeline's ``push_to_hub`` does after saving again; uploading
    the saved folder keeps the course's ``kdsd_export.json``, which tells
    ``KDSD_TRAINED_<EXPERIMENT>`` which student the repo holds.
    """
    from huggingface_hub import create_repo, upload_folder

    try:
        url = create_repo(repo_id, private=private, exist_ok=True)
        upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="Korean SD pipeline (kdutils export)")
    except Exception as err:  # no token, no network, no rights: the export on disk stays
        print(f"error: could not push to {repo_id!r} ({type(err).__name__}: {err}); the pipeline is saved in "
              f"{folder}; log in with `hf auth login` (or set HF_TOKEN) and run the command again", file=sys.stderr)
        return 1
    print(f"pushed to {url}; StableDiffusionPipeline.from_pretrained({repo_id!r}) loads it, and "
          f"KDSD_TRAINED_<EXPERIMENT>={repo_id} gives the course its student")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from .bench import BenchSettings, format_phases, format_table, run_bench, step_phases
    from .profiles import auto_device, output_root

    device = args.device or auto_device()
    experiments = args.experiment or EXPERIMENTS
    if args.phases:
        rows = [{"experiment": e, **step_phases(e, args.batch_size, args.steps or 3, device=device,
                                                precision=args.precision)}
                for e in experiments]
        output = Path(args.output) if args.output else output_root() / "bench" / f"phases_{device}.json"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(rows, indent=2) + "\n")
        print(format_phases(rows))
        print(f"median ms per phase of the engine's step; JSON: {output}")
        return 0
    output = Path(args.output) if args.output else output_root() / "bench" / f"bench_{device}.json"
    settings = BenchSettings.make(device, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                                  repeats=args.repeats, seconds=args.seconds, precision=args.precision,
                                  threads=args.threads, clock=args.clock, max_spread=args.max_spread)
    rows = run_bench(experiments, settings, output=output,
                     progress=lambda text: print(text, file=sys.stderr, flush=True))
    print(format_table(rows))
    print(f"JSON: {output}")
    return 0


def _field_setting(text: str) -> tuple[str, str]:
    """``FIELD=VALUE`` from the command line (a dataclass checks the field and the value's type)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, e.g. unet_steps=2400, not {text!r}")
    return name.strip().replace("-", "_"), value.strip()


def _tiny(args: argparse.Namespace) -> int:
    import json

    from .tiny import NAMES, TINY_PREFIX, TRAINED, resolve

    if (args.recipe or args.keep_student or args.keep_vae) and not args.train or args.pretrain_recipe and not (args.train or args.pretrain_student):
        raise ValueError("--recipe, --keep-student and --keep-vae go with --train, --pretrain-recipe with --train or --pretrain-student")
    if args.train:  # the toy world's SD and scorer, into kdutils/assets/tiny (minutes on a CPU)
        from . import toymodels

        recipe = toymodels.recipe_from(toymodels.Recipe, args.recipe or [])
        student_recipe = toymodels.recipe_from(toymodels.PretrainRecipe, [("threads", str(recipe.threads))]
                                               + (args.pretrain_recipe or []))
        report = toymodels.build(args.output or toymodels.ASSETS, recipe, student_recipe=student_recipe,
                                 keep_student=args.keep_student, keep_vae=args.keep_vae)
        print(json.dumps(report, indent=2))
    if args.pretrain_student:  # only the toy klue/roberta-small (minutes on a CPU)
        from . import toymodels

        recipe = toymodels.recipe_from(toymodels.PretrainRecipe, args.pretrain_recipe or [])
        print(json.dumps(toymodels.pretrain_student((args.output or toymodels.ASSETS) / "roberta-small", recipe),
                         indent=2))
    if args.eval:  # how well images follow their prompts, for the teacher and any trained students
        import kdutils as kd

        from . import toymodels

        cfg = kd.setup("tiny", quiet=True)
        print(json.dumps(toymodels.evaluate_course(cfg), indent=2))
    if not (args.train or args.eval or args.pretrain_student):
        for name in TRAINED + NAMES:
            print(f"{TINY_PREFIX}{name} -> {resolve(TINY_PREFIX + name)}")
    return 0


def _colab(args: argparse.Namespace) -> int:
    from .colab import repoint

    changed = repoint(args.repo, args.branch, args.root)
    for path, changes in changed.items():
        counts = {kind: sum(k == kind for k, _ in changes) for kind, _ in changes}
        what = ", ".join(f"{n} {kind}{'s' * (n > 1)}" for kind, n in counts.items())
        olds = ", ".join(sorted({old for _, old in changes}))
        print(f"{path.relative_to(args.root)}: {what} ({olds} -> {args.repo}@{args.branch})")
    if changed:
        print(f"{len(changed)} file(s) now point to {args.repo}@{args.branch}; commit and push them to that fork")
    else:
        print(f"nothing to change: every badge and clone already points to {args.repo}@{args.branch}")
    return 0


def _checked(check):
    """An argparse type from a ``check_*`` function that raises ValueError."""
    def parse(text: str) -> str:
        try:
            return check(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def _hub_repo_id(text: str) -> str:
    if not looks_like_repo_id(text):
        raise argparse.ArgumentTypeError(f"expected a Hugging Face repo id OWNER/NAME, e.g. "
                                         f"my-school/korean-sd-roberta; got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m kdutils`` parser; choices come from ``PROFILES`` and ``EXPERIMENTS``."""
    profiles = list(PROFILES)
    parser = argparse.ArgumentParser(prog="python -m kdutils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_course_commands(sub, profiles)
    _add_training_commands(sub, profiles)
    _add_bench_command(sub)
    _add_tool_commands(sub)
    return parser


def _add_course_commands(sub, profiles: list[str]) -> None:
    """``course`` and ``site``: run the notebooks, build the website from them."""
    course = sub.add_parser("course", help="execute the notebooks in order in one profile")
    course.add_argument("--profile", choices=profiles, help="default: KDSD_PROFILE, else auto")
    course.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names, e.g. 03 04")
    course.add_argument("--solutions", action="store_true",
                        help="also run notebooks/solutions/solutions.ipynb (last), for the course website")
    course.set_defaults(func=_course)

    site = sub.add_parser("site", help="build the course website from the executed notebooks (after `course`)")
    site.add_argument("--profile", choices=profiles, help="whose executed copies (default: KDSD_PROFILE, else auto)")
    site.add_argument("--course", type=Path, help="folder of executed notebooks (default: <output folder>/course)")
    site.add_argument("--output", type=Path, help="where the site goes (default: <output folder>/site; pages in html/)")
    site.add_argument("--no-solutions", action="store_true",
                      help="leave the solutions page out (also KDSD_SITE_SOLUTIONS=0)")
    site.add_argument("--allow-stale", action="store_true",
                      help="publish executed copies whose code differs from the notebooks now")
    site.add_argument("--serve", nargs="?", const=8000, type=int, metavar="PORT",
                      help="then preview it on http://localhost:PORT (default 8000) until Ctrl-C")
    site.set_defaults(func=_site)


def _add_training_commands(sub, profiles: list[str]) -> None:
    """``train`` and ``export``: a student outside notebooks, and the pipeline it makes."""
    train = sub.add_parser("train", help="distil a student outside notebooks (works under accelerate launch)")
    train.add_argument("--experiment", required=True, choices=EXPERIMENTS)
    train.add_argument("--profile", choices=profiles, help="default: KDSD_PROFILE, else auto")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in the output folder from last/ (its settings must match)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in the output folder (without it, train stops and says so)")
    add_profile_flags(train)
    train.set_defaults(func=_train)

    export = sub.add_parser("export", help="save SD with a trained student as a from_pretrained folder")
    export.add_argument("--student", required=True, help="a best/ checkpoint folder")
    export.add_argument("--output", required=True, help="a new or empty folder to write the pipeline to")
    export.add_argument("--overwrite", action="store_true", help="replace a pipeline exported to --output before")
    export.add_argument("--profile", choices=profiles, help="default: KDSD_PROFILE, else auto")
    export.add_argument("--no-safety-checker", action="store_true", help="leave the safety checker out")
    export.add_argument("--fp16", action="store_true",
                        help="save the weights in fp16: half the size (SD v1.4 about 2.7 GB instead of 5.5 GB); "
                             "load with dtype=torch.float16 on a GPU")
    export.add_argument("--push-to-hub", metavar="REPO_ID", type=_hub_repo_id,
                        help="also upload the folder to this Hugging Face model repo (OWNER/NAME; needs `hf auth login`)")
    export.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo as private")
    export.set_defaults(func=_export)


def _add_bench_command(sub) -> None:
    """``bench``: the engine's training step against the study's loop."""
    bench = sub.add_parser("bench", help="distillation throughput: the engine against the study's loop")
    bench.add_argument("--experiment", nargs="+", choices=EXPERIMENTS, help="default: all")
    bench.add_argument("--device", choices=["cpu", "cuda", "mps"], help="default: cuda, else mps, else cpu")
    bench.add_argument("--batch-size", type=int, help="default: 32 on a GPU, 8 on a CPU")
    bench.add_argument("--steps", type=int, help="steps per timed block (default: as many as --seconds takes)")
    bench.add_argument("--seconds", type=float,
                       help="how long each timed block lasts (default: 3 on a GPU, 10 on a CPU)")
    bench.add_argument("--warmup", type=int, help="warm-up steps per loop (default: 5 on a GPU, 3 on a CPU)")
    bench.add_argument("--repeats", type=int,
                       help="paired blocks per loop, taking turns at going first (default: 5)")
    bench.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="the engine's precision, as the profile field mixed_precision (default: auto)")
    bench.add_argument("--threads", type=int, help="torch threads (default: 1 on a CPU, torch's own on a GPU)")
    bench.add_argument("--clock", choices=["cpu", "wall"],
                       help="time with the process's CPU time (default on a CPU: other work on the machine does not "
                            "stretch it) or wall-clock time (default on a GPU)")
    bench.add_argument("--max-spread", type=float, default=0.10,
                       help="widest half-range of the paired ratios, over their median, that still gives one "
                            "number (default: 0.10)")
    bench.add_argument("--output", help="JSON file (default: outputs/bench/bench_<device>.json)")
    bench.add_argument("--phases", action="store_true",
                       help="instead: where the engine's step spends its time (teacher, forward, backward, optimizer)")
    bench.set_defaults(func=_bench)


def _add_tool_commands(sub) -> None:
    """``sizing``, ``tiny`` and ``colab``: the class profile's derivation, the toy world, a fork's links."""
    from .colab import BRANCH, ROOT, check_branch, check_repo

    sizing = sub.add_parser("sizing", help="the class profile's derivation: minutes and GPU memory per notebook "
                                           "(estimates), and a full-size stand-in check on the CPU")
    sizing.add_argument("--check", metavar="DIR", type=Path,
                        help="instead: run the class profile at full size on the CPU with offline stand-ins in DIR "
                             "(needs open-clip-torch for the real CLIP vocabulary; several minutes)")
    sizing.add_argument("--json", action="store_true", help="print the derivation as JSON")
    sizing.set_defaults(func=_sizing)

    tiny = sub.add_parser("tiny", help="the tiny profile's toy world: where its models are, rebuild them, measure them")
    tiny.add_argument("--train", action="store_true",
                      help="retrain the toy world's SD, scorer and pretrained student with fixed seeds (kdutils/assets/tiny; ~30 min on 2 cores)")
    tiny.add_argument("--pretrain-student", action="store_true",
                      help="only pretrain the toy klue/roberta-small on the Korean corpus (masked LM; ~5 min on 2 cores)")
    tiny.add_argument("--output", type=Path, help="with --train or --pretrain-student: write the models here instead")
    tiny.add_argument("--recipe", nargs="+", type=_field_setting, metavar="FIELD=VALUE",
                      help="with --train: change toymodels.Recipe, e.g. unet_steps=2400 threads=1 (recorded in the "
                           "build report)")
    tiny.add_argument("--pretrain-recipe", nargs="+", type=_field_setting, metavar="FIELD=VALUE",
                      help="with --train or --pretrain-student: change toymodels.PretrainRecipe, e.g. steps=5000")
    tiny.add_argument("--keep-student", action="store_true",
                      help="with --train: keep a finished student in the output folder pretrained with the same recipe "
                           "(its pretraining reads no SD model; saves ~8 min)")
    tiny.add_argument("--keep-vae", action="store_true",
                      help="with --train: keep the VAE of a finished build in the output folder made with the same VAE "
                           "recipe (the UNet trains on a frozen VAE; saves ~15 min)")
    tiny.add_argument("--eval", action="store_true",
                      help="print JSON: attribute accuracy of images from English and Korean prompts, per text encoder")
    tiny.set_defaults(func=_tiny)

    colab = sub.add_parser("colab", help="point every Colab badge, clone cell and README link to a fork")
    colab.add_argument("--repo", required=True, type=_checked(check_repo), help="the fork, as OWNER/NAME")
    colab.add_argument("--branch", default=BRANCH, type=_checked(check_branch),
                       help=f"the branch Colab opens and clones (default: {BRANCH})")
    colab.add_argument("--root", type=Path, default=ROOT, help="the clone to rewrite (default: this one)")
    colab.set_defaults(func=_colab)


def main(argv: list[str] | None = None) -> int:
    from .files import FolderBusy

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileExistsError, FileNotFoundError, FolderBusy) as err:  # bad input: say it, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
