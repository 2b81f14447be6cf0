"""Helpers of the web page tests: signing in through the node's OAuth pages, in process
(:func:`sign_in`) and in a real headless Chromium (:mod:`tests.browser.chromium`)."""

from __future__ import annotations

import functools
import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from anyio.from_thread import start_blocking_portal

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Pages:
    """A synchronous client of an ASGI app in process (starlette's TestClient warns, and
    warnings are errors here): httpx's AsyncClient driven through an anyio portal."""

    def __init__(self, portal: Any, app: Any, base_url: str) -> None:
        self.portal = portal
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                        base_url=base_url)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("follow_redirects", True)
        return self.portal.call(functools.partial(self.client.get, url, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("follow_redirects", False)
        return self.portal.call(functools.partial(self.client.post, url, **kwargs))


@contextmanager
def pages(app: Any, base_url: str = "http://node") -> Iterator[Any]:
    """``with pages(app) as new: alice = new()`` — in-process browsers (own cookies)."""
    with start_blocking_portal() as portal:
        made: list[Pages] = []

        def new() -> Pages:
            made.append(Pages(portal, app, base_url))
            return made[-1]

        try:
            yield new
        finally:
            for client in made:
                portal.call(client.client.aclose)


def sign_in(client: Pages, username: str, password: str = PASSWORD,
            next_url: str = "/web/") -> str:
    """Sign in as a person would (sign-in link, the node's sign-in form, callback);
    returns the path the pages sent the browser to afterwards."""
    start = client.get(f"/web/signin?next={next_url}", follow_redirects=False)
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    form_page = client.get(authorize)
    assert form_page.status_code == 200, form_page.text
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                             form_page.text))
    hidden = {k: html.unescape(v) for k, v in hidden.items()}
    posted = client.post("/auth/authorize", data={**hidden, "username": username,
                                                   "password": password},
                         follow_redirects=False)
    assert posted.status_code == 303, posted.text
    callback = client.get(posted.headers["location"], follow_redirects=False)
    assert callback.status_code == 303, callback.text
    return urlsplit(callback.headers["location"]).path


def csrf_of(page_html: str) -> str:
    found = CSRF.search(page_html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


SESSION_CSRF = "c" * 43


def session_headers(node: Any, role: str, *, patient: str | None = None,
                    org: str | None = None) -> dict[str, str]:
    """A Cookie header of a signed-in page session (an access token the node's OAuth
    server minted for a ``role`` user, and a CSRF token equal to :data:`SESSION_CSRF`)."""
    from healthmesh.auth import ROLES, User, parse_scopes
    from healthmesh.web.session import first_party_client

    client = first_party_client(node)
    scopes, purpose = ROLES[role]
    user = User(f"{role}-user", role, org, patient, False)
    issued = node.auth.server.mint(client, parse_scopes(scopes), purpose, user=user,
                                   via="test")
    return {"Cookie": f"hm_access={issued.access_token}; hm_csrf={SESSION_CSRF}"}
