"""`edgeport train` and `edgeport demo-data`: argument parsing only; the work is in plain functions.

Importing this module must stay cheap (no TensorFlow): it runs for every
`edgeport --help`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .strategy import CLASS_WEIGHTS  # a table, no TensorFlow


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-data", help="write built-in demo images (shapes on textured backgrounds)")
    p.add_argument("dir", type=Path)
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train", help="fine-tune a MobileNet/ResNet classifier on a folder of labelled images")
    p.add_argument("data_dir", type=Path, help="a folder with one subfolder of images per class")
    p.add_argument("--val-dir", type=Path, help="a separate validation folder (default: a seeded stratified split)")
    p.add_argument("--backbone", default="mobilenet_v2",
                   help="mobilenet_v2 | mobilenet_v3_small | mobilenet_v3_large | resnet50")
    p.add_argument("--alpha", type=float, help="width multiplier (MobileNets)")
    p.add_argument("--image-size", type=int, help="square input size in pixels (default: the backbone's)")
    p.add_argument("--weights", default="imagenet",
                   help="imagenet (from Keras' cache, or downloaded) | auto (imagenet when cached, else none) | none | PATH to a weights or .keras file")
    p.add_argument("--head", default="gap", choices=["fc", "gap", "svm"])
    p.add_argument("--similarity", default="auto", choices=["high", "low", "auto"])
    p.add_argument("--small-threshold", type=int, default=1000, help="datasets up to this many images count as small")
    p.add_argument("--strategy", type=int, choices=[1, 2, 3], help="override the quadrant rule")
    p.add_argument("--unfreeze-blocks", type=int, help="strategy 2: how many top blocks train")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="force data augmentation on or off (default: the quadrant rule decides)")
    p.add_argument("--class-weights", default="auto", choices=CLASS_WEIGHTS,
                   help="auto: balanced class weights when the largest class has >= 1.5x the images of the smallest")
    p.add_argument("--cut-block", type=int, help="cut the backbone after this block and train a head on its features")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fine-tune-epochs", type=int, help="strategy 2, second phase (default: --epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--patience", type=int, default=5, help="early stopping patience on validation loss")
    p.add_argument("--out", type=Path, default=Path("runs"), help="runs folder (default: runs/)")
    p.add_argument("--name", help="run name (default: BACKBONE-DATE-TIME)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--distribute", choices=["mirrored", "multi_worker"],
                   help="tf.distribute strategy; multi_worker reads TF_CONFIG")
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
    from .config import TrainConfig

    cfg = TrainConfig(
        data_dir=args.data_dir, val_dir=args.val_dir, backbone=args.backbone, alpha=args.alpha,
        image_size=args.image_size, weights=args.weights, head=args.head, similarity=args.similarity,
        small_threshold=args.small_threshold, strategy=args.strategy, unfreeze_blocks=args.unfreeze_blocks,
        augment=args.augment, class_weights=args.class_weights, cut_block=args.cut_block, epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs,
        batch_size=args.batch_size, patience=args.patience, out_dir=args.out, name=args.name,
        seed=args.seed, distribute=args.distribute,
    )
    from .fit import train  # TensorFlow loads here

    train(cfg)
    return 0
