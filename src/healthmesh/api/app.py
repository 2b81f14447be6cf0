"""The node's ASGI application: FHIR routes plus error translation.

``create_app(node)`` returns a FastAPI app serving ``/fhir`` (FHIR R4 REST)
and ``/docs`` (OpenAPI). Every error leaves as an OperationOutcome with the
status the error carries; unexpected errors give a 500 OperationOutcome that
names the request id but never a traceback or an internal path.
"""

from __future__ import annotations

import logging
import uuid

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthmesh import __version__
from healthmesh.api import auth, export, fhir, patient
from healthmesh.api import terminology as terminology_api
from healthmesh.api.limits import RateLimits, TooManyRequests, harden
from healthmesh.errors import FhirError, Issue, operation_outcome
from healthmesh.node import Node
from healthmesh.web import install_node_pages

__all__ = ["create_app"]

log = logging.getLogger("healthmesh.api")


def _outcome(status: int, code: str, message: str) -> Response:
    body = operation_outcome([Issue("error", code, message)])
    return Response(orjson.dumps(body), status_code=status, media_type=fhir.FHIR_JSON)


def create_app(node: Node, *, insecure_dev: bool = False) -> FastAPI:
    """The FastAPI application serving ``node``.

    Every route but discovery (``/fhir/metadata``, ``/.well-known/*``, ``/auth/*``) and
    the documentation pages requires an access token; ``insecure_dev`` also accepts the
    unauthenticated ``X-Requester`` headers and logs a warning on every request.
    No CORS headers are sent: browsers refuse cross-origin calls unless a deployment
    adds them deliberately.
    """
    # FastAPIOffline serves the Swagger UI and ReDoc assets from the package:
    # nodes run without internet access, so /docs must not load from a CDN.
    app = FastAPIOffline(
        title=f"healthmesh node — {node.settings.name}",
        version=__version__,
        description="FHIR R4 REST API of a healthmesh node.",
    )
    app.state.node = node
    app.state.insecure_dev = insecure_dev
    app.state.limits = RateLimits(node.settings.rate_limit_per_minute)
    app.include_router(auth.well_known)
    app.include_router(auth.router)
    signed_in = [Depends(fhir.authenticated)]  # 401 before any body or parameter is read
    app.include_router(fhir.public)  # /fhir/metadata
    # export and terminology before fhir: /fhir/$export and CodeSystem/$lookup are no reads
    app.include_router(export.router, dependencies=signed_in)
    app.include_router(terminology_api.router, dependencies=signed_in)
    app.include_router(fhir.router, dependencies=signed_in)
    app.include_router(patient.router, dependencies=signed_in)
    install_node_pages(app)  # /web: patient portal, steward console

    harden(app, app.state.limits, lambda status, text: _outcome(status, "throttled", text),
           warning="INSECURE DEV MODE (no authentication for X-Requester callers)"
           if insecure_dev else None)

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="healthmesh"'
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        return Response(orjson.dumps(exc.outcome()), status_code=exc.status,
                        media_type=fhir.FHIR_JSON, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "processing"
        if exc.status_code == 405:
            code = "not-supported"
        return _outcome(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def request_error(request: Request, exc: RequestValidationError) -> Response:
        return _outcome(400, "invalid", "Invalid request")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        ref = uuid.uuid4().hex[:12]
        log.exception("unexpected error (ref %s) on %s %s", ref, request.method, request.url.path)
        return _outcome(500, "exception", f"Internal error (reference {ref})")

    @app.get("/consent-policy", tags=["Consent"], summary="The node's consent policy")
    def consent_policy() -> Response:
        """What happens per purpose of use when a patient has given no consent."""
        body = {"policy": node.policy.as_dict(), "plain_language": node.policy.describe()}
        return fhir.json_response(body)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        body = {"name": node.settings.name, "fhir": "/fhir", "docs": "/docs",
                "version": __version__}
        return fhir.json_response(body)

    return app
