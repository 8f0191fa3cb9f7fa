"""The bundled open head model (savatar/assets/open_head.npz, made by scripts/build_open_head.py)."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np

from savatar.core.head.head_model import HeadModel, HeadModelData

ASSET = "open_head.npz"


@lru_cache(maxsize=1)
def load_open_head_data() -> HeadModelData:
    """The open head model's arrays (cached; callers must not modify them)."""
    with resources.files("savatar.assets").joinpath(ASSET).open("rb") as fh, np.load(fh) as z:
        a = {k: z[k] for k in z.files}
    v = a["v_template"]
    regions = {str(name): np.flatnonzero(a["region"] == i) for i, name in enumerate(a["region_names"])}
    data = HeadModelData(
        name="open-head",
        v_template=v,
        faces=a["faces"].astype(np.int64),
        shapedirs=a["shapedirs"],
        exprdirs=a["exprdirs"],
        # The open model has no pose correctives yet; zeros keep FLAME's layout.
        posedirs=np.zeros((len(v), 3, 36), np.float32),
        j_regressor=a["j_regressor"],
        parents=a["parents"].astype(np.int64),
        lbs_weights=a["lbs_weights"],
        lmk_faces=a["lmk_faces"].astype(np.int64),
        lmk_bary=a["lmk_bary"],
        vertex_colors=a["vertex_colors"],
        shape_names=[str(n) for n in a["shape_names"]],
        expr_names=[str(n) for n in a["expr_names"]],
        vertex_regions=regions,
        lmk_mediapipe=np.arange(len(a["lmk_faces"])),  # landmark i is MediaPipe landmark i
    )
    data.validate()
    return data


def open_head_model() -> HeadModel:
    return HeadModel(load_open_head_data())
