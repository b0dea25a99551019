"""Where the workplace's small real data sets are: ``../shared/data`` beside the checkout, else the
workplace's fixed path (for a clone elsewhere, e.g. in /tmp). Tests that need one skip without it."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_PLACES = (REPO.parent / "shared" / "data", Path("/work/shared/data"))
SHARED_DATA = next((d for d in _PLACES if d.is_dir()), _PLACES[0])
