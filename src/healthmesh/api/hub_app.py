"""The hub's ASGI application: a thin HTTP layer over :class:`healthmesh.network.hub.Hub`.

Every route but ``/health`` and ``/network/*`` needs a request signed by a member
(``X-Healthmesh-Signature``). Two routes long-poll: a node agent's
``GET /agent/tasks?wait=S`` returns as soon as a task for it arrives, and a
requester's ``GET /tasks/{id}?wait=S`` as soon as every site has answered (or the
deadline passed). Errors are JSON ``{"error": message}`` with the hub's status. Requests
per address are rate-limited and responses carry security headers (api/limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi_offline import FastAPIOffline

from healthmesh import __version__
from healthmesh.api.limits import RateLimits, harden
from healthmesh.network.hub import MAX_WAIT, Hub, HubError
from healthmesh.web import install_hub_pages

__all__ = ["create_hub_app"]

MAX_BODY = 4 * 1024 * 1024
STEP = 0.25  # how often a long-poll re-checks its condition and the client connection


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class _Waiters:
    """Per-key asyncio events that wake long-polls when something changes."""

    def __init__(self) -> None:
        self.events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def event(self, key: str) -> asyncio.Event:
        """Take the event *before* checking the condition, then wait on that same event:
        a wake-up between the check and the wait is not lost."""
        return self.events[key]

    def wake(self, key: str) -> None:
        event = self.events.pop(key, None)
        if event is not None:
            event.set()

    @staticmethod
    async def wait(event: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


async def _capped_body(request: Request) -> bytes:
    """The request body, refused (413) as soon as it grows past MAX_BODY."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise HubError(f"request body over {MAX_BODY} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise HubError(f"request body over {MAX_BODY} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_hub_app(hub: Hub, *, hub_rate_limit: int = 6000) -> FastAPI:
    """The FastAPI application serving ``hub``."""
    app = FastAPIOffline(title="healthmesh hub", version=__version__,
                         description="Member registry, agreements and federated task broker.")
    harden(app, RateLimits(hub_rate_limit), lambda status, text: _json({"error": text}, status))
    waiters = _Waiters()

    async def sender(request: Request) -> tuple[str, bytes]:
        body = await _capped_body(request)
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return hub.authenticate(request.headers, request.method, path, body), body

    def parse(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HubError(f"body is not JSON: {exc}", 400) from None

    def wait_seconds(request: Request) -> float:
        try:
            return max(0.0, min(MAX_WAIT, float(request.query_params.get("wait", 0))))
        except ValueError:
            raise HubError("wait must be a number of seconds", 400) from None

    @app.exception_handler(HubError)
    async def hub_error(request: Request, exc: HubError) -> Response:
        return _json({"error": str(exc)}, exc.status)

    @app.get("/health")
    async def health() -> Response:
        return _json({"status": "ok", "version": __version__})

    @app.get("/network/ca")
    async def network_ca() -> Response:
        return Response(hub.directory.ca_pem, media_type="application/x-pem-file")

    @app.get("/network/crl")
    async def network_crl() -> Response:
        crl = hub.directory.crl()
        if crl is None:
            return Response(status_code=204)
        return Response(crl, media_type="application/x-pem-file")

    @app.get("/members")
    async def members(request: Request) -> Response:
        await sender(request)
        return _json({"members": hub.members()})

    @app.get("/agreements")
    async def agreements(request: Request) -> Response:
        await sender(request)
        return _json({"agreements": hub.state.agreements()})

    @app.get("/agreements/{agreement_id}")
    async def agreement(agreement_id: str, request: Request) -> Response:
        await sender(request)
        return _json(hub.agreement(agreement_id))

    @app.post("/agreements")
    async def put_agreement(request: Request) -> Response:
        org, body = await sender(request)
        return _json(hub.put_agreement(org, parse(body)), 201)

    @app.post("/tasks")
    async def submit(request: Request) -> Response:
        org, body = await sender(request)
        data = parse(body)
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            raise HubError("body must be {\"token\": <the task signed by the requester>}", 422)
        accepted = hub.submit(org, data["token"])
        for site in accepted["sites"]:
            waiters.wake(f"site:{site}")
        return _json(accepted, 201)

    @app.get("/tasks/{task_id}")
    async def task_status(task_id: str, request: Request) -> Response:
        org, _ = await sender(request)
        until = time.monotonic() + wait_seconds(request)
        while True:
            event = waiters.event(f"task:{task_id}")
            status = hub.status(org, task_id)
            remaining = until - time.monotonic()
            if status["done"] or remaining <= 0 or await request.is_disconnected():
                return _json(status)
            deadline_in = status["task"]["deadline"] - time.time()
            await waiters.wait(event, max(0.01, min(remaining, STEP * 4, deadline_in + 0.05)))

    @app.get("/agent/tasks")
    async def agent_tasks(request: Request) -> Response:
        org, _ = await sender(request)
        until = time.monotonic() + wait_seconds(request)
        try:
            while True:
                event = waiters.event(f"site:{org}")
                tasks = hub.take(org)
                if tasks or time.monotonic() >= until or await request.is_disconnected():
                    return _json({"tasks": tasks})
                await waiters.wait(event, STEP)
        finally:
            hub.state.seen(org)

    @app.get("/catalogue")
    async def catalogue(request: Request) -> Response:
        await sender(request)
        return _json({"datasets": hub.state.catalogue()})

    @app.post("/agent/catalogue")
    async def describe(request: Request) -> Response:
        org, body = await sender(request)
        hub.describe(org, parse(body))
        return _json({"accepted": True})

    @app.post("/agent/tasks/{task_id}/result")
    async def agent_result(task_id: str, request: Request) -> Response:
        org, body = await sender(request)
        hub.answer(org, task_id, parse(body))
        waiters.wake(f"task:{task_id}")
        return _json({"accepted": True})

    app.state.hub = hub
    install_hub_pages(app, hub.folder)  # /web/dashboard: public-health indicators
    return app
