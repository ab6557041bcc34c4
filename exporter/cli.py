"""`edgeport export` and `edgeport bench`: argument parsing only. No TensorFlow at import."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from .formats import allowed_combinations

    p = sub.add_parser("export", help="quantize and convert a trained model to a verified TFLite/ONNX bundle",
                       description=f"Allowed format/precision: {', '.join(allowed_combinations())}")
    p.add_argument("source", type=Path, help="a trainer run folder; or, with --labels: a .keras or legacy .h5 file, "
                                             "a SavedModel folder, an .onnx file")
    p.add_argument("--format", choices=["tflite", "onnx"], help="default: from --device, else tflite")
    p.add_argument("--precision", choices=["float32", "float16", "dynamic", "int8", "auto"],
                   help="default: from --device, else int8; auto: every precision that passes its floor, in one bundle, "
                        "the server serving the fastest on its device")
    p.add_argument("--io-dtype", choices=["uint8", "int8", "float32"],
                   help="input/output tensor type; only tflite/int8 offers a choice (default uint8: raw pixels in)")
    p.add_argument("--labels", type=Path, help="labels file (one per line) for a bare .keras model")
    p.add_argument("--calibration", type=Path, help="images for int8 calibration (default: the run's training images)")
    p.add_argument("--images", type=Path, help="held-out images for verification (default: the run's validation split)")
    p.add_argument("--data", type=Path, help="the run's data folder, where it has moved since training (default: found from split.json)")
    p.add_argument("--device", help="device profile for defaults: format, precision, threads")
    p.add_argument("--min-agreement", type=float, help="fail below this top-1 agreement with Keras (0-1)")
    p.add_argument("--threads", type=int, help="threads for verification latency (default: from device)")
    p.add_argument("--calibration-size", type=int, default=200)
    p.add_argument("--out", type=Path, help="bundle folder (default: bundles/NAME.FORMAT-PRECISION)")
    p.add_argument("--image-size", type=int, help="input size for a model built for any size (input shape (None, None, 3))")
    p.add_argument("--unsafe-deserialization", action="store_true",
                   help="let Keras run the Python code of Lambda layers in the file (safe_mode=False); only for files you trust")
    from edge_core.options import add_arguments as add_options
    from edge_core.preprocessing import add_arguments
    from edge_core.service import ServiceOptions

    add_options(p, ServiceOptions, only=("max_pixels",))  # the server's flag: images are read as it reads them
    add_arguments(p, "What the source model's input expects. It is folded into the exported graph, so the bundle takes raw "
                     "0-255 RGB like every other. Default: raw 0-255 RGB (a trainer run's models all do).")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="compare bundles side by side: size, accuracy, agreement, latency",
                       description="Measures each bundle now, on the same images: size, accuracy (images in subfolders named "
                                   "by class), top-1 agreement with the first bundle and with the Keras model each was exported "
                                   "from (when that file is still there, unchanged), latency. What bundle.json recorded at "
                                   "export, on the export's own images, is printed apart.")
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--images", type=Path, help="images to measure on (subfolders named by class give accuracy); "
                                               "without: latency only, on random pixels")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-keras", action="store_true",
                   help="do not load the bundles' source Keras models (saves TensorFlow's start-up)")
    add_options(p, ServiceOptions, only=("max_pixels",))
    p.set_defaults(func=cmd_bench)


def cmd_export(args) -> int:
    from edge_core.preprocessing import from_args

    from .pipeline import ExportConfig, export

    export(ExportConfig(
        source=args.source, format=args.format, precision=args.precision, labels=args.labels,
        calibration=args.calibration, images=args.images, data=args.data, device=args.device, min_agreement=args.min_agreement,
        out=args.out, threads=args.threads, calibration_size=args.calibration_size, io_dtype=args.io_dtype,
        preprocessing=from_args(args), image_size=args.image_size, unsafe_deserialization=args.unsafe_deserialization,
        max_pixels=args.max_pixels,
    ))
    return 0


def cmd_bench(args) -> int:
    from .bench import bench

    bench(args.bundles, args.images, threads=args.threads, keras=not args.no_keras, max_pixels=args.max_pixels)
    return 0
