"""Property-based tests (hypothesis) of the label parser and of config validation.

``tests/test_pp.py`` checks order invariance, idempotence and vanishing control tokens on
gene-like names; here the names are arbitrary unicode, and the config properties run the very
function ``rules/common.smk`` calls (:func:`crl_pipe.config.validate_config`) on mutations of the
demo config, walking the schema so that new keys are covered as they are added.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crl_pipe import ConfigError
from crl_pipe.config import load_schema, validate_config
from crl_pipe.io import read_table, write_table
from crl_pipe.pp import CONTROL_TOKENS, label_interventions, parse_perturbation

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
SEPARATORS = "+,|;"

# ---- the label parser -----------------------------------------------------------------------------
#: Any unicode text without separators, stripped, non-empty, and not a control token.
gene = (
    st.text(st.characters(blacklist_characters=SEPARATORS, blacklist_categories=("Cs",)), min_size=1, max_size=12)
    .map(str.strip)
    .filter(lambda g: g != "" and g.casefold() not in CONTROL_TOKENS)
)
separator = st.sampled_from(["+", ",", "|", ";", " + ", "\t;", ",\u00a0"])
any_label = st.text(max_size=40)
control_lists = st.lists(st.text(max_size=10), max_size=4)


def _folded_controls(control_values) -> set[str]:
    return set(CONTROL_TOKENS) | {str(c).strip().casefold() for c in control_values}


@given(st.lists(gene, min_size=1, max_size=5), separator)
def test_unicode_gene_names_round_trip(genes, sep):
    """Joining any unicode names with any separator and parsing gives back exactly those names."""
    assert parse_perturbation(sep.join(genes)) == tuple(sorted(set(genes)))
    # ...and the label the pipeline writes ("+".join of the targets) parses to the same targets.
    assert parse_perturbation("+".join(parse_perturbation(sep.join(genes)))) == tuple(sorted(set(genes)))


@given(any_label, control_lists)
def test_targets_never_hold_separators_padding_or_control_tokens(label, control_values):
    result = parse_perturbation(label, control_values)
    assert result is None or isinstance(result, tuple)
    if not result:
        return
    controls = _folded_controls(control_values)
    assert list(result) == sorted(set(result)), "targets are sorted and unique"
    for target in result:
        assert target and target == target.strip()
        assert not set(target) & set(SEPARATORS), f"separator in target {target!r}"
        assert target.casefold() not in controls, f"control token {target!r} taken as a target"


@given(any_label, control_lists)
def test_unlabelled_only_when_the_label_has_no_token(label, control_values):
    tokens = [t.strip() for t in re.split(r"[+,|;]", label) if t.strip()]
    result = parse_perturbation(label, control_values)
    if label.strip().casefold() in _folded_controls(control_values):
        assert result == ()
    elif not tokens:
        assert result is None
    else:
        assert result is not None
        assert set(result) == {t for t in tokens if t.casefold() not in _folded_controls(control_values)}


@given(st.text(min_size=1, max_size=20).filter(lambda c: c.strip() != ""), st.sampled_from(["", " ", "\t"]))
def test_a_control_value_marks_the_whole_label_as_control(control, pad):
    assert parse_perturbation(pad + control + pad, [control]) == ()
    assert parse_perturbation(control, control) == (), "one control value, not its characters"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(gene, min_size=1, max_size=3), min_size=1, max_size=6), st.integers(1, 3))
def test_interventions_table_is_consistent_and_survives_parquet(perturbations, n_each):
    """Arbitrary unicode labels: the table is self-consistent and Parquet keeps every string exactly."""
    labels = ["control"] * 2 + ["+".join(p) for p in perturbations for _ in range(n_each)]
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    adata = ad.AnnData(X=sp.csr_matrix((len(labels), 1), dtype=np.float32), obs=obs)
    table = label_interventions(adata, perturbation_key="perturbation", control_values=[])
    assert (table["is_control"] == (table["n_targets"] == 0)).all()
    assert (table["n_targets"] == table["targets"].map(len)).all()
    for row in table.itertuples(index=False):
        if not row.is_control:
            assert row.intervention == "+".join(row.targets)
            assert parse_perturbation(row.intervention) == tuple(row.targets)
    with tempfile.TemporaryDirectory() as tmp:
        back = read_table(write_table(table, Path(tmp) / "iv.parquet", "interventions"), "interventions")
    assert back["intervention"].tolist() == table["intervention"].tolist()
    assert [list(t) for t in back["targets"]] == [list(t) for t in table["targets"]]


# ---- config validation ----------------------------------------------------------------------------
SCHEMA, _ = load_schema(SCHEMA_PATH)
DEMO = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _resolve(schema: dict) -> dict:
    """Follow local ``$ref``s (``#/$defs/name``), keeping keywords written beside them."""
    while isinstance(schema, dict) and "$ref" in schema:
        target: Any = SCHEMA
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branch(schema: dict, node: Any) -> dict:
    """The ``then`` or ``else`` schema that applies to ``node`` where an object is only an if/then/else
    (simulations: a screen or a robot)."""
    if "properties" in schema or "if" not in schema:
        return schema
    from jsonschema import Draft202012Validator

    chosen = schema.get("then" if Draft202012Validator(schema["if"]).is_valid(node) else "else", {})
    return _resolve(chosen)


def _conditional_keys(schema: dict) -> set[str]:
    """Keys whose valid values depend on their siblings (named in if/then/else, allOf, dependencies)."""
    keys: set[str] = set(schema.get("dependentRequired", {})) | set(schema.get("dependentSchemas", {}))
    parts = [schema.get(k, {}) for k in ("if", "then", "else")]
    parts += [p for k in ("allOf", "anyOf", "oneOf") for p in schema.get(k, [])]
    for part in parts:
        if isinstance(part, dict):
            keys |= set(part.get("properties", {})) | set(part.get("required", []))
    return keys


def _walk(node: Any, schema: dict, path: tuple, closed: list, leaves: list, conditional: bool = False) -> None:
    """Collect the closed objects (unknown keys are errors there) and every value's (path, schema)."""
    schema = _branch(_resolve(schema), node)
    if path:
        leaves.append((path, schema, conditional))
    if not isinstance(node, dict):
        return
    if "properties" in schema and schema.get("additionalProperties") is False:
        closed.append((path, schema))
        depends = _conditional_keys(schema)
        for key, child in node.items():
            if key in schema["properties"]:
                _walk(child, schema["properties"][key], (*path, key), closed, leaves, key in depends)
    elif isinstance(schema.get("additionalProperties"), dict):  # named entries: datasets, simulations
        for key, child in node.items():
            _walk(child, schema["additionalProperties"], (*path, key), closed, leaves)


FILLED = validate_config(copy.deepcopy(DEMO), SCHEMA_PATH)
CLOSED: list[tuple[tuple, dict]] = []
NODES: list[tuple[tuple, dict]] = []
_walk(FILLED, SCHEMA, (), CLOSED, NODES)


def _dotted(path: tuple) -> str:
    return ".".join(map(str, path))


def _prefix(path: tuple) -> str:
    return f"config: {_dotted(path)}: " if path else "config: "


def _get(config: dict, path: tuple) -> Any:
    for key in path:
        config = config[key]
    return config


def _set(config: dict, path: tuple, value: Any) -> dict:
    _get(config, path[:-1])[path[-1]] = value
    return config


def test_the_walk_sees_the_whole_demo_config():
    assert len(VALID) >= 20, [_dotted(p) for p, _, _ in VALID]
    assert {_dotted(p) for p, _ in CLOSED} >= {
        "",
        "labels",
        "graph",
        "datasets.demo",
        "datasets.demo.truth",
        "models.linear",
        "simulations.demo",
    }
    assert {_dotted(p) for p, _, _ in NODES} >= {
        "seed",
        "labels.min_cells",
        "datasets.demo.control_values",
        "simulations.demo.mixing",
        "anchors.exclusive",
    }


# -- unknown keys at any depth
@settings(deadline=None)
@given(st.sampled_from(CLOSED), st.one_of(st.text(min_size=1, max_size=15), st.integers()), st.data())
def test_unknown_key_at_any_depth_is_rejected_naming_it(where, key, data):
    path, schema = where
    assume(key not in schema["properties"])
    value = data.draw(st.sampled_from([1, "x", None, [1], {"a": 1}, True]))
    config = copy.deepcopy(DEMO if path == () else FILLED)
    target = config if path == () else _get(config, path)
    target[key] = value
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA_PATH)
    message = str(info.value)
    assert message.startswith(_prefix(path)), message
    assert f"unknown key {key!r}" in message
    assert "\n" not in message


