"""The committed open-head asset is what scripts/build_open_head.py makes, every time."""
from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_open_head.py"


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_open_head", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_regeneration_is_deterministic_and_matches_the_committed_asset(builder):
    first = builder.build()
    second = builder.build()
    with resources.files("savatar.assets").joinpath("open_head.npz").open("rb") as fh, np.load(fh) as z:
        committed = {k: z[k] for k in z.files}
    assert first.keys() == committed.keys()
    for key in first:
        assert np.array_equal(first[key], second[key]), f"{key} differs between two builds"
        if first[key].dtype.kind == "f":
            # MediaPipe's float inference may differ in the last bits across CPUs.
            assert np.allclose(first[key], committed[key], atol=2e-5), f"{key} differs from the committed asset"
        else:
            assert np.array_equal(first[key], committed[key]), f"{key} differs from the committed asset"
