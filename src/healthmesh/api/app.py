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
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from healthmesh import __version__
from healthmesh.api import export, fhir, patient
from healthmesh.errors import FhirError, Issue, operation_outcome
from healthmesh.node import Node

__all__ = ["create_app"]

log = logging.getLogger("healthmesh.api")


def _outcome(status: int, code: str, message: str) -> Response:
    body = operation_outcome([Issue("error", code, message)])
    return Response(orjson.dumps(body), status_code=status, media_type=fhir.FHIR_JSON)


def create_app(node: Node) -> FastAPI:
    """The FastAPI application serving ``node``."""
    # FastAPIOffline serves the Swagger UI and ReDoc assets from the package:
    # nodes run without internet access, so /docs must not load from a CDN.
    app = FastAPIOffline(
        title=f"healthmesh node — {node.settings.name}",
        version=__version__,
        description="FHIR R4 REST API of a healthmesh node.",
    )
    app.state.node = node
    app.include_router(export.router)  # before fhir: /fhir/$export is not /fhir/{rtype}
    app.include_router(fhir.router)
    app.include_router(patient.router)

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        return Response(
            orjson.dumps(exc.outcome()), status_code=exc.status, media_type=fhir.FHIR_JSON
        )

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
