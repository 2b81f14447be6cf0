"""Sessions of the node's web pages: sign-in through the node's own OAuth, and CSRF.

The pages are a built-in, first-party public client of the node (``healthmesh-web``):

1. ``GET /web/signin`` makes a PKCE verifier and a ``state``, keeps them in a short-lived
   HttpOnly cookie, and redirects to the node's ``/auth/authorize`` sign-in page (the
   same page and checks every OAuth app uses: password, TOTP, lock-out, audit).
2. ``GET /web/callback`` checks ``state`` and redeems the code with the verifier at the
   node's authorization server (:meth:`AuthServer.authorization_code`, the code path
   of ``POST /auth/token``); the access and refresh tokens go into HttpOnly,
   ``SameSite=Strict`` cookies scoped to ``/web`` — never into the page or its scripts.
3. Every page builds its caller from the access token with
   :func:`~healthmesh.gate.requester.requester_from_token`, exactly as the API does, so
   scopes, consent and audit apply unchanged. An expired access token is replaced with
   the refresh token (rotated on every use, as for any client).

The registered redirect URI is the path ``/web/callback``: the authorize page answers
with a relative redirect, so a code can only ever come back to the node's own origin.

CSRF: every form carries the ``hm_csrf`` cookie's random value; a post whose field does
not match (or whose ``Origin`` header names another origin) is refused. The session
cookies are ``SameSite=Strict`` as well.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from fastapi import Request

from healthmesh.auth import Client, OAuthError, TokenResponse, Unauthorized, pkce_challenge
from healthmesh.auth.tokens import AccessClaims
from healthmesh.gate.requester import Requester, requester_from_token
from healthmesh.node import Node
from healthmesh.web.errors import CsrfRejected, NotForYourRole, PageError, SignInRequired

__all__ = ["CLIENT_ID", "Caller", "caller", "csrf_token", "read_form", "signed_in_caller"]

CLIENT_ID = "healthmesh-web"
REDIRECT_URI = "/web/callback"
# the widest scopes the pages use; the authorization server narrows them to the role
SCOPES = ("patient/*.rs patient/Consent.cruds patient/QuestionnaireResponse.cru user/*.rs")
PURPOSES = ("PATRQT", "HOPERAT")
ACCESS, REFRESH, FLOW, CSRF = "hm_access", "hm_refresh", "hm_flow", "hm_csrf"
FLOW_SECONDS = 600
SESSION_SECONDS = 8 * 3600
MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 64


@dataclass(frozen=True, slots=True)
class Caller:
    """The signed-in person of one page request."""

    requester: Requester
    claims: AccessClaims

    @property
    def role(self) -> str:
        return self.claims.role or "client"

    @property
    def name(self) -> str:
        return self.claims.subject


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _set(request: Request, name: str, value: str | None, max_age: int | None = None) -> None:
    cookies = getattr(request.state, "web_cookies", None)
    if cookies is None:
        cookies = request.state.web_cookies = {}
    cookies[name] = (value, max_age)


def first_party_client(node: Node) -> Client:
    """The pages' OAuth client, registered in the node's store on first use."""
    wanted = Client(CLIENT_ID, "healthmesh web pages", None, SCOPES, PURPOSES, None,
                    (REDIRECT_URI,))
    found = node.auth.store.client(CLIENT_ID)
    if found != wanted:
        node.auth.store.add_client(wanted)
    return wanted


# -- sign-in flow ----------------------------------------------------------------------

def safe_next(value: str | None) -> str:
    """Only a path of the pages themselves may be a post-sign-in destination."""
    if value and value.startswith("/web/") and "//" not in value and "\\" not in value \
            and len(value) <= 512:
        return value
    return "/web/"


def start_signin(request: Request, next_url: str | None) -> str:
    """Remember a new PKCE verifier and state; the node's authorize URL to go to."""
    first_party_client(_node(request))
    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(24)
    _set(request, FLOW, f"{state}.{verifier}.{safe_next(next_url)}", FLOW_SECONDS)
    query = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
             "scope": SCOPES, "state": state, "code_challenge": pkce_challenge(verifier),
             "code_challenge_method": "S256"}
    return f"/auth/authorize?{urlencode(query)}"


