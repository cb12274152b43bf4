"""``python -m arq_bench COMMAND``: the benchmark package's command line (``demo``)."""

from __future__ import annotations

import argparse
import logging
import sys

from .demo import add_demo_parser

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m arq_bench`` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging and full tracebacks")
    ap = argparse.ArgumentParser(prog="python -m arq_bench", parents=[common],
                                 description="Benchmarks and the demo of tvm_arq. Assets: python -m "
                                             "arq_bench.assets {fetch-all,fetch,list}.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo_parser(sub, [common])
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m arq_bench`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help (0) and usage errors (2), also when called in-process
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - errors without tracebacks unless --verbose
        if verbose:
            raise
        print(f"arq_bench {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
