"""One perturbation label -> the genes it targets (the token grammar every label convention shares)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

#: Tokens that mean "no gene targeted", compared case-insensitively (pertpy, GEARS, Norman 2019, CROP-seq usage).
CONTROL_TOKENS = frozenset({"ctrl", "control", "non-targeting", "nontargeting", "nt", "safe-targeting"})
#: Separators between the genes of a combinatorial label: GEARS ``A+B``, Norman ``A,B``, Cell Ranger ``A|B``.
SEPARATORS = re.compile(r"[+,|;]")


def parse_perturbation(label: object, control_values: Sequence[str] = ()) -> tuple[str, ...] | None:
    """Genes targeted by one perturbation label.

    The label is split on ``+``, ``,``, ``|`` and ``;``; control tokens (``ctrl``, ``control``,
    ``non-targeting``, ``nontargeting``, ``nt``, ``safe-targeting`` and ``control_values``,
    case-insensitive) are dropped, so ``"GENE+ctrl"`` gives ``("GENE",)``.

    Parameters
    ----------
    label
        One value of the perturbation column.
    control_values
        Extra labels (or tokens) that mark control cells, e.g. ``["NTC"]``.

    Returns
    -------
    Sorted unique target genes; ``()`` for a control cell; ``None`` for an unlabelled cell (missing
    value, or a label with no token at all, such as ``""`` or ``"+"``).
    """
    if label is None or (not isinstance(label, str) and pd.isna(label)):
        return None
    text = str(label).strip()
    if isinstance(control_values, str):  # one label, not its characters
        control_values = [control_values]
    controls = CONTROL_TOKENS | {str(c).strip().casefold() for c in control_values}
    if text.casefold() in controls:
        return ()
    tokens = [t.strip() for t in SEPARATORS.split(text) if t.strip()]
    if not tokens:
        return None
    return tuple(sorted({t for t in tokens if t.casefold() not in controls}))
