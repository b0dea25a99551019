"""``crl-pipe``: run any workflow stage from the shell, without Snakemake.

Each subcommand is a function of :mod:`crl_pipe.pipeline`; its keyword arguments become options
(``out_h5ad`` -> ``--out-h5ad``), values are read as YAML scalars/lists/mappings, so
``--control-values '[non-targeting]'`` and ``--params '{edge_threshold: 0.2}'`` work.
Errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Sequence

import yaml

from . import __version__, pipeline
from ._errors import CrlPipeError

STEPS: dict[str, Callable[..., None]] = {
    "simulate": pipeline.simulate,
    "ingest": pipeline.ingest,
    "label": pipeline.label,
    "preprocess": pipeline.preprocess,
    "anchors": pipeline.anchors,
    "train": pipeline.train,
    "graph": pipeline.graph,
    "evaluate": pipeline.evaluate,
    "report": pipeline.report,
}


def _value(text: str):
    parsed = yaml.safe_load(text)
    return text if parsed is None and text.strip() not in ("null", "~") else parsed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crl-pipe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"crl-pipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, fn in STEPS.items():
        doc = inspect.getdoc(fn) or ""
        step = sub.add_parser(name, help=doc.split("\n")[0], description=doc)
        for param in inspect.signature(fn).parameters.values():
            flag = "--" + param.name.replace("_", "-")
            required = param.default is inspect.Parameter.empty
            default = None if required else param.default
            as_text = str(param.annotation).startswith(("PathLike", "str"))
            step.add_argument(flag, dest=param.name, type=str if as_text else _value, required=required, default=default,
                              help="required" if required else f"default: {default!r}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kwargs = {k: v for k, v in vars(args).items() if k not in ("step", "verbose")}
    try:
        STEPS[args.step](**kwargs)
    except CrlPipeError as err:
        print(f"crl-pipe {args.step}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
