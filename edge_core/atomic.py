"""Publishing a folder atomically, and repairing what a killed publisher left.

A folder (an export's bundle, a training run, a deploy folder) is assembled
under a hidden staging name beside its destination and swapped in whole; an
existing folder of that name is set aside first and removed only once the
new one is in. `recover_interrupted` puts things right after a kill at any
point, touching only leftovers whose writer process is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

# .NAME.partial-PID[-NS] (being assembled) and .NAME.old-PID[-NS] (the previous folder, moved aside
# for the instant of the swap). The nanosecond suffix keeps two writers in one process apart.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)(?:-\d+)?$")


def staging_path(dest: Path) -> Path:
    """A fresh hidden name beside `dest` to assemble its new contents under."""
    return dest.parent / f".{dest.name}.partial-{os.getpid()}-{time.monotonic_ns()}"


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def publish_dir(tmp: Path, dest: Path) -> None:
    """Swap a finished folder into place. An existing folder at `dest` is set aside first
    and removed only after the new one is in (recover_interrupted repairs a kill in between)."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(dest, old)
    os.replace(tmp, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_interrupted(dest: Path) -> None:
    """Repair what a killed publisher left beside `dest` (only folders whose writer is gone).

    A staging folder is removed. A previous folder set aside for the swap is put
    back if the kill came before the new one moved in, else dropped.
    """
    dest = Path(dest)
    if not dest.parent.is_dir():
        return
    for p in sorted(dest.parent.iterdir()):
        m = _LEFTOVER.match(p.name)
        if not m or m["name"] != dest.name or process_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not dest.exists():
            os.replace(p, dest)
        else:
            shutil.rmtree(p, ignore_errors=True)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
