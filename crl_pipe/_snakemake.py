"""Run one pipeline step inside a Snakemake job (the adapters in ``workflow/scripts`` call this).

:func:`run_step` sends the ``crl_pipe`` logger and everything written to stderr (warnings,
progress bars, C libraries) to the rule's log file, calls the step, and turns a
:class:`~crl_pipe.CrlPipeError` into one line, in the log and on the terminal, and exit status 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from ._errors import CrlPipeError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log = logging.getLogger("crl_pipe")


def run_step(smk: Any, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call ``fn(**kwargs)`` for the Snakemake job ``smk``, logging to ``smk.log[0]``.

    Parameters
    ----------
    smk
        The ``snakemake`` object of a ``script:`` job (``rule``, ``log`` are used).
    fn
        The step, one of :mod:`crl_pipe.pipeline`'s functions.
    **kwargs
        Its arguments, usually taken from ``smk.input``, ``smk.output`` and ``smk.params``.

    A :class:`~crl_pipe.CrlPipeError` ends the process with status 1 and the one-line message
    ``crl-pipe error in rule <rule>: <message>`` in the log and on stderr, without a traceback;
    any other exception is logged with its traceback and raised again.
    """
    log_path = smk.log[0] if len(smk.log) else None
    with _output_to(log_path) as terminal:
        log.info("rule %s: %s.%s(%s)", smk.rule, fn.__module__, fn.__name__, _describe(kwargs))
        start = time.perf_counter()
        try:
            result = fn(**kwargs)
        except CrlPipeError as err:
            message = f"crl-pipe error in rule {smk.rule}: " + " ".join(str(err).splitlines())
            log.error("%s", message)
            if terminal is not None:
                print(message, file=terminal, flush=True)
            sys.exit(1)
        except Exception:
            log.exception("rule %s failed with an unexpected error", smk.rule)
            raise
        log.info("rule %s: done in %.1f s", smk.rule, time.perf_counter() - start)
        return result


def _describe(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


@contextlib.contextmanager
def _output_to(log_path: str | None) -> Iterator[IO[str] | None]:
    """Route the crl_pipe logger and file descriptor 2 to ``log_path``; yield the real stderr.

    Without a log file, logging goes to stderr and the yielded terminal is ``None`` (messages
    already reach it through the logger).
    """
    previous_level = log.level
    log.setLevel(logging.INFO)
    if log_path is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)
        try:
            yield None
        finally:
            log.removeHandler(handler)
            log.setLevel(previous_level)
        return

    sys.stderr.flush()
    saved_fd = os.dup(2)
    terminal = os.fdopen(saved_fd, "w", buffering=1)
    log_file = open(log_path, "a", buffering=1)  # noqa: SIM115 (closed below)
    os.dup2(log_file.fileno(), 2)  # stderr of C libraries and subprocesses
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    log.addHandler(handler)
    try:
        with contextlib.redirect_stderr(log_file):  # Python's, even where sys.stderr was replaced
            yield terminal
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
        log_file.flush()
        os.dup2(saved_fd, 2)
        log_file.close()
        terminal.close()
