"""The route class of every page: errors become HTML pages, never JSON or tracebacks.

The node's app answers errors as FHIR OperationOutcomes (right for the API, wrong for a
person). Pages use :class:`PageRoute`, which catches errors raised while building a page:
no session → a redirect to the sign-in flow; a :class:`PageError` or any other
:class:`~healthmesh.errors.HealthmeshError` (a FhirError carries its HTTP status) → an
error page with that status; anything else → a 500 page naming a reference that the
log carries with the traceback.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from healthmesh.errors import FhirError, HealthmeshError
from healthmesh.web.errors import PageError, SignInRequired
from healthmesh.web.render import html_page, redirect

__all__ = ["PageRoute", "error_page"]

log = logging.getLogger("healthmesh.web")


def error_page(request: Request, status: int, message: str) -> Response:
    return html_page(request, "error.html", status=status, status_code=status, message=message)


class PageRoute(APIRoute):
    """An APIRoute whose errors are rendered as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                if request.method == "GET":
                    target = request.url.path + (f"?{request.url.query}"
                                                 if request.url.query else "")
                    return redirect(request, f"/web/signin?next={quote(target, safe='')}")
                return error_page(request, 401, "Your session has ended; sign in again.")
            except PageError as exc:
                return error_page(request, exc.status, str(exc))
            except FhirError as exc:
                return error_page(request, exc.status, str(exc))
            except HealthmeshError as exc:
                return error_page(request, 400, str(exc))
            except RequestValidationError:
                return error_page(request, 400, "The request is not valid.")
            except Exception:
                ref = uuid.uuid4().hex[:12]
                log.exception("page error (ref %s) on %s %s", ref, request.method,
                              request.url.path)
                return error_page(request, 500, f"Internal error (reference {ref}).")

        return page_handler
