"""`edgeport train` and `edgeport demo-data`: argument parsing only; the work is in plain functions.

Importing this module must stay cheap (no TensorFlow): it runs for every
`edgeport --help`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_core.options import add_arguments, values

from .config import TrainConfig  # a dataclass, no TensorFlow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write built-in demo images (shapes on textured backgrounds)")
    p.add_argument("dir", type=Path)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train", help="fine-tune a MobileNet/ResNet classifier on a folder of labelled images")
    add_arguments(p, TrainConfig)
    p.set_defaults(func=cmd_train)


def cmd_demo_data(args) -> int:
    from .demo_data import DemoDataConfig, generate
    from .errors import TrainerError

    try:
        cfg = DemoDataConfig(args.dir, args.classes, args.per_class, args.size, args.seed)
    except ValueError as e:
        raise TrainerError(str(e)) from None
    paths = generate(cfg, progress=print)
    print(f"wrote {len(paths)} images in {args.classes} classes to {args.dir}")
    return 0


def cmd_train(args) -> int:
    cfg = TrainConfig(**values(TrainConfig, args))
    from exporter.console import import_tensorflow_quietly

    import_tensorflow_quietly()  # TensorFlow loads here, without its start-up lines
    from .fit import train

    train(cfg)
    return 0
