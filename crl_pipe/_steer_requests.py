"""Steering requests in plain terms, parsed and checked without the scientific stack.

A request is a mapping with one or more actions (several = a combination) and an optional name::

    {"do": {"P3": -2.0}}                 # set program P3 to -2 control SDs, cutting its incoming edges
    {"shift": {"P3": -1.0}}              # add -1 control SD to P3's own noise; its parents still act
    {"knockdown": {"STAT1": 0.8}}        # remove 80% of STAT1, through the program(s) it acts on
    {"name": "both", "do": {"P1": 1.0}, "knockdown": {"REG4": 0.5}}
    {"command": {"shoulder_yaw": 0.4, "frames": 60}}   # robots: hold a command channel at 0.4 for 60 frames

A ``command`` request (robot logs, models that roll out: ``temporal``) sets one or more command
channels to a value (command units, e.g. rad) for ``frames`` frames (default
:data:`DEFAULT_COMMAND_FRAMES`) and stands alone: it does not combine with program actions.

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
ACTIONS = ("do", "shift", "knockdown", "command")
_KEYS = (*ACTIONS, "name")
#: Frames a ``command`` request holds its value when it does not say (1 s at 30 fps).
DEFAULT_COMMAND_FRAMES = 30


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
    command
        Robot command channel -> the value it is held at (command units), from the rollout's first
        predicted frame on, for ``frames`` frames.
    frames
        How long the ``command`` is held (frames; 0 without a command).
    """

    name: str
    do: dict[str, float] = field(default_factory=dict)
    shift: dict[str, float] = field(default_factory=dict)
    knockdown: dict[str, float] = field(default_factory=dict)
    command: dict[str, float] = field(default_factory=dict)
    frames: int = 0

    @property
    def programs(self) -> list[str]:
        """Programs the request names directly (set or shifted)."""
        return [*self.do, *self.shift]


def request_name(actions: Mapping[str, Mapping[str, float]], frames: int = 0) -> str:
    """The default name of a request: ``do(P3=-2)+knockdown(STAT1=0.8)``, ``command(shoulder_yaw=0.4,frames=60)``."""
    parts = []
    for action in ACTIONS:
        values = [f"{key}={value:g}" for key, value in (actions.get(action) or {}).items()]
        if action == "command" and values:
            parts.append(f"command({','.join([*values, f'frames={frames}'])})")
        else:
            parts += [f"{action}({v})" for v in values]
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
        frames = _command_frames(actions, at) if "command" in actions else 0
        for gene, fraction in actions.get("knockdown", {}).items():
            if not 0.0 < fraction <= 1.0:
                raise ConfigError(f"{at}.knockdown.{gene}: fraction {fraction:g} outside (0, 1]; 0.8 = 80% removed")
        both = set(actions.get("do", {})) & set(actions.get("shift", {}))
        if both:
            raise ConfigError(f"{at}: program {sorted(both)[0]!r} is both set (do) and shifted; expected one of them")
        name = str(item.get("name") or request_name(actions, frames))
        if any(r.name == name for r in requests):
            raise ConfigError(f"{at}: a second request named {name!r}; expected unique names")
        requests.append(SteerRequest(name, **actions, frames=frames))
    return requests


def _command_frames(actions: dict[str, dict[str, float]], at: str) -> int:
    """Pop and check the ``frames`` of a ``command`` action; a command combined with program actions is an error."""
    others = [a for a in actions if a != "command"]
    if others:
        raise ConfigError(f"{at}: command combined with {others[0]!r}; expected a command request on its own (robots)")
    frames = actions["command"].pop("frames", DEFAULT_COMMAND_FRAMES)
    if frames != int(frames) or frames < 1:
        raise ConfigError(f"{at}.command.frames: {frames:g}; expected a whole number of frames >= 1")
    if not actions["command"]:
        raise ConfigError(f"{at}.command: no channel; expected e.g. {{shoulder_yaw: 0.4, frames: 60}}")
    return int(frames)


def command_channels(
    requests: Iterable[SteerRequest], *, commands: Sequence[str], where: str = "steer"
) -> dict[str, str]:
    """Map each channel the requests command onto the data's command channel (``shoulder_yaw`` or
    ``action.shoulder_yaw`` -> ``action.shoulder_yaw``); a channel that is not commanded in the data
    (or a program action sent to a robot model) is a one-line :class:`ConfigError` listing what exists."""
    commands = list(commands)
    short = {c.removeprefix("action."): c for c in commands}
    out = {}
    for request in requests:
        if not request.command:
            raise ConfigError(
                f"{where} {request.name!r}: a robot model answers command requests only, "
                f"e.g. {{command: {{{next(iter(short), 'joint')}: 0.4, frames: 60}}}}"
            )
        for channel in request.command:
            found = channel if channel in commands else short.get(channel)
            if found is None:
                close = difflib.get_close_matches(channel, list(short), n=3)
                hint = f" (close: {', '.join(close)})" if close else ""
                raise ConfigError(
                    f"{where} {request.name!r}: no command channel {channel!r}{hint}; "
                    f"expected one of {_shown(list(short))}"
                )
            out[channel] = found
    return out


def check_names(
    requests: Iterable[SteerRequest],
    *,
    programs: Sequence[str],
    genes: Iterable[str] | None,
    modules: Sequence[str] | None = None,
    where: str = "steer",
) -> None:
    """Every program a request sets or shifts is one of ``programs`` (or a module of ``modules``), every gene
    it knocks down one of ``genes``.

    ``genes``: the genes a knockdown can reach (measured features, trained perturbation targets, gene-set
    members); None: not checked. ``modules``: the modules of the dataset's concept hierarchy; None: the
    dataset has none (a module named then is an error that says so). A miss is a one-line
    :class:`ConfigError` naming the request and what exists.
    """
    programs = list(programs)
    known = programs + list(modules or [])
    genes = None if genes is None else set(genes)
    for request in requests:
        if request.command:
            raise ConfigError(
                f"{where} {request.name!r}: a command request needs a robot model that rolls out (temporal); "
                f"expected do, shift or knockdown of programs ({_shown(programs)})"
            )
        for program in request.programs:
            if program not in known:
                extra = (
                    " (a module needs the dataset's concept hierarchy, datasets.<name>.hierarchy, which it has not)"
                    if modules is None
                    else f" or a module ({_shown(list(modules))})"
                )
                raise ConfigError(
                    f"{where} {request.name!r}: no program {program!r}; expected one of {_shown(programs)}{extra}"
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
