"""A fixed pool of runtime instances: concurrent requests never share an interpreter."""

from __future__ import annotations

import queue
from contextlib import contextmanager

from .errors import ApiError


class RuntimePool:
    def __init__(self, factory, size: int):
        if size < 1:
            raise ValueError(f"pool size must be at least 1. Received: {size}")
        self.size = size
        self.instances = [factory() for _ in range(size)]
        # LIFO: under light load the same, cache-warm instance keeps serving.
        self._free: queue.LifoQueue = queue.LifoQueue()
        for inst in self.instances:
            self._free.put(inst)

    @property
    def first(self):
        return self.instances[0]

    @contextmanager
    def acquire(self, timeout: float = 30.0):
        try:
            inst = self._free.get(timeout=timeout)
        except queue.Empty:
            raise ApiError(503, f"All {self.size} model instances stayed busy for {timeout:.0f} s; try again") from None
        try:
            yield inst
        finally:
            self._free.put(inst)
