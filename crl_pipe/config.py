"""Validate a workflow configuration against its JSON schema, with one-line errors naming the key.

``rules/common.smk`` calls :func:`validate_config` before anything runs, so the workflow and
the tests share one code path. It does what ``snakemake.utils.validate(config, schema,
set_default=True)`` does (JSON Schema 2020-12, ``$ref`` resolved against the schema file, defaults
filled in while validating, the first error reported) and turns that error into one line such as
``config: datasets.demo: unknown key 'modles' (did you mean 'models'?); allowed keys: ...``.

Only ``jsonschema``, ``referencing`` and ``pyyaml`` are imported (Snakemake's own dependencies),
so the Snakemake process can import this module without the scientific stack.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators
from referencing import Registry, Resource

from ._errors import ConfigError

__all__ = [
    "PREDICTING_MODELS",
    "TORCH_MODELS",
    "config_error_message",
    "load_schema",
    "model_device",
    "validate_config",
]

#: Models that train with PyTorch on ``device`` (the others are numpy/scipy and ignore it). Kept
#: here, free of torch, for the Snakemake process; tests check it against the model classes.
TORCH_MODELS = ("sparse_vae", "causal_vae", "camera")
#: Models that generate cells (``predict``), so that held-out combinations can be scored; tests
#: check it against the model classes too.
PREDICTING_MODELS = ("causal_vae",)


def model_device(config: MutableMapping[str, Any], model: str) -> str | None:
    """The device ``model`` trains on under ``config`` (per-model key first, then the top-level
    ``device``); ``None`` for models that do not use PyTorch."""
    if model not in TORCH_MODELS:
        return None
    return str(config.get("models", {}).get(model, {}).get("device") or config.get("device", "auto"))


def validate_config(
    config: MutableMapping[str, Any], schema_path: str | os.PathLike, *, set_default: bool = True
) -> MutableMapping[str, Any]:
    """Check ``config`` against the schema at ``schema_path``; fill in defaults (in place).

    Parameters
    ----------
    config
        The configuration mapping (as Snakemake loads it from YAML).
    schema_path
        The JSON schema, in YAML or JSON (``workflow/schemas/config.schema.yaml``).
    set_default
        Fill in each key's ``default`` where the config leaves it out, as Snakemake does.

    Returns
    -------
    ``config`` itself, with defaults filled in.

    Raises
    ------
    ConfigError
        The first violation, as one line that names the key path (see :func:`config_error_message`).
    """
    path = Path(schema_path).resolve()
    try:
        stat = path.stat()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config schema ({err.strerror})") from None
    schema, registry = _cached_schema(str(path), stat.st_mtime_ns, stat.st_size)
    cls = _with_defaults(Draft202012Validator) if set_default else Draft202012Validator
    error = next(iter(cls(schema, registry=registry).iter_errors(config)), None)
    if error is not None:
        raise ConfigError(config_error_message(error))
    return config


@functools.lru_cache(maxsize=8)
def _cached_schema(path: str, mtime_ns: int, size: int) -> tuple[dict[str, Any], Registry]:
    """:func:`load_schema`, read again only when the file changes (validation never modifies it)."""
    return load_schema(path)


def load_schema(schema_path: str | os.PathLike) -> tuple[dict[str, Any], Registry]:
    """The schema and a registry that resolves relative ``$ref`` against the schema file."""
    path = Path(schema_path).resolve()
    try:
        schema = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read the config schema ({' '.join(str(err).split())})") from None
    if not isinstance(schema, dict):
        raise ConfigError(f"{path}: the config schema is not a mapping")
    schema["$id"] = path.as_uri()

    def retrieve(uri: str) -> Resource:
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return Resource.from_contents(
            yaml.safe_load(Path(url2pathname(urlparse(uri).path)).read_text(encoding="utf-8"))
        )

    registry = Registry(retrieve=retrieve).with_resource(uri=path.as_uri(), resource=Resource.from_contents(schema))
    return schema, registry


def config_error_message(error: jsonschema.ValidationError) -> str:
    """One line naming the key path of a config ``jsonschema.ValidationError``."""
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error.absolute_path).lstrip(".")
    prefix = f"config: {where}: " if where else "config: "
    if "propertyNames" in error.relative_schema_path:
        return (
            f"{prefix}name {error.instance!r} is not allowed: use letters, digits, '_', '-' "
            "and '.', not starting with '.'"
        )
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted((key for key in error.instance if key not in known), key=str)
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            parts.append(f"unknown key {key!r}{hint}")
        return f"{prefix}{'; '.join(parts)}; allowed keys: {', '.join(known)}"
    return prefix + error.message


def _with_defaults(validator_class: type) -> type:
    """A validator class that fills in ``default`` values while checking ``properties``."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, MutableMapping):
            for name, subschema in properties.items():
                if isinstance(subschema, dict) and "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])  # never share the schema's objects
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})
