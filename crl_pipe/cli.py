"""``crl-pipe``: run any workflow stage from the shell, without Snakemake.

Each subcommand is a function of :mod:`crl_pipe.pipeline` (every one of them is here); its keyword
arguments become options (``out_h5ad`` -> ``--out-h5ad``), values are read as YAML
scalars/lists/mappings, so ``--options '{control_values: [non-targeting]}'`` and
``--params '{edge_threshold: 0.2}'`` work. Errors print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import yaml

from . import __version__, cluster, pipeline
from ._errors import CrlPipeError

#: Subcommand -> the pipeline step it runs, in workflow order (tests check every step is here).
STEPS: dict[str, Callable[..., None]] = {
    "simulate": pipeline.simulate,
    "simulate-robot": pipeline.simulate_robot,
    "ingest": pipeline.ingest,
    "label": pipeline.label,
    "preprocess": pipeline.preprocess,
    "anchors": pipeline.anchors,
    "train": pipeline.train,
    "graph": pipeline.graph,
    "predict": pipeline.predict,
    "steer": pipeline.steer,
    "evaluate": pipeline.evaluate,
    "baseline": pipeline.baseline,
    "evaluate-baseline": pipeline.evaluate_baseline,
    "report": pipeline.report,
    "collect-benchmark": pipeline.collect_benchmark,
    "export": pipeline.export,
    "hierarchy": pipeline.hierarchy,
    "simulate-modules": pipeline.simulate_modules,
}

#: Subcommand -> the arguments it takes by position, not as an option (``crl-pipe export RESULTS_DIR``).
POSITIONAL: dict[str, tuple[str, ...]] = {"export": ("results_dir",)}

#: What each argument means: ``name`` for every step, ``step.name`` where a step means something of its own.
ARGUMENT_HELP: dict[str, str] = {
    # inputs
    "path": "the raw input (h5ad, 10x folder, guide counts, table of variables, robot log)",
    "ingested": "ingested.h5ad (crl-pipe ingest)",
    "interventions": "interventions.parquet (crl-pipe label)",
    "preprocessed": "preprocessed.h5ad (crl-pipe preprocess)",
    "anchors": "anchors.parquet (crl-pipe anchors)",
    "model_dir": "the trained model's folder (crl-pipe train --out-dir)",
    "gene_sets": "GMT file of gene sets whose genes anchor the programs",
    "graph": "graph.parquet of the model",
    "targets": "targets.parquet of the model",
    "latents": "latents.parquet of the model",
    "truth": "the truth files as a YAML mapping {graph: ..., targets: ..., latents: ...} (null where absent)",
    "truth_graph": "the true graph (Parquet, CSV/TSV or Tetrad edge list)",
    "predictions": "predictions.parquet of the held-out combinations (crl-pipe predict)",
    "metrics": "YAML mapping dataset/model -> its metrics.parquet",
    "artifacts": "YAML mapping of the report's inputs: interventions, qc, anchors, models {name: folder}, "
    "baselines {name: folder}, truth_graph, guides, expression",
    "results_dir": "the dataset's results folder (results/<dataset>)",
    # outputs
    "out": "where to write the output file",
    "label.out": "where to write interventions.parquet",
    "preprocess.out": "where to write preprocessed.h5ad",
    "anchors.out": "where to write anchors.parquet",
    "evaluate.out": "where to write metrics.parquet",
    "evaluate_baseline.out": "where to write metrics.parquet",
    "predict.out": "where to write predictions.parquet",
    "steer.out": "where to write steering.parquet",
    "out_singles": "where to write held_out_singles.parquet (the held-out singles scored beside baselines)",
    "single_scores": "held_out_singles.parquet of the model (crl-pipe steer)",
    "requests": "steering requests, a YAML list such as '[{do: {P3: -2.0}}, {knockdown: {STAT1: 0.8}}]' "
    "(robot logs: '[{command: {shoulder_yaw: 0.4, frames: 60}}]')",
    "n_boot": "bootstrap refits of the latent SEM behind each interval",
    "level": "coverage of each interval (0.9: 5% to 95%)",
    "steer.hierarchy": "hierarchy.parquet of the model (crl-pipe hierarchy): requests may then name its modules",
    "steer.held_out": "the held-out labels (singles are predicted from prior knowledge and scored); robot logs: "
    "'{episodes: [3, 7]}' (their open-loop rollouts are scored beside persistence and a VAR)",
    "collect_benchmark.out": "where to write benchmark.parquet",
    "export.out": "where to write the h5ad with the model's results",
    "out_h5ad": "where to write the h5ad",
    "out_gmt": "where to write the GMT of each program's anchor genes",
    "out_truth_dir": "folder for the truth (graph, targets, latents .parquet)",
    "out_dir": "folder to write into",
    "train.out_dir": "the model's folder (model.pt, model.json, latents, targets, loadings, training)",
    "out_qc": "where to write qc.parquet",
    "out_guides": "where to write guides.parquet (the guide calls)",
    "out_parquet": "where to write graph.parquet",
    "out_graphml": "where to write graph.graphml",
    "out_meta": "where to write model.json",
    "out_html": "where to write report.html",
    # settings
    "params": "parameters as a YAML mapping",
    "simulate.params": "simulator parameters as a YAML mapping (crl_pipe.simulate.simulate_screen)",
    "simulate_robot.params": "simulator (arm or linear) and its parameters as a YAML mapping",
    "train.params": "model parameters as a YAML mapping (config models.<model>)",
    "baseline.params": "the method's parameters as a YAML mapping (config baselines.<method>)",
    "chunk_cells": "draw and write the counts in blocks of this many cells (screens too large for memory)",
    "format": "layout of the input: h5ad, guide_counts, 10x, table (screens); lerobot, rosbag, table (robot logs)",
    "options": "reader options as a YAML mapping (config datasets.<name>, the keys of the format)",
    "label.options": "labelling options of the kind as a YAML mapping, e.g. '{perturbation_key: guide, "
    "control_values: [NT], min_cells: 20}' (screen) or the robot_interventions keys (robot)",
    "preprocess.options": "preprocessing options of the kind as a YAML mapping (n_top_genes, target_sum, "
    "transform, cofactor, channel_kinds, ...)",
    "guide_calling": "how guides are called, as a YAML mapping (config datasets.<name>.guide_calling)",
    "kind": "dataset kind: screen, table or robot (crl_pipe.kinds)",
    "perturbation_key": "obs column with each cell's perturbation (auto: detect it)",
    "control_values": "labels of control cells, a YAML list such as '[non-targeting]'",
    "min_cells": "drop perturbations with fewer cells than this",
    "robot_labels": "how commands and events become interventions, as a YAML mapping (config labels.robot)",
    "target_map": "YAML mapping label token -> the variables it acts on",
    "n_top_genes": "number of highly variable genes kept (besides anchors and targets)",
    "target_sum": "counts per cell after normalisation",
    "channel_kinds": "robot channel kinds kept as variables, a YAML list",
    "transform": "transform of a table of variables: none, log, log1p or arcsinh",
    "cofactor": "arcsinh cofactor (transform: arcsinh)",
    "min_anchors": "drop programs with fewer anchor genes in the data than this",
    "exclusive": "anchor genes must belong to one program only",
    "n_programs": "number of programs learned from the data when there are no gene sets",
    "model": "model name (linear, sparse_vae, causal_vae, temporal)",
    "export.model": "the model's folder name under RESULTS_DIR",
    "seed": "random seed",
    "threads": "CPU threads for torch (null: all)",
    "require_device": "fail unless the configured device (e.g. cuda) is there",
    "held_out": "combinations left out of training, a YAML list of labels; robot logs: '{episodes: [3, 7]}'",
    "predict.held_out": "the held-out combinations to predict, a YAML list of labels",
    "n_refits": "refits on half-samples behind each edge's stability",
    "min_stability": "share of refits an edge needs to be confident",
    "min_weight_z": "resampling SEs from zero an edge's weight needs to be confident",
    "min_orientation": "share of refits with the pair that must orient an unlagged edge this way",
    "n_cells": "cells predicted per held-out combination",
    "top_n": "number of most changed genes scored",
    "method": "baseline method: pc or ges",
    "dataset": "dataset name shown in the report",
    "config": "the settings shown under 'How this was run', as a YAML mapping (dataset.kind picks the words)",
    "counts": "keep the raw counts layer (false: only the log-normalised X)",
    "hierarchy.given": "a given level 2 as a YAML mapping module -> [programs] (anchors one level up)",
    "n_resamples": "bootstrap resamples of the cells behind each membership's stability",
    "max_level": "deepest level of the concept graph learned (2: modules only; above 2 where minimality keeps it)",
    "out_hierarchy": "where to write hierarchy.parquet",
    "out_modules": "where to write modules.parquet",
    "out_module_graph": "where to write module_graph.parquet",
    "out_program_graph": "where to write graph_given_modules.parquet",
    "out_summary": "where to write hierarchy.json (candidate decompositions, identifiability, notes)",
    "evaluate.hierarchy": "the hierarchy step's outputs as a YAML mapping {hierarchy: ..., module_graph: ..., "
    "graph_given_modules: ...}",
}


def argument_help(step: str, name: str) -> str:
    """What ``name`` means to ``step`` (a function name of :mod:`crl_pipe.pipeline`); empty if unknown."""
    return ARGUMENT_HELP.get(f"{step}.{name}") or ARGUMENT_HELP.get(name, "")


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
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        return value  # a robot log's held-out episodes, {episodes: [3, 7]}
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
    parser = _Parser(prog="crl-pipe", description=_plain_text(__doc__.split("\n\n")[0]))
    parser.add_argument("--version", action="version", version=f"crl-pipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")
    for name, fn in STEPS.items():
        doc = _plain_text(inspect.getdoc(fn) or "")
        step = sub.add_parser(name, help=_first_sentence(doc), description=doc)
        for param in inspect.signature(fn).parameters.values():
            _add_argument(step, fn.__name__, param, positional=param.name in POSITIONAL.get(name, ()))
    # parsed in main(): everything after it goes to snakemake unchanged
    sub.add_parser("cluster-check", help="describe the SLURM cluster; with snakemake's arguments, check the jobs")
    return parser


def _plain_text(doc: str) -> str:
    """A docstring without its reST markup (``code`` and :func:`name` become plain words)."""
    return re.sub(r":\w+:`~?([^`]+)`", r"\1", doc).replace("``", "")


def _first_sentence(doc: str) -> str:
    """The first sentence of a docstring's first paragraph, on one line (a subcommand's line in ``--help``)."""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    end = re.search(r"(?<!e\.g)(?<!i\.e)(?<!\.)\.(\s|$)", paragraph)  # not in e.g., i.e., ...
    return paragraph[: end.start() + 1] if end else paragraph


def _add_argument(step: argparse.ArgumentParser, fn_name: str, param: inspect.Parameter, positional: bool) -> None:
    """``param`` of the step ``fn_name`` as ``--an-option`` (or a positional argument), with its meaning."""
    required = param.default is inspect.Parameter.empty
    default = None if required else param.default
    text = argument_help(fn_name, param.name)
    convert = _converter(param.annotation)
    if positional:
        step.add_argument(param.name, type=convert, metavar=param.name.upper(), help=text)
        return
    step.add_argument(
        "--" + param.name.replace("_", "-"),
        dest=param.name,
        type=convert,
        required=required,
        default=default,
        help=f"{text} ({'required' if required else f'default: {default!r}'})" if text else None,
    )


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
