"""Options declared once, on the config dataclass's fields, and turned into an argparse parser.

A field declared with `option(...)` carries its flag, help and argparse
settings beside its type and default; `add_arguments` builds the parser from
the fields, and `values` reads the parsed arguments back by field name. The
dataclass default is argparse's default, so the two cannot drift apart.
A `profile` key names the device-profile setting that fills the field when
the flag is not given (`layered`): flag, then profile, then the default.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

CLI = "cli"  # the field-metadata key


def option(default: Any = dataclasses.MISSING, help: str | None = None, *, flag: str | None = None, positional: bool = False,
           profile: str | None = None, cli: bool = True, convert: Any = None, default_factory: Any = dataclasses.MISSING,
           **argparse_kw) -> Any:
    """A dataclass field that is also a command-line option (`flag` defaults to --field-name). With
    cli=False it is a device-profile setting only: no flag, but filled by `layered`; `convert` turns
    the profile's value (TOML) into the field's type."""
    meta = {CLI: {"flag": flag, "positional": positional, "help": help, "profile": profile, "cli": cli, "convert": convert,
                  "argparse": argparse_kw}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cli_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if CLI in f.metadata]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_arguments(parser: argparse.ArgumentParser, cls, *, layered: bool = False, only: tuple[str, ...] | None = None) -> None:
    """One argument per option field of `cls` (or of those named in `only`). With `layered`, an option
    that a device profile may fill parses to None when not given, so `layered` can tell the two apart."""
    for f in cli_fields(cls):
        if not f.metadata[CLI]["cli"] or (only is not None and f.name not in only):
            continue
        spec = f.metadata[CLI]
        kw = dict(spec["argparse"])
        if spec["help"] is not None:
            kw["help"] = spec["help"]
        if spec["positional"]:
            parser.add_argument(spec["flag"] or f.name, **kw)
            continue
        kw.setdefault("default", None if layered and spec["profile"] else _default(f))
        if spec["flag"] and "action" not in kw and "choices" not in kw:
            kw.setdefault("metavar", spec["flag"].lstrip("-").upper().replace("-", "_"))  # the flag's name, not the field's
        parser.add_argument(spec["flag"] or "--" + f.name.replace("_", "-"), dest=f.name, **kw)


def values(cls, args: argparse.Namespace) -> dict[str, Any]:
    """The parsed value of every option field of `cls` that the parser has."""
    return {f.name: getattr(args, f.name) for f in cli_fields(cls) if hasattr(args, f.name)}


def layered(cls, args: argparse.Namespace, profile: dict | None) -> dict[str, Any]:
    """Option values by precedence: the flag when given, else the profile's setting, else the field's default."""
    out = {}
    for f in cli_fields(cls):
        spec = f.metadata[CLI]
        value = getattr(args, f.name, None)
        if spec["profile"] is not None and value is None:
            value = (profile or {}).get(spec["profile"])
            if value is not None and spec["convert"] is not None:
                value = spec["convert"](value)
        out[f.name] = _default(f) if value is None else value
    return out
