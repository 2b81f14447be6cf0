"""Hardening shared by the node and hub applications: rate limits and security headers.

Rate limits (the ``limits`` package) are moving windows of one minute kept in memory:
``rate_limit_per_minute`` requests per access-token subject and per client IP address,
and a tighter limit on the sign-in and token endpoints (password guessing). Past a limit
the answer is 429 with Retry-After. Every response carries security headers; HTML pages
also a Content-Security-Policy. No CORS headers are ever added.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from healthmesh.errors import FhirError

__all__ = ["HTML_POLICY", "SECURITY_HEADERS", "RateLimits", "TooManyRequests", "harden"]

AUTH_PER_MINUTE = 30


class TooManyRequests(FhirError):
    """429: a client or address made too many requests; retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, [], 429, "throttled")
        self.retry_after = retry_after


class RateLimits:
    """The node's request budgets."""

    def __init__(self, per_minute: int) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._general = RateLimitItemPerMinute(per_minute)
        self._auth = RateLimitItemPerMinute(min(AUTH_PER_MINUTE, per_minute))

    def _hit(self, item: RateLimitItemPerMinute, kind: str, key: str) -> None:
        if not self._limiter.hit(item, kind, key):
            reset = self._limiter.get_window_stats(item, kind, key).reset_time
            wait = max(1, int(reset - time.time()) + 1)
            raise TooManyRequests(f"Too many requests from this {kind}; retry in {wait} s", wait)

    def address(self, ip: str, path: str) -> None:
        """Count one request from ``ip`` (sign-in and token requests count twice: both
        the general and the tighter authentication budget)."""
        self._hit(self._general, "address", ip)
        if path.startswith("/auth/token") or path.startswith("/auth/authorize"):
            self._hit(self._auth, "sign-in address", ip)

    def client(self, agent: str) -> None:
        """Count one request by an authenticated user or client."""
        self._hit(self._general, "client", agent)


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
# the API docs pages load their scripts from the server itself (FastAPIOffline)
HTML_POLICY = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
               "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'")


def harden(app: FastAPI, limits: RateLimits, refuse: Callable[[int, str], Response], *,
           warning: str | None = None) -> None:
    """Add the per-address rate limit and the security headers to ``app``; ``refuse``
    builds the app's own error response; ``warning`` is logged on every request."""
    log = logging.getLogger("healthmesh.api")

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Any]]) -> Response:
        if warning:
            log.warning("%s: %s %s", warning, request.method, request.url.path)
        try:
            limits.address(request.client.host if request.client else "-", request.url.path)
        except TooManyRequests as exc:
            response = refuse(429, str(exc))
            response.headers["Retry-After"] = str(exc.retry_after)
        else:
            response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", HTML_POLICY)
        return response
