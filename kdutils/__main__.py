"""Command line: ``python -m kdutils {course,tiny} ...``."""

from __future__ import annotations

import argparse
import sys


def _course(args: argparse.Namespace) -> int:
    from .course import CourseError, run_course

    try:
        out = run_course(profile=args.profile, only=args.only)
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"executed notebooks and summary: {out}")
    return 0


def _tiny(args: argparse.Namespace) -> int:
    from .tiny import NAMES, TINY_PREFIX, resolve

    for name in NAMES:
        print(f"{TINY_PREFIX}{name} -> {resolve(TINY_PREFIX + name)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdutils", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    course = sub.add_parser("course", help="execute the notebooks in order in one profile")
    course.add_argument("--profile", choices=["tiny", "class", "paper"], help="default: KDSD_PROFILE, else auto")
    course.add_argument("--only", nargs="+", metavar="NN", help="notebook numbers or names, e.g. 03 04")
    course.set_defaults(func=_course)

    tiny = sub.add_parser("tiny", help="build the tiny offline models (if needed) and print where they are")
    tiny.set_defaults(func=_tiny)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
