"""A memory cgroup of its own for a supervised worker, where the machine lets us make one.

RLIMIT_DATA (worker.cap_memory) is the wall a request meets first: the allocation fails and the request
is answered. A cgroup counts what RLIMIT_DATA does not (file-backed and shared mappings, the kernel's
memory for the process) and is the backstop: past its limit the kernel's OOM killer ends that worker
alone, and the supervisor replaces it. One cgroup per worker process, not per slot: during a rolling
replacement the old worker and its successor both run, and one limit for both would be half of each.

Made under this process's own memory cgroup: cgroup v1 (`memory.limit_in_bytes`), or v2 (`memory.max`)
where the parent delegates the memory controller. Anywhere else (no write access, a container without
cgroupfs, not Linux) the worker runs with RLIMIT_DATA alone and says so on the start-up line.
"""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "edgeport-worker-"


def memory_cgroups() -> list[tuple[Path, str]]:
    """This process's memory cgroups from /proc/self/cgroup, in its order: (folder, the limit file's name),
    "memory.limit_in_bytes" for a v1 hierarchy with the memory controller, "memory.max" for v2's unified one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one unified hierarchy
            found.append((Path("/sys/fs/cgroup") / path.lstrip("/"), "memory.max"))
        elif "memory" in controllers.split(","):
            found.append((Path("/sys/fs/cgroup/memory") / path.lstrip("/"), "memory.limit_in_bytes"))
    return found


def own_memory_cgroup() -> tuple[Path, str] | None:
    """(folder of this process's memory cgroup, the limit file's name), or None: v1 first, then a v2 folder
    that delegates the memory controller to its children."""
    cgroups = memory_cgroups()
    for folder, limit in cgroups:
        if limit == "memory.limit_in_bytes" and folder.is_dir():
            return folder, limit
    for folder, limit in cgroups:
        control = folder / "cgroup.subtree_control"
        if limit == "memory.max" and control.is_file() and "memory" in control.read_text():
            return folder, limit
    return None


def join_own(limit: int) -> Path | None:
    """Make a cgroup for this process (a worker, just forked) with `limit` bytes and move into it; its
    folder, or None where that is not possible."""
    found = own_memory_cgroup()
    if found is None:
        return None
    parent, limit_file = found
    folder = parent / f"{PREFIX}{os.getpid()}"
    try:
        folder.mkdir(exist_ok=True)
        (folder / limit_file).write_text(str(limit))
        (folder / "cgroup.procs").write_text(str(os.getpid()))
    except OSError:
        remove(folder)
        return None
    return folder


def remove(folder: Path | None) -> None:
    """Remove a gone worker's cgroup (empty once the process has exited)."""
    if folder is None:
        return
    try:
        folder.rmdir()
    except OSError:
        pass


def folder_of(pid: int) -> Path | None:
    found = own_memory_cgroup()
    return found[0] / f"{PREFIX}{pid}" if found else None
