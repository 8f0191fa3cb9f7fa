"""`savatar train-generator CONFIG`: train the feed-forward generator
(savatar.core.build.generator).

CONFIG is a JSON or TOML file with the fields of savatar.core.build.generator_train.TrainConfig,
e.g.

    phase1_steps = 20000
    phase2_steps = 10000
    replay_every = 3          # phase 2: 1 step in 3 replays a phase-1 batch
    lr = 1e-3
    batch = 8                 # over all ranks
    k_min = 1
    k_max = 8
    checkpoint = "runs/generator.pt"
    [[temporal]]
    type = "videos"
    path = "data/talking_heads"
    [[multiview]]
    type = "capture"
    path = "data/capture"
    [generator]
    count = 30000

Several GPUs or machines: `torchrun --nproc_per_node=N -m savatar.cli train-generator CONFIG`.
A trained checkpoint builds avatars with savatar.core.build.generator.build_with_generator(ckpt,
images), the function behind `savatar build --generator CKPT`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from savatar.cli_args import UserError


def cmd_train_generator(args: argparse.Namespace) -> int:
    from savatar.core.build.generator_train import load_config, train

    path = Path(args.config)
    if not path.is_file():
        raise UserError(f"{path}: no such config file")
    if path.suffix.lower() not in (".json", ".toml"):
        raise UserError(f"{path}: the config must be a .json or .toml file")
    try:
        cfg = load_config(path)
    except (ValueError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: {exc}") from None
    if args.checkpoint:
        cfg.checkpoint = args.checkpoint
    if args.no_resume:
        cfg.resume = False
    try:
        result = train(cfg, steps=args.steps)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    print(f"step {result.step}/{cfg.total_steps}; checkpoint {result.checkpoint}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("train-generator", help="train the feed-forward avatar generator from a config file")
    p.add_argument("config", help="training config (.json or .toml)")
    p.add_argument("--checkpoint", help="checkpoint path (overrides the config)")
    p.add_argument("--steps", type=int, help="run at most this many steps now (resumable later)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the checkpoint exists")
    p.set_defaults(func=cmd_train_generator)
