"""The server's request context: one per HTTP request, handed to the service.

Memory is reserved against the server's budget here and nowhere else
(`admit`), and released once, when the request ends (`close`). The body, a
JSON parse's peak and the decoded pixels are each admitted through it.
"""

from __future__ import annotations

import time

from edge_core.service import RequestContext

from .budget import Budget


class ServerRequest(RequestContext):
    def __init__(self, budget: Budget, timeout_s: float, request_id: str):
        super().__init__(deadline=time.monotonic() + timeout_s)
        self.budget = budget
        self.request_id = request_id
        self.started = time.perf_counter()
        self.reserved: list[int] = []
        self.status = 500  # until a response is made
        self.bytes_out = 0
        self.error: str | None = None

    def admit(self, nbytes: int, what: str) -> None:
        self.reserved.append(self.budget.reserve(nbytes, what))

    def close(self) -> None:
        """Give back every reservation; safe to call twice."""
        while self.reserved:
            self.budget.release(self.reserved.pop())
