"""The self-contained HTML report of one dataset across its models.

:meth:`ReportInputs.from_paths` reads the stage artifacts once; each section of the page is a
function of that one object (``crl_pipe/report/sections/``, one module per section) that draws
its figures with :mod:`crl_pipe.pl` and returns tables and PNG data URIs; :func:`write_report`
renders them with ``templates/report.html.j2`` (autoescaping on), so the file opens anywhere
without a network and no name from the data can inject markup.
"""

from __future__ import annotations

from ._inputs import ARTIFACTS, ModelArtifacts, ReportInputs, vocabulary_of
from ._page import PAGE, SECTIONS, Section, render_report, write_report

__all__ = [
    "ARTIFACTS",
    "PAGE",
    "SECTIONS",
    "ModelArtifacts",
    "ReportInputs",
    "Section",
    "render_report",
    "vocabulary_of",
    "write_report",
]
