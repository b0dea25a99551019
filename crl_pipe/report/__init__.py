"""The self-contained HTML report of one dataset across its models.

:func:`write_report` reads the stage artifacts, draws the figures with :mod:`crl_pipe.pl`,
embeds them as PNG data URIs and renders ``templates/report.html.j2`` with autoescaping, so the
file opens anywhere without a network and no name from the data can inject markup.
"""

from __future__ import annotations

from ._html import SECTIONS, render_report, write_report

__all__ = ["SECTIONS", "render_report", "write_report"]
