"""Head-model benchmarks: asset load time and forward time at batch 1 and 64."""
from __future__ import annotations

import time

import torch

from bench import entry, time_ms


@entry("head_model")
def head_model() -> dict[str, float]:
    from savatar.core.head import open_head
    from savatar.core.head.head_model import HeadModel

    open_head.load_open_head_data.cache_clear()
    t0 = time.perf_counter()
    data = open_head.load_open_head_data()
    load_ms = (time.perf_counter() - t0) * 1e3
    model = HeadModel(data)
    out = {"asset_load_ms": load_ms}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for b in (1, 64):
            expr = torch.randn(b, model.num_expr, generator=g) * 0.3
            pose = torch.randn(b, 15, generator=g) * 0.1
            out[f"forward_b{b}_ms"] = time_ms(lambda: model(expr=expr, pose=pose), repeat=10 if b > 1 else 30)
    return out
