"""Steering requests in plain terms, parsed and checked without the scientific stack.

A request is a mapping with one or more actions (several = a combination) and an optional name::

    {"do": {"P3": -2.0}}                 # set program P3 to -2 control SDs, cutting its incoming edges
    {"shift": {"P3": -1.0}}              # add -1 control SD to P3's own noise; its parents still act
    {"knockdown": {"STAT1": 0.8}}        # remove 80% of STAT1, through the program(s) it acts on
    {"name": "both", "do": {"P1": 1.0}, "knockdown": {"REG4": 0.5}}

The Snakemake process checks the requests of the config with these functions (no numpy, no torch),
and so does :func:`crl_pipe.tl.steer` before it computes anything.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._errors import ConfigError

#: The actions a request may hold, in the order they are applied and named.
ACTIONS = ("do", "shift", "knockdown")
_KEYS = (*ACTIONS, "name")


@dataclass(frozen=True)
class SteerRequest:
    """One steering request: programs set (``do``) or shifted (``shift``), genes knocked down.

    Attributes
    ----------
    name
        How the request is named in ``steering.parquet`` (given, or built from its actions).
    do
        Program -> the value it is set to, in control standard deviations from the control mean.
    shift
        Program -> the shift of its exogenous noise, in control standard deviations.
    knockdown
        Gene -> the fraction of its expression removed, in (0, 1].
    """

    name: str
    do: dict[str, float] = field(default_factory=dict)
    shift: dict[str, float] = field(default_factory=dict)
    knockdown: dict[str, float] = field(default_factory=dict)

    @property
    def programs(self) -> list[str]:
        """Programs the request names directly (set or shifted)."""
        return [*self.do, *self.shift]


def request_name(actions: Mapping[str, Mapping[str, float]]) -> str:
    """The default name of a request: ``do(P3=-2)+knockdown(STAT1=0.8)``."""
    parts = []
    for action in ACTIONS:
        for key, value in (actions.get(action) or {}).items():
            parts.append(f"{action}({key}={value:g})")
    return "+".join(parts)


def parse_requests(raw: Sequence[Mapping] | Mapping, *, where: str = "steer") -> list[SteerRequest]:
    """Turn the config's (or a caller's) request mappings into :class:`SteerRequest` objects.

    A single mapping is one request. Each must hold at least one action with a non-empty mapping of
    names to finite numbers; knockdown fractions lie in (0, 1]; names are unique. Anything else is
    a one-line :class:`ConfigError` naming the request (``where``: the config key).
    """
    raw = [raw] if isinstance(raw, Mapping) else list(raw)
    requests: list[SteerRequest] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{at}: expected a mapping such as {{do: {{P3: -2.0}}}}, got {item!r}")
        unknown = [k for k in item if k not in _KEYS]
        if unknown:
            hint = difflib.get_close_matches(str(unknown[0]).lower(), _KEYS, n=1, cutoff=0.5)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{at}: unknown key {unknown[0]!r}{extra}; expected some of {list(_KEYS)}")
        actions = {a: _numbers(item[a], f"{at}.{a}") for a in ACTIONS if a in item}
        if not any(actions.values()):
            raise ConfigError(f"{at}: no action; expected at least one of {list(ACTIONS)}")
        for gene, fraction in actions.get("knockdown", {}).items():
            if not 0.0 < fraction <= 1.0:
                raise ConfigError(f"{at}.knockdown.{gene}: fraction {fraction:g} outside (0, 1]; 0.8 = 80% removed")
        both = set(actions.get("do", {})) & set(actions.get("shift", {}))
        if both:
            raise ConfigError(f"{at}: program {sorted(both)[0]!r} is both set (do) and shifted; expected one of them")
        name = str(item.get("name") or request_name(actions))
        if any(r.name == name for r in requests):
            raise ConfigError(f"{at}: a second request named {name!r}; expected unique names")
        requests.append(SteerRequest(name, **actions))
    return requests


def check_names(
    requests: Iterable[SteerRequest], *, programs: Sequence[str], genes: Iterable[str] | None, where: str = "steer"
) -> None:
    """Every program a request sets or shifts is one of ``programs``, every gene it knocks down one of ``genes``.

    ``genes``: the genes a knockdown can reach (measured features, trained perturbation targets, gene-set
    members); None: not checked. A miss is a one-line :class:`ConfigError` naming the request and what exists.
    """
    programs = list(programs)
    genes = None if genes is None else set(genes)
    for request in requests:
        for program in request.programs:
            if program not in programs:
                raise ConfigError(
                    f"{where} {request.name!r}: no program {program!r}; expected one of {_shown(programs)}"
                )
        for gene in request.knockdown if genes is not None else ():
            if gene not in genes:
                close = difflib.get_close_matches(gene, sorted(genes), n=3)
                hint = f"close: {', '.join(close)}" if close else f"{len(genes)} genes, e.g. {_shown(sorted(genes))}"
                raise ConfigError(
                    f"{where} {request.name!r}: gene {gene!r} is neither measured, perturbed in training nor in a "
                    f"gene set ({hint})"
                )


def gmt_programs(path: str) -> list[str]:
    """The gene-set names of a GMT file (first field of each line), read without the scientific stack."""
    with open(path, encoding="utf-8") as handle:
        return [line.split("\t", 1)[0].strip() for line in handle if line.strip()]


def _numbers(value, at: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{at}: expected a mapping of names to numbers, got {value!r}")
    out = {}
    for key, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise ConfigError(f"{at}.{key}: expected a finite number, got {number!r}")
        out[str(key)] = float(number)
    return out


def _shown(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" ... ({len(names)} in all)" if len(names) > n else "") if names else "none"
