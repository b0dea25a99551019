"""Error hierarchy: every message names the file, the field and what was expected."""

from __future__ import annotations


class CrlPipeError(Exception):
    """Base class of every error crl-pipe raises on purpose (the CLI prints only the message)."""


class InputError(CrlPipeError, ValueError):
    """An input file or table is missing, malformed or does not hold what a stage needs."""


class ConfigError(CrlPipeError, ValueError):
    """The workflow configuration is invalid."""


class ModelError(CrlPipeError, RuntimeError):
    """A model cannot be fit on the data it was given."""


class ClusterError(CrlPipeError, RuntimeError):
    """The SLURM cluster cannot be read (``scontrol`` missing or failing)."""