def finish_signin(request: Request) -> str:
    """Redeem the code of the callback; store the tokens; the page to go to next."""
    flow = request.cookies.get(FLOW, "")
    state, _, rest = flow.partition(".")
    verifier, _, next_url = rest.partition(".")
    _set(request, FLOW, None)
    error = request.query_params.get("error")
    if error:
        reason = request.query_params.get("error_description", error)[:200]
        raise PageError(f"Sign-in was refused: {reason}", 400)
    given = request.query_params.get("state", "")
    if not state or not verifier or not hmac.compare_digest(state, given):
        raise PageError("This sign-in link is stale or was not started here; sign in again.", 400)
    form = {"client_id": CLIENT_ID, "code": request.query_params.get("code", "")[:512],
            "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    try:
        issued = _node(request).auth.server.authorization_code(form)
    except OAuthError as exc:
        raise PageError(f"Sign-in failed: {exc.description}", 400) from None
    _keep(request, issued)
    return safe_next(next_url)


def _keep(request: Request, issued: TokenResponse) -> None:
    _set(request, ACCESS, issued.access_token, SESSION_SECONDS)
    if issued.refresh_token:
        _set(request, REFRESH, issued.refresh_token, SESSION_SECONDS)
    request.cookies[ACCESS] = issued.access_token  # later look-ups in this request


def sign_out(request: Request) -> None:
    for name in (ACCESS, REFRESH, CSRF):
        _set(request, name, None)


# -- the caller of a page ----------------------------------------------------------------

def caller(request: Request) -> Caller | None:
    """The signed-in caller, from the verified access token (refreshed when expired);
    None when there is no usable session."""
    found: Caller | None = getattr(request.state, "web_caller", None)
    if found is not None:
        return found
    node = _node(request)
    token = request.cookies.get(ACCESS, "")
    claims = _verify(node, token) if token else None
    if claims is None and request.cookies.get(REFRESH):
        claims = _refreshed(request, node)
    if claims is None:
        return None
    token = request.cookies[ACCESS]
    requester = requester_from_token(token, node.auth.tokens, None)
    if requester.agent is not None:
        request.app.state.limits.client(requester.agent)
    found = Caller(requester, claims)
    request.state.web_caller = found
    return found


def _verify(node: Node, token: str) -> AccessClaims | None:
    try:
        return node.auth.tokens.verify(token)
    except Unauthorized:
        return None


def _refreshed(request: Request, node: Node) -> AccessClaims | None:
    form = {"client_id": CLIENT_ID, "refresh_token": request.cookies.get(REFRESH, "")[:512]}
    try:
        issued = node.auth.server.refresh(form)
    except OAuthError:
        _set(request, REFRESH, None)
        _set(request, ACCESS, None)
        return None
    _keep(request, issued)
    return _verify(node, issued.access_token)


def signed_in_caller(request: Request, *roles: str) -> Caller:
    """The caller, who must hold one of ``roles`` (raises SignInRequired/NotForYourRole)."""
    found = caller(request)
    if found is None:
        raise SignInRequired()
    if roles and found.role not in roles:
        raise NotForYourRole(f"This page is for the {' or '.join(roles)} role; you are "
                             f"signed in as {found.name} ({found.role}).")
    return found


# -- CSRF and forms ----------------------------------------------------------------------

def csrf_token(request: Request) -> str:
    """This browser's CSRF token (made, and set as a cookie, on first need)."""
    token = getattr(request.state, "web_csrf", None) or request.cookies.get(CSRF, "")
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        _set(request, CSRF, token, SESSION_SECONDS)
    request.state.web_csrf = token
    return token


async def read_form(request: Request) -> dict[str, list[str]]:
    """A small urlencoded form post, CSRF-checked (raises CsrfRejected or PageError)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise PageError("Send the form as application/x-www-form-urlencoded.", 415)
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise PageError("The form is too large.", 413)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise PageError("The form is not valid urlencoded UTF-8.", 400) from None
    form: dict[str, list[str]] = {}
    for key, value in pairs:
        form.setdefault(key[:64], []).append(value[:4096])
    _check_csrf(request, form.get("csrf", [""])[0])
    return form


def _check_csrf(request: Request, given: str) -> None:
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    # the node's Referrer-Policy (no-referrer) makes browsers send "Origin: null" on form
    # posts; that tells nothing, and the token and SameSite=Strict cookies still decide
    if origin is not None and origin not in ("null", own):
        raise CsrfRejected("This form was posted from another site.")
    expected = request.cookies.get(CSRF, "")
    if len(expected) < 32 or not hmac.compare_digest(expected, given):
        raise CsrfRejected()
