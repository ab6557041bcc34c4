"""Device profiles as data: devices/profiles/NAME.toml.

`--device NAME` on export and serve takes its defaults from here; explicit
flags win. Pure standard library, so every install role can read them.
"""

from __future__ import annotations

from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): the deploy folder pins tomli for it
    import tomli as tomllib

PROFILE_DIR = Path(__file__).parent / "profiles"

# Dotted paths every profile must have: export and serve read the first groups,
# `edgeport deploy` the install and service ones.
REQUIRED_FIELDS = (
    "name", "description", "arch", "cores", "memory_mb",
    "export.format", "export.precision",
    "serve.runtime", "serve.workers", "serve.threads", "serve.onnx_providers",
    "install.os", "install.python", "install.runtimes",
    "service.memory_max",
)

# Dotted paths a profile may have, and what each must be. serve.precision pins one precision of a
# multi-precision bundle (export --precision auto); without it the server times them all at start.
OPTIONAL_FIELDS = {
    "serve.precision": (lambda v: isinstance(v, str) and v.isidentifier(), "a precision name such as \"int8\""),
}


class DeviceError(Exception):
    cli_exit_code = 2


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def missing_fields(profile: dict) -> list[str]:
    missing = []
    for dotted in REQUIRED_FIELDS:
        node = profile
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(dotted)
                break
            node = node[part]
    return missing


def load_profile(name: str) -> dict:
    path = PROFILE_DIR / f"{name}.toml"
    if "/" in name or "\\" in name or not path.is_file():
        raise DeviceError(f"Unknown device; expected one of {list_profiles()}. Received: device={name!r}")
    with open(path, "rb") as f:
        profile = tomllib.load(f)
    profile.setdefault("name", name)
    for dotted, (ok, what) in OPTIONAL_FIELDS.items():
        node = profile
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not ok(node):
            raise DeviceError(f"Expected {dotted} to be {what} in {path.name}. Received: {node!r}")
    return profile
