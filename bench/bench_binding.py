"""Binding benchmarks: deform of a 100K-Gaussian avatar on the open head model (no autograd)."""
from __future__ import annotations

import torch

from bench import entry, time_ms


@entry("deform")
def deform_bench() -> dict[str, float]:
    from savatar.core.gaussians.binding import deform, init_avatar
    from savatar.core.head.open_head import load_open_head_data

    data = load_open_head_data()
    avatar = init_avatar(data, 100_000, seed=0)
    verts = torch.from_numpy(data.v_template)
    faces = torch.from_numpy(data.faces)
    out = {}
    threads = torch.get_num_threads()
    with torch.no_grad():
        out[f"deform_100k_{threads}threads_ms"] = time_ms(lambda: deform(avatar, verts, faces), repeat=50)
        try:
            torch.set_num_threads(1)
            out["deform_100k_1thread_ms"] = time_ms(lambda: deform(avatar, verts, faces), repeat=50)
        finally:
            torch.set_num_threads(threads)
    # With autograd recording (refinement's case): forward only.
    leaf = avatar.mean.clone().requires_grad_(True)
    avatar.mean = leaf
    out[f"deform_100k_grad_fwd_{threads}threads_ms"] = time_ms(lambda: deform(avatar, verts, faces), repeat=20)
    return out
