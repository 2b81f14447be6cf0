"""The node's shared pages: home, sign-in and sign-out, language choice."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from healthmesh.web.render import LANG_COOKIE, LANGUAGES, html_page, redirect
from healthmesh.web.routing import PageRoute
from healthmesh.web.session import (
    caller,
    finish_signin,
    read_form,
    safe_next,
    sign_out,
    start_signin,
)

__all__ = ["router"]

router = APIRouter(prefix="/web", route_class=PageRoute, include_in_schema=False)
HOMES = {"patient": "/web/me", "steward": "/web/steward", "admin": "/web/steward"}


@router.get("/")
def home(request: Request) -> Response:
    """Signed in: the page of the caller's role; otherwise a welcome with sign-in."""
    found = caller(request)
    if found is not None and found.role in HOMES:
        return redirect(request, HOMES[found.role])
    return html_page(request, "home.html", signed_in=found is not None)


@router.get("/signin")
def signin(request: Request) -> Response:
    return redirect(request, start_signin(request, request.query_params.get("next")))


@router.get("/callback")
def callback(request: Request) -> Response:
    return redirect(request, finish_signin(request))


@router.post("/signout")
async def signout(request: Request) -> Response:
    await read_form(request)
    sign_out(request)
    return redirect(request, "/web/")


@router.get("/lang")
def choose_language(request: Request) -> Response:
    """Remember a page language (``?l=fr``) and go back to ``next``."""
    lang = request.query_params.get("l", "")
    target = safe_next(request.query_params.get("next"))
    if lang not in LANGUAGES:
        return redirect(request, target)
    request.state.web_cookies = {**getattr(request.state, "web_cookies", {}),
                                 LANG_COOKIE: (lang, 365 * 86400)}
    return redirect(request, target)
