"""The `edgeport` command: `serve` and `predict` here; other packages add theirs.

Subcommands come from the "edgeport.commands" entry points (see
pyproject.toml), so this module never names the trainer or exporter and a
device without them still gets a working `edgeport serve`. Registering a
command must not import TensorFlow: `edgeport --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points
from pathlib import Path

from edge_core.preprocessing import add_arguments as add_preprocessing_arguments

# Modules only a workstation has: a missing one names the extra to install.
WORKSTATION_MODULES = {m: "train" for m in ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "matplotlib")}

BARE_FILE_PREPROCESSING = ("For a bare .tflite/.onnx file: the server maps decoded 0-255 RGB pixels to what the model expects. "
                           "Without these, TFLite Model Metadata is read if the file has it, else raw 0-255 RGB (with a warning). "
                           "A bundle needs none: its preprocessing is inside its graph.")

PREDICT_DESCRIPTION = """Classify images with a bundle, without a server.

IMAGE may be a file, a folder (walked recursively; images found by extension or by their first bytes)
or a glob pattern (quoted, it is expanded here; '**' crosses folders). An image inside a folder named
after one of the model's labels (one subfolder per class, as for training) counts as that class:
accuracy and a confusion summary follow the table.

  edgeport predict BUNDLE photo.jpg                     a table on the terminal
  edgeport predict BUNDLE photos/ --csv results.csv     the table, and a CSV file
  edgeport predict BUNDLE 'photos/**/*.jpg' --json -    JSON lines on stdout (the summary on stderr)

An image that cannot be read or decoded gets an error line; the others go on, and the exit status is 2."""

# Order of the commands in --help: the pipeline's order.
COMMAND_ORDER = ["demo-data", "train", "export", "bench", "deploy", "serve", "predict"]


def register(sub: argparse._SubParsersAction) -> None:
    from edge_core.options import add_arguments
    from edge_core.service import ServiceOptions

    from .settings import ServerSettings

    p = sub.add_parser("serve", help="serve a bundle over HTTP (LiteRT or ONNX Runtime)")
    add_arguments(p, ServerSettings)
    add_arguments(p, ServiceOptions, layered=True)
    add_preprocessing_arguments(p, BARE_FILE_PREPROCESSING)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("predict", help="classify images (files, folders, globs) with a bundle, no server",
                       description=PREDICT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, ServerSettings, only=("bundle", "labels"))
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                   help="image files, folders (walked recursively) or glob patterns such as 'photos/**/*.jpg'")
    p.add_argument("--top-k", type=int, default=3)
    add_arguments(p, ServiceOptions, layered=True, only=("threads", "max_pixels", "precision"))
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="JSON lines, one per image (and a last {\"summary\": ...} line where folders name classes), "
                        "to FILE; bare --json or --json - writes them to stdout in place of the table")
    p.add_argument("--csv", metavar="FILE", help="CSV, one row per image, to FILE; --csv - writes it to stdout in place of the table")
    add_preprocessing_arguments(p, BARE_FILE_PREPROCESSING)
    p.set_defaults(func=cmd_predict)


def _service_options(args, profile: dict | None):
    """Flags, then the device profile's [serve] table, then ServiceOptions' defaults."""
    from edge_core.options import layered
    from edge_core.preprocessing import from_args
    from edge_core.service import ServiceOptions

    options = ServiceOptions(**layered(ServiceOptions, args, (profile or {}).get("serve")), preprocessing=from_args(args))
    if options.precision is not None and getattr(args, "precision", None) is None:  # the start-up line says who pinned it
        options.precision_pinned_by = f"device profile {profile['name']}"
    return options


def cmd_serve(args) -> int:
    from dataclasses import replace

    from devices import load_profile
    from devices.api_key import read_api_key
    from edge_core.errors import EdgeError
    from edge_core.options import values

    from .budget import process_limit
    from .serve import serve
    from .settings import ServerSettings

    profile = load_profile(args.device) if args.device else None
    settings = ServerSettings(**values(ServerSettings, args), service=_service_options(args, profile))
    if settings.processes is None:
        from .supervisor import default_processes

        settings = replace(settings, processes=default_processes(profile))
    if settings.api_key_file:
        settings = replace(settings, api_key=read_api_key(settings.api_key_file))
    if settings.request_timeout_s <= 0:
        raise EdgeError(f"Expected --request-timeout of more than 0 seconds. Received: {settings.request_timeout_s}")
    memory_limit, memory_source = process_limit(settings.memory_limit, profile)
    serve(replace(settings, memory_limit=memory_limit, memory_source=memory_source))
    return 0


def cmd_predict(args) -> int:
    from edge_core.service import ModelService

    from .predict_files import run

    svc = ModelService.from_path(args.bundle, args.labels, _service_options(args, None))
    for warning in svc.warnings:
        print(f"edgeport predict: warning: {warning}", file=sys.stderr)
    return run(svc, args.images, args.top_k, json_to=args.json, csv_to=args.csv)


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's, as pip recorded it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeport")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeport",
        description="From a folder of labelled images to a verified, quantized classifier served on an edge device.",
    )
    parser.add_argument("--version", action="version", version=f"edgeport {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for ep in sorted(entry_points(group="edgeport.commands"), key=lambda e: e.name):
        ep.load()(sub)
    for p in (parser, *sub.choices.values()):  # global flags, taken before or after the command (unless it has its own)
        keep = {} if p is parser else {"default": argparse.SUPPRESS}
        for flag, text in (("--verbose", "show TensorFlow's start-up lines and warnings"),
                           ("--progress", "progress bars even when stderr is not a terminal")):
            if flag not in p._option_string_actions:
                p.add_argument(flag, action="store_true", help=text, **keep)
    order = {name: i for i, name in enumerate(COMMAND_ORDER)}
    sub._choices_actions.sort(key=lambda a: order.get(a.dest, len(order)))
    return parser


def quiet_tensorflow(verbose: bool = False, progress: bool = False) -> None:
    """TensorFlow's C++ start-up chatter (oneDNN, CPU features) buries our progress lines, unless --verbose.
    Both switches go through the environment, to the packages that import TensorFlow (exporter.console)."""
    import os
    import warnings

    from edge_core.progress import PROGRESS_ENV, VERBOSE_ENV

    if progress:
        os.environ[PROGRESS_ENV] = "1"
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated.*")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow(args.verbose, args.progress)  # only sets the environment; imports nothing
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("edgeport: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:  # e.g. `edgeport train` on a device that has only [edge]
        extra = WORKSTATION_MODULES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"edgeport {args.command}: error: this command needs the {extra} extra: pip install 'edgeport[{extra}]'. "
              f"Received: no module named {e.name!r}", file=sys.stderr)
        return 2
    except Exception as e:  # our own errors carry cli_exit_code: one line, no traceback
        code = getattr(e, "cli_exit_code", None)
        if code is None:
            raise
        print(f"edgeport {args.command}: error: {e}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
