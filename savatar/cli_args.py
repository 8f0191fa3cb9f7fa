"""Parsing of the command-line values shared by several subcommands."""
from __future__ import annotations

import math

import numpy as np

from savatar.core.head_model import JOINT_NAMES, POSE_DIM


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit code 2."""


def parse_expr(items: list[str] | None, names: list[str]) -> np.ndarray:
    """['mouthSmile_L=0.8', ...] -> (E,) coefficients by expression name."""
    expr = np.zeros(len(names), np.float32)
    for item in items or []:
        name, _, value = item.partition("=")
        if name not in names:
            raise UserError(f"unknown expression '{name}'; known: {', '.join(names)}")
        try:
            expr[names.index(name)] = float(value)
        except ValueError:
            raise UserError(f"--expr {item}: expected NAME=NUMBER") from None
    return expr


def parse_pose(items: list[str] | None) -> np.ndarray:
    """['jaw=15,0,0', ...] (axis-angle in degrees) -> (15,) pose in radians, FLAME layout."""
    pose = np.zeros(POSE_DIM, np.float32)
    for item in items or []:
        joint, _, value = item.partition("=")
        if joint not in JOINT_NAMES:
            raise UserError(f"unknown joint '{joint}'; known: {', '.join(JOINT_NAMES)}")
        try:
            rot = [math.radians(float(x)) for x in value.split(",")]
        except ValueError:
            rot = []
        if len(rot) != 3:
            raise UserError(f"--pose {item}: expected JOINT=RX,RY,RZ in degrees")
        j = JOINT_NAMES.index(joint)
        pose[3 * j:3 * j + 3] = rot
    return pose
