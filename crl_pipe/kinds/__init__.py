"""Dataset kinds: what a screen of counts, a table of measured variables and a robot log each mean
for every stage (read, label, preprocess, anchors, truth) and for the report's words."""

from __future__ import annotations

from ._vocabulary import ROBOT, SCREEN, Vocabulary

__all__ = ["ROBOT", "SCREEN", "Vocabulary"]
