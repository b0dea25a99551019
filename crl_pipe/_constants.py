"""Labels that several layers share (``io``, ``pp``, ``pl``, ``simulate``), defined once, at the bottom."""

from __future__ import annotations

#: Target of control guides, the perturbation label of cells that carry only control guides, and the
#: label of the control cells of simulated screens.
CONTROL_TARGET = "non-targeting"

#: Default edge of the square frames a robot camera is downscaled to at ingest (pixels); the config's
#: ``datasets.<name>.frame_size`` default, shared by the readers and the robot kind's config side.
FRAME_SIZE = 64
