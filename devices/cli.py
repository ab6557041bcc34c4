"""`edgeport deploy`: registered through the "edgeport.commands" entry point.

Thin: parsing here, the work in devices.deploy (imported only when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="write a self-contained install folder for a device (and optionally push it)")
    p.add_argument("bundle", type=Path, help="a bundle folder from `edgeport export`")
    p.add_argument("--device", required=True, help="device profile (see devices/profiles)")
    p.add_argument("--out", type=Path, required=True, help="folder to write (replaced only if it is an earlier deploy)")
    p.add_argument("--target", help="user@host: copy the folder there over ssh (rsync, else scp) and run its install.sh")
    p.add_argument("--dry-run", action="store_true", help="with --target: print the ssh/rsync commands instead of running them")
    p.add_argument("--host", default="127.0.0.1", help="address the service binds on the device (default 127.0.0.1: the device only; "
                                                        "any other needs --api-key-file or --insecure-public)")
    p.add_argument("--api-key-file", type=Path, help="file holding the API key clients must send; installed readable only by the service user")
    p.add_argument("--insecure-public", action="store_true", help="allow a --host beyond loopback without an API key")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--workers", type=int, help="model instances (default: the device profile's)")
    p.add_argument("--threads", type=int, help="threads per instance (default: the device profile's)")
    p.add_argument("--prefix", default="/opt/edgeport", help="install location on the device")
    p.set_defaults(func=cmd_deploy)


def cmd_deploy(args) -> int:
    from .deploy import DeployOptions, deploy, push

    result = deploy(DeployOptions(
        bundle=args.bundle, device=args.device, out=args.out, host=args.host, port=args.port,
        prefix=args.prefix, workers=args.workers, threads=args.threads,
        api_key_file=args.api_key_file, insecure_public=args.insecure_public,
    ))
    if args.target:
        push(result.out, args.target, dry_run=args.dry_run)
    else:
        print(f"deploy: on the device: sudo bash {result.out.name}/install.sh   (see {result.out / 'README.md'})")
    return 0
