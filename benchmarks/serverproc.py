"""What every benchmark that starts a server process needs: a port, readiness, memory, a clean stop.

Benchmarks run as scripts (`python benchmarks/NAME.py`), so this folder is on
sys.path and they `from serverproc import ...`.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0, t0: float | None = None) -> float:
    """Seconds from t0 (default: now) until `url` answers 200; RuntimeError if the server dies or never does."""
    t0 = time.perf_counter() if t0 is None else t0
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:  # not listening yet, or a 4xx "not ready"
            time.sleep(0.05)
    raise RuntimeError(f"{url}: not ready in {timeout} s")


def memory_kb(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/PID/status in kB, e.g. memory_kb(pid, "VmRSS", "VmHWM"); {} if the process is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in keys:
                out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def process_tree(pid: int) -> list[int]:
    """A process and its live children (a supervisor's workers), parent first."""
    kids = []
    try:
        for t in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(c) for c in (t / "children").read_text().split()]
    except OSError:
        pass
    return [pid, *kids]


def pss_kb(pid: int) -> int | None:
    """Proportional set size in kB (shared pages divided among the processes that map them), or None
    where the kernel has no /proc/PID/smaps_rollup (before Linux 4.14) or the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None
