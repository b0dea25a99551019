"""Simulators with known causes: Perturb-seq screens over a latent causal graph, robot logs with commanded joints."""

from __future__ import annotations

from ._data import screen_to_crl_data
from ._robot import (
    ARM_EDGES,
    ARM_JOINTS,
    ARM_LIMBS,
    SimulatedRobot,
    add_extra_channels,
    arm_limb_truth,
    arm_rollout,
    limb_truth,
    simulate_arm,
    simulate_robot,
    write_limb_truth,
    write_robot_simulation,
)
from ._screen import CONTROL_LABEL, SimulatedScreen, simulate_screen, simulate_screen_chunks
from ._write import write_module_truth, write_simulation

__all__ = [
    "ARM_EDGES",
    "ARM_JOINTS",
    "ARM_LIMBS",
    "CONTROL_LABEL",
    "SimulatedRobot",
    "SimulatedScreen",
    "add_extra_channels",
    "arm_limb_truth",
    "arm_rollout",
    "limb_truth",
    "simulate_arm",
    "simulate_robot",
    "screen_to_crl_data",
    "simulate_screen",
    "simulate_screen_chunks",
    "write_limb_truth",
    "write_module_truth",
    "write_robot_simulation",
    "write_simulation",
]
