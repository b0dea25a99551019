"""``crl-pipe``: run any workflow stage from the shell, without Snakemake.

Each subcommand is a function of :mod:`crl_pipe.pipeline`; its keyword arguments become options
(``out_h5ad`` -> ``--out-h5ad``), values are read as YAML scalars/lists/mappings, so
``--options '{control_values: [non-targeting]}'`` and ``--params '{edge_threshold: 0.2}'`` work.
Errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

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
    "predict": pipeline.predict,
    "evaluate": pipeline.evaluate,
    "report": pipeline.report,
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``crl-pipe label: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _value(text: str):
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid YAML value ({problem})") from None
    return text if parsed is None and text.strip() not in ("null", "~") else parsed


def _expect(kind: str, check: Callable[[object], bool], optional: bool) -> Callable[[str], object]:
    """A converter that reads a YAML value and checks it is of ``kind`` (or null when ``optional``)."""

    def convert(text: str):
        value = _value(text)
        if (optional and value is None and text.strip() in ("null", "~")) or check(value):
            return value
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}")

    return convert


def _number(optional: bool) -> Callable[[str], object]:
    """A number as YAML or Python writes it (``10000``, ``1e4``, ``0.5``)."""
    as_yaml = _expect("a number", lambda v: _is_int(v) or isinstance(v, float), optional)

    def convert(text: str):
        try:
            return as_yaml(text)
        except argparse.ArgumentTypeError:
            try:
                return float(text)  # YAML 1.1 reads 1e4 as text
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None

    return convert


def _string_list(text: str) -> list[str]:
    """A YAML list of labels, every item kept as text (``[NT, 1, no]``); a single label is a list of one."""
    try:
        value = yaml.load(text, Loader=yaml.BaseLoader)  # noqa: S506 (BaseLoader builds only str, list, dict)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid YAML list ({problem})") from None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    raise argparse.ArgumentTypeError(f"expected a label or a YAML list of labels such as '[NT, NTC]', got {text!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _converter(annotation: object) -> Callable[[str], object]:
    """How the command line reads an option, from the step's type annotation (a string)."""
    text = str(annotation)
    optional = text.endswith("| None")
    base = text.removesuffix("| None").strip()
    if base.startswith(("PathLike", "str")):
        return str
    if base == "int":
        return _expect("an integer", _is_int, optional)
    if base == "float":
        return _number(optional)
    if base == "bool":
        return _expect("true or false", lambda v: isinstance(v, bool), optional)
    if base.startswith("Sequence[str]"):
        return _string_list
    if base.startswith("Mapping"):
        return _expect("a YAML mapping such as '{key: value}'", lambda v: isinstance(v, dict), optional)
    return _value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="crl-pipe", description=__doc__.split("\n\n")[0])
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
            step.add_argument(
                flag,
                dest=param.name,
                type=_converter(param.annotation),
                required=required,
                default=default,
                help="required" if required else f"default: {default!r}",
            )
    # parsed in main(): everything after it goes to snakemake unchanged
    sub.add_parser("cluster-check", help="describe the SLURM cluster; with snakemake's arguments, check the jobs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cluster-check"]:
        return _cluster_check(argv[1:])
    args = build_parser().parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    kwargs = {k: v for k, v in vars(args).items() if k not in ("step", "verbose")}
    try:
        STEPS[args.step](**kwargs)
    except CrlPipeError as err:
        message = " ".join(str(err).splitlines())  # one line, whatever the message holds
        print(f"crl-pipe {args.step}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"crl-pipe {args.step}: interrupted; artifacts are written whole or not at all, rerun to continue",
            file=sys.stderr,
        )
        return 130
    return 0


def _cluster_check(snakemake_args: list[str]) -> int:
    """``crl-pipe cluster-check [--] [SNAKEMAKE ARGS]`` (:func:`crl_pipe.cluster.cluster_check`)."""
    from . import cluster

    if snakemake_args[:1] in (["-h"], ["--help"]):
        print(f"usage: crl-pipe cluster-check [SNAKEMAKE ARGS]\n\n{inspect.getdoc(cluster.cluster_check)}")
        return 0
    try:
        return cluster.cluster_check(snakemake_args[1:] if snakemake_args[:1] == ["--"] else snakemake_args)
    except CrlPipeError as err:
        print(f"crl-pipe cluster-check: error: {' '.join(str(err).splitlines())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
