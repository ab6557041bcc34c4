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

# Order of the commands in --help: the pipeline's order.
COMMAND_ORDER = ["demo-data", "train", "export", "bench", "deploy", "serve", "predict"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a bundle over HTTP (LiteRT or ONNX Runtime)")
    p.add_argument("bundle", type=Path, help="a bundle folder, or a bare .tflite/.onnx file")
    p.add_argument("--labels", type=Path, help="labels file for a bare model file (one per line)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--device", help="device profile for defaults (see devices/profiles)")
    p.add_argument("--workers", type=int, help="model instances serving in parallel (default: from device or cores)")
    p.add_argument("--threads", type=int, help="threads per model instance (default: cores / workers)")
    p.add_argument("--solo-threads", type=int,
                   help="threads of one extra instance that serves a request arriving while no other runs "
                        "(default: all cores up to 4, if more than --threads; 0: no such instance)")
    p.add_argument("--api-key-file", type=Path, help="file holding the API key clients must send")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body accepted")
    p.add_argument("--max-pixels", type=int, help="largest image accepted, in pixels (default 16,000,000: fits a 1 GB board)")
    p.add_argument("--memory-budget-mb", type=float,
                   help="memory the server may use; requests are admitted against it (default: the cgroup limit, "
                        "the device profile's memory_max or half the RAM, whichever is smallest)")
    p.add_argument("--request-timeout", type=float, default=15.0,
                   help="seconds a request may spend decoding, waiting and inferring before it is answered 503 (default 15)")
    p.add_argument("--http-threads", type=int, help="HTTP worker threads (default: workers + 2)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (repeatable; default: CORS off)")
    p.add_argument("--decode", choices=["auto", "exact", "fast"], default="auto",
                   help="fast: decode large JPEGs at reduced scale (about half the decoding work, pixels move ~1 level); "
                        "exact: the trainer's pixels; auto (default): fast unless the bundle's export check found it "
                        "changes more than 1%% of this model's answers")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="no JSON access log lines on stderr")
    add_preprocessing_arguments(p, BARE_FILE_PREPROCESSING)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("predict", help="classify image files with a bundle, no server")
    p.add_argument("bundle", type=Path)
    p.add_argument("images", type=Path, nargs="+")
    p.add_argument("--labels", type=Path, help="labels file for a bare model file")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--threads", type=int)
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    add_preprocessing_arguments(p, BARE_FILE_PREPROCESSING)
    p.set_defaults(func=cmd_predict)


def _first_set(*values):
    """The first value that is not None (0 is a real setting here, so `or` will not do)."""
    return next((v for v in values if v is not None), None)


def _service_options(args, profile: dict | None):
    from edge_core.imageio import DEFAULT_MAX_PIXELS
    from edge_core.preprocessing import from_args
    from edge_core.service import ServiceOptions

    serve_cfg = (profile or {}).get("serve", {})
    return ServiceOptions(
        threads=getattr(args, "threads", None) or serve_cfg.get("threads"),
        pool_size=getattr(args, "workers", None) or serve_cfg.get("workers"),
        solo_threads=_first_set(getattr(args, "solo_threads", None), serve_cfg.get("solo_threads")),
        max_pixels=getattr(args, "max_pixels", None) or DEFAULT_MAX_PIXELS,
        decode=getattr(args, "decode", "auto"),
        onnx_providers=tuple(serve_cfg.get("onnx_providers", ["CPUExecutionProvider"])),
        onnx_mem_arena=serve_cfg.get("onnx_mem_arena", True),
        trt_cache_dir=serve_cfg.get("trt_cache_dir"),
        preprocessing=from_args(args),
    )


def cmd_serve(args) -> int:
    from devices import load_profile
    from edge_core.errors import EdgeError

    from .budget import process_limit
    from .serve import serve
    from .settings import ServerSettings

    profile = load_profile(args.device) if args.device else None
    api_key = None
    if args.api_key_file:
        try:
            api_key = args.api_key_file.read_text().strip()
        except OSError as e:
            raise EdgeError(f"Expected a readable API key file. Received: {str(args.api_key_file)!r} ({e.strerror})") from None
        if not api_key:
            raise EdgeError(f"Expected an API key in {args.api_key_file}. Received: an empty file")
    if args.request_timeout is not None and args.request_timeout <= 0:
        raise EdgeError(f"Expected --request-timeout of more than 0 seconds. Received: {args.request_timeout}")
    explicit = int(args.memory_budget_mb * 1024 * 1024) if args.memory_budget_mb else None
    memory_limit, memory_source = process_limit(explicit, profile)
    settings = ServerSettings(
        bundle=args.bundle, labels=args.labels, host=args.host, port=args.port, api_key=api_key,
        max_body_bytes=int(args.max_body_mb * 1024 * 1024), service=_service_options(args, profile), device=args.device,
        http_threads=args.http_threads, cors_origins=args.cors_origin, access_log=args.access_log,
        memory_limit=memory_limit, memory_source=memory_source, request_timeout_s=args.request_timeout,
    )
    serve(settings)
    return 0


def cmd_predict(args) -> int:
    import json

    from edge_core.errors import RequestError
    from edge_core.service import ModelService

    svc = ModelService.from_path(args.bundle, args.labels, _service_options(args, None))
    for warning in svc.warnings:
        print(f"edgeport predict: warning: {warning}", file=sys.stderr)
    status = 0
    for path in args.images:
        try:
            data = path.read_bytes()
            preds, timings = svc.predict_bytes(data, args.top_k)
        except OSError as e:
            print(f"{path}: error: cannot read ({e.strerror})", file=sys.stderr)
            status = 2
            continue
        except RequestError as e:
            print(f"{path}: error: {e.message}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            print(json.dumps({"image": str(path), "predictions": preds, "timings_ms": timings}))
        else:
            print(f"{path}:")
            for p in preds:
                print(f"  {p['label']:<20} {p['score']:.4f}")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeport",
        description="From a folder of labelled images to a verified, quantized classifier served on an edge device.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for ep in sorted(entry_points(group="edgeport.commands"), key=lambda e: e.name):
        ep.load()(sub)
    order = {name: i for i, name in enumerate(COMMAND_ORDER)}
    sub._choices_actions.sort(key=lambda a: order.get(a.dest, len(order)))
    return parser


def quiet_tensorflow() -> None:
    """TensorFlow's C++ start-up chatter (oneDNN, CPU features) buries our progress lines."""
    import os
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", message=r".*tf.lite.Interpreter is deprecated.*")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_tensorflow()  # only sets defaults; imports nothing
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
