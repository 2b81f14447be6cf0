"""Rendering pages: the Jinja2 environment, message catalogues, and page responses.

Templates live in ``web/templates`` and extend ``base.html``; text shown to people goes
through ``t("key")``, looked up in ``web/i18n/<lang>.json`` (English and French ship).
The catalogues are plain JSON rather than gettext ``.po`` files: gettext needs compiled
``.mo`` files, i.e. a build step, and the brief asks for none; a test checks that every
key used by a template exists in every catalogue.

The language is the ``hm_lang`` cookie (set by ``/web/lang``), else the best match of
the ``Accept-Language`` header, else English.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from healthmesh import __version__

__all__ = ["LANGUAGES", "catalogue", "html_page", "language", "redirect", "translator"]

HERE = Path(__file__).parent
LANGUAGES = {"en": "English", "fr": "Français"}
LANG_COOKIE = "hm_lang"
NO_STORE = {"Cache-Control": "no-store"}


@functools.cache
def catalogue(lang: str) -> dict[str, str]:
    """The messages of one language (``key -> text``)."""
    data = orjson.loads((HERE / "i18n" / f"{lang}.json").read_bytes())
    return {str(k): str(v) for k, v in data.items() if not k.startswith("_")}


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)``: the text of ``key`` in ``lang`` (English when missing there,
    its last part when missing everywhere), with ``{name}`` placeholders filled in."""
    own, english = catalogue(lang), catalogue("en")

    def t(key: str, **values: Any) -> str:
        # a dynamic key with no message (an uncommon purpose code) shows its last part
        text = own.get(key) or english.get(key) or key.rsplit(".", 1)[-1]
        return text.format(**values) if values else text

    return t


def language(request: Request) -> str:
    """The page language of a request (cookie, then Accept-Language, then English)."""
    chosen = request.cookies.get(LANG_COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    ranked: list[tuple[float, str]] = []
    for part in request.headers.get("accept-language", "").split(",")[:20]:
        tag, _, q = part.strip().partition(";q=")
        try:
            weight = float(q) if q else 1.0
        except ValueError:
            continue
        ranked.append((weight, tag.split("-")[0].lower()))
    for _, code in sorted(ranked, reverse=True):
        if code in LANGUAGES:
            return code
    return "en"


@functools.cache
def environment() -> Environment:
    env = Environment(loader=PackageLoader("healthmesh.web", "templates"),
                      autoescape=select_autoescape(["html"]), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.globals["version"] = __version__
    env.globals["languages"] = LANGUAGES
    return env


def apply_cookies(request: Request, response: Response) -> Response:
    """Set the cookies a request decided on (refreshed tokens, a new CSRF token)."""
    for name, (value, max_age) in getattr(request.state, "web_cookies", {}).items():
        if value is None:
            response.delete_cookie(name, path="/web")
        else:
            response.set_cookie(name, value, max_age=max_age, path="/web", httponly=True,
                                samesite="strict", secure=request.url.scheme == "https")
    return response


def html_page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """Render ``template`` for this request (language, signed-in caller, CSRF token)."""
    lang = language(request)
    from healthmesh.web.session import csrf_token  # the session module imports this one

    values = {"t": translator(lang), "lang": lang, "request": request,
              "path": request.url.path, "csrf": csrf_token(request),
              "caller": getattr(request.state, "web_caller", None),
              "site_name": _site_name(request), **context}
    body = environment().get_template(template).render(values)
    return apply_cookies(request, HTMLResponse(body, status_code=status, headers=NO_STORE))


def redirect(request: Request, url: str) -> Response:
    """A 303 See Other (after a form post, or to the sign-in flow)."""
    return apply_cookies(request, RedirectResponse(url, status_code=303, headers=NO_STORE))


def _site_name(request: Request) -> str:
    node = getattr(request.app.state, "node", None)
    if node is not None:
        return str(node.settings.name)
    return "healthmesh hub"
