"""Parsing of the command-line values shared by several subcommands."""
from __future__ import annotations

import argparse
import math

import numpy as np

from savatar.core.head.head_model import JOINT_NAMES, POSE_DIM


class UserError(Exception):
    """A mistake in what the user asked for: printed as one line, exit code 2."""


def add_expr_pose_args(p: argparse.ArgumentParser) -> None:
    """--expr and --pose, each taking one or several values and repeatable:
    `--expr mouthSmile_L=0.8 mouthSmile_R=0.8` is the same as two --expr flags."""
    p.add_argument("--expr", action="extend", nargs="+", metavar="NAME=VALUE",
                   help="expression coefficients, several after one --expr or the flag repeated")
    p.add_argument("--pose", action="extend", nargs="+", metavar="JOINT=RX,RY,RZ",
                   help="joint rotations in degrees (root, neck, jaw, left_eye, right_eye), several or repeated")


def _split_item(flag: str, item: str, expected: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep:
        # Most often a file name swallowed by the flag's list of values: say where it belongs.
        raise UserError(f"{flag} {item}: expected {expected} (put files before {flag}, or end its values with --)")
    return name, value


def parse_expr(items: list[str] | None, names: list[str]) -> np.ndarray:
    """['mouthSmile_L=0.8', ...] -> (E,) coefficients by expression name."""
    expr = np.zeros(len(names), np.float32)
    for item in items or []:
        name, value = _split_item("--expr", item, "NAME=NUMBER")
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
        joint, value = _split_item("--pose", item, "JOINT=RX,RY,RZ in degrees")
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