# -- wrong types anywhere
_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_SAMPLES = ["text", "", 7, -3, 2.5, True, False, None, [], ["a", 1], {}, {"k": "v"}]


def _allowed(schema: dict, value: Any) -> bool:
    """Whether ``value``'s JSON type is one ``schema`` allows (ignoring ranges and patterns)."""
    if "enum" in schema:
        return any(value == e and type(value) is type(e) for e in schema["enum"])
    types = schema.get("type")
    if types is None:
        return True
    types = [types] if isinstance(types, str) else types
    return any(_JSON_TYPES[t](value) for t in types)


TYPED = [(p, s) for p, s, _ in NODES if "type" in s or "enum" in s]


@settings(deadline=None)
@given(st.sampled_from(TYPED), st.sampled_from(_SAMPLES))
def test_wrong_type_is_rejected_naming_the_key(where, value):
    path, schema = where
    assume(not _allowed(schema, value))
    config = _set(copy.deepcopy(FILLED), path, copy.deepcopy(value))
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA_PATH)
    message = str(info.value)
    assert message.startswith(_prefix(path)), message
    assert "\n" not in message


# -- valid values are accepted and kept
def _valid(schema: dict) -> st.SearchStrategy | None:
    """Values the schema accepts, or None where this generator does not know the keyword."""
    if any(k in schema for k in ("oneOf", "anyOf", "allOf", "not", "if")):
        return None
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(10**6) - 1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 10**6 + 1) - 1)
        return st.integers(low, high)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1e6))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 1e6))
        floats = st.floats(
            low,
            high,
            allow_nan=False,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
        )
        return floats | st.integers(int(np.ceil(low)) + 1, int(np.floor(high)) - 1) if high - low > 2 else floats
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=20)
    if kind == "array":
        items = _resolve(schema.get("items", {}))
        item = _valid(items)
        if item is None:
            return None
        unique = bool(schema.get("uniqueItems"))
        low = schema.get("minItems", 0)
        high = min(schema.get("maxItems", low + 4), len(items["enum"]) if "enum" in items else low + 4)
        return st.lists(item, min_size=low, max_size=high, unique=unique)
    return None


#: Values whose validity does not hang on a sibling (e.g. ``format`` on ``kind``), with a strategy.
VALID = [(p, s, _valid(s)) for p, s, conditional in NODES if not conditional and _valid(s) is not None]


@settings(deadline=None)
@given(st.sampled_from(VALID), st.data())
def test_valid_values_are_accepted_and_kept(where, data):
    path, _, strategy = where
    value = data.draw(strategy)
    config = _set(copy.deepcopy(FILLED), path, copy.deepcopy(value))
    validated = validate_config(config, SCHEMA_PATH)
    assert _get(validated, path) == value


def test_validation_fills_defaults_and_is_idempotent():
    once = validate_config(copy.deepcopy(DEMO), SCHEMA_PATH)
    assert once["labels"]["min_cells"] == 20 and "linear" in once["models"]
    assert validate_config(copy.deepcopy(once), SCHEMA_PATH) == once
