"""A fixed pool of runtime instances: concurrent requests never share an interpreter.

Two kinds of instance, because the best thread count depends on the load:

- `instances`: the pool proper, `size` of them with few threads each. Under
  load they run side by side and the cores are shared out between requests.
- `solo` (optional): one instance with many threads, for a request that
  arrives when nothing else is running: it gets every core, so it finishes
  sooner. Under load it stays out of the way, because multi-threaded
  inference spends CPU on synchronising its threads, CPU that concurrent
  requests need. Measured in process on 2 cores with int8 MobileNetV2 224
  and a 640x480 JPEG: 2 threads cut a lone request's inference from 1.6 to
  0.9 ms, while two requests at a time on two 2-thread instances cost 3.9 ms
  of CPU each against 3.3 ms on two 1-thread instances (the latter is
  benchmarks/bench_server.py's "2 side by side" row).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from .errors import Busy


class RuntimePool:
    def __init__(self, factory, size: int, solo_factory=None):
        if size < 1:
            raise ValueError(f"pool size must be at least 1. Received: {size}")
        self.size = size
        self.instances = [factory() for _ in range(size)]
        self.solo = solo_factory() if solo_factory else None
        # LIFO: under light load the same, cache-warm instance keeps serving.
        self._free = list(reversed(self.instances))
        self._solo_free = self.solo is not None
        self._busy = 0  # instances in use
        self._active = 0  # requests between track() and their end: decoding counts, not only inference
        self._cond = threading.Condition()

    @property
    def first(self):
        return self.instances[0]

    @property
    def all(self) -> list:
        return self.instances + ([self.solo] if self.solo is not None else [])

    @contextmanager
    def track(self):
        """Count a request from its start (decoding uses the cores too), so that the solo instance
        goes only to a request that is really alone, not to one whose company is still decoding."""
        with self._cond:
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1

    def _take(self):
        if self._busy == 0 and self._active <= 1 and self._solo_free:
            self._solo_free = False
            return self.solo
        if self._free:
            return self._free.pop()
        return None  # every pooled instance is busy: wait for one, rather than oversubscribe with the solo one

    def _give_back(self, inst) -> None:
        if inst is self.solo:
            self._solo_free = True
        else:
            self._free.append(inst)

    @contextmanager
    def acquire(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            inst = self._take()
            while inst is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Busy(f"All {self.size} model instances stayed busy for {timeout:.0f} s; try again")
                self._cond.wait(left)
                inst = self._take()
            self._busy += 1
        try:
            yield inst
        finally:
            with self._cond:
                self._busy -= 1
                self._give_back(inst)
                self._cond.notify()
