"""Labels that several layers share (``io``, ``pp``, ``pl``, ``simulate``), defined once, at the bottom."""

from __future__ import annotations

#: Target of control guides, the perturbation label of cells that carry only control guides, and the
#: label of the control cells of simulated screens.
CONTROL_TARGET = "non-targeting"

#: Default edge of the square frames a robot camera is downscaled to at ingest (pixels); the config's
#: ``datasets.<name>.frame_size`` default, shared by the readers and the robot kind's config side.
FRAME_SIZE = 64

#: Share of the perturbations' untargeted mean shifts that a model's graph equations may leave
#: unexplained before the report warns that its graph is not to be trusted (``equation_misfit`` in
#: ``model.json``; :func:`crl_pipe.models._shift_sem.equation_misfit`). On 22 simulated dense screens
#: ``linear`` left at most 1.3 % where its SHD was 0 or 1 and at least 2.7 % where it was 4 or more
#: (docs/benchmarks.md, "Fifth round").
MISFIT_WARNING = 0.025

#: A cell counts as *starved* when its stable genes (those that size it: no program drives them) hold
#: this many counts or fewer: programs have taken over nearly its whole library, so it says little
#: about the programs that lost their counts (``starved_cells`` in a ``linear`` fit's ``model.json``).
STARVED_COUNTS = 5
#: Share of starved cells above which the report warns that the graph is a sketch. On 50 simulated
#: screens the five with a share of 0.44 or more were the five where ``linear`` missed the graph by 12
#: edges or more; up to 0.33 it missed by 8 or fewer (docs/benchmarks.md, "Ninth round").
STARVED_WARNING = 0.4
