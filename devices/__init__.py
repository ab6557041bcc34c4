"""Device profiles as data: devices/profiles/NAME.toml.

`--device NAME` on export and serve takes its defaults from here; explicit
flags win. Pure standard library, so every install role can read them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

PROFILE_DIR = Path(__file__).parent / "profiles"


class DeviceError(Exception):
    cli_exit_code = 2


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name: str) -> dict:
    path = PROFILE_DIR / f"{name}.toml"
    if "/" in name or "\\" in name or not path.is_file():
        raise DeviceError(f"Unknown device; expected one of {list_profiles()}. Received: device={name!r}")
    with open(path, "rb") as f:
        profile = tomllib.load(f)
    profile.setdefault("name", name)
    return profile
