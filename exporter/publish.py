"""Publish a verified model file as a bundle, and clear what killed exports left behind.

`edge_server.bundle.write_bundle` stages the bundle in a hidden sibling folder
(`.NAME.partial-PID-NS`) and renames it into place only when complete, so an
export killed at any moment leaves the destination as it was: the old bundle,
or nothing. What a kill can leave is that hidden staging folder (and the
export's scratch folder under the system temp dir). The next export to the
same destination removes staging folders whose process is gone, so a
half-written copy is not lying around to be pointed at by mistake.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from edge_server.bundle import write_bundle

# .NAME.partial-PID-NS (being assembled) and .NAME.old-PID-NS (the previous
# bundle, moved aside for the instant of the swap) -- names from write_bundle.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)-\d+$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_leftovers(dest: Path) -> list[Path]:
    """Staging folders for `dest` whose writing process no longer exists.

    An `.old-*` folder is stale only if `dest` exists again: if the process
    died between moving the old bundle aside and renaming the new one in, the
    `.old-*` folder is the only copy of the previous bundle and is kept.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return []
    out = []
    for p in dest.parent.iterdir():
        m = _LEFTOVER.match(p.name)
        if not m or m["name"] != dest.name or _alive(int(m["pid"])):
            continue
        if m["kind"] == "partial" or dest.exists():
            out.append(p)
    return sorted(out)


def publish(dest: Path, model_file: Path, meta: dict, log=print) -> Path:
    for p in stale_leftovers(dest):
        log(f"removing a killed export's staging folder: {p}")
        shutil.rmtree(p, ignore_errors=True)
    return write_bundle(dest, model_file, meta)
