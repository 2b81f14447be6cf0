"""OAuth 2.0 / SMART routes: discovery, JWKS, token endpoint and the sign-in page.

- ``GET /.well-known/smart-configuration`` — SMART App Launch v2 discovery.
- ``GET /auth/jwks`` — the public key that signs the node's access tokens.
- ``POST /auth/token`` — ``client_credentials`` (with ``client_assertion``),
  ``authorization_code`` (with PKCE ``code_verifier``) and ``refresh_token`` grants;
  errors as RFC 6749 JSON (``error``, ``error_description``).
- ``GET|POST /auth/authorize`` — the sign-in form of the authorization code flow
  (password and, when enrolled, a TOTP code); redirects only to registered URIs.
"""

from __future__ import annotations

import html
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from healthmesh.api.openapi import responses
from healthmesh.auth.server import OAuthError
from healthmesh.auth.store import Client
from healthmesh.node import Node

__all__ = ["router", "well_known"]

router = APIRouter(prefix="/auth", tags=["Authorization (OAuth 2.0 / SMART)"],
                   responses=responses((303, "Redirect to the client with a code", None),
                                       (400, "OAuth error (JSON) or error page (HTML)", None),
                                       (401, "Invalid client (JSON) or failed sign-in (HTML)",
                                        None)))
well_known = APIRouter(tags=["Authorization (OAuth 2.0 / SMART)"])
MAX_FORM_BYTES = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json",
                    headers=_NO_STORE)


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form (the OAuth endpoints take nothing else)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send application/x-www-form-urlencoded")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise OAuthError("invalid_request", "the form is too large")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the form is not valid urlencoded UTF-8") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise OAuthError("invalid_request", f"parameter '{key[:40]}' is repeated")
        form[key] = value
    return form


@well_known.get("/.well-known/smart-configuration", summary="SMART configuration")
def smart_configuration(request: Request) -> Response:
    origin = _origin(request)
    return _json({
        "issuer": _node(request).auth.tokens.audience,
        "jwks_uri": f"{origin}/auth/jwks",
        "authorization_endpoint": f"{origin}/auth/authorize",
        "token_endpoint": f"{origin}/auth/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "EdDSA"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "scopes_supported": ["openid", "fhirUser", "launch/patient", "offline_access",
                             "patient/*.rs", "user/*.rs", "user/*.cruds", "system/*.rs",
                             "system/*.cruds"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "capabilities": ["launch-standalone", "client-public",
                         "client-confidential-asymmetric", "permission-v2",
                         "permission-patient", "permission-user", "context-standalone-patient"],
        "healthmesh_purpose_of_use": "ask with the 'purpose' parameter (HL7 v3 ActReason)",
    })


@router.get("/jwks", summary="The node's token signing key (JWK Set)")
def jwks(request: Request) -> Response:
    return _json(_node(request).auth.tokens.jwks())


@router.post("/token", summary="Token endpoint (client_credentials, authorization_code, "
             "refresh_token)")
async def token(request: Request) -> Response:
    try:
        form = await _form(request)
        server = _node(request).auth.server
        grant = form.get("grant_type")
        if grant == "client_credentials":
            issued = server.client_credentials(form, f"{_origin(request)}/auth/token")
        elif grant == "authorization_code":
            issued = server.authorization_code(form)
        elif grant == "refresh_token":
            issued = server.refresh(form)
        else:
            raise OAuthError("unsupported_grant_type",
                             f"grant_type '{str(grant)[:40]}' is not supported")
    except OAuthError as exc:
        headers = {**_NO_STORE}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
        return Response(orjson.dumps(exc.body()), status_code=exc.status,
                        media_type="application/json", headers=headers)
    return _json(issued.body())


# -- the sign-in page ---------------------------------------------------------------

_PARAMS = ("response_type", "client_id", "redirect_uri", "scope", "state", "aud",
           "code_challenge", "code_challenge_method", "purpose")


def _checked_client(request: Request, params: dict[str, str]) -> Client:
    """The client of an authorize request, checked before anything redirects."""
    client = _node(request).auth.store.client(params.get("client_id", "")[:128])
    if client is None or client.disabled:
        raise OAuthError("invalid_client", "unknown client_id")
    if params.get("redirect_uri") not in client.redirect_uris:
        raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be 'code'")
    if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
        raise OAuthError("invalid_request", "PKCE is required: code_challenge with S256")
    return client


def _page(params: dict[str, str], client: Client, message: str = "",
          status: int = 200) -> HTMLResponse:
    hidden = "\n".join(
        f'<input type="hidden" name="{k}" value="{html.escape(params.get(k, ""))}">'
        for k in _PARAMS if params.get(k))
    note = f'<p role="alert" class="error">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in — healthmesh</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
label{{display:block;margin-top:1rem}}input{{font-size:1rem;padding:.4rem;width:100%}}
button{{margin-top:1.5rem;font-size:1rem;padding:.5rem 1.5rem}}.error{{color:#a00000}}</style>
</head><body><main><h1>Sign in</h1>
<p><strong>{html.escape(client.name or client.client_id)}</strong> asks for access:
<code>{html.escape(params.get("scope", ""))}</code></p>{note}
<form method="post" action="/auth/authorize">{hidden}
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<label for="otp">One-time code (if you use two-factor sign-in)</label>
<input id="otp" name="otp" inputmode="numeric" autocomplete="one-time-code">
<button type="submit">Sign in and allow</button></form></main></body></html>"""
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)


def _error_page(exc: OAuthError) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Sign-in error"
        f"</title></head><body><main><h1>This sign-in request cannot be used</h1>"
        f"<p>{html.escape(exc.description)}</p></main></body></html>", status_code=400,
        headers=_NO_STORE)


@router.get("/authorize", summary="Sign-in page (authorization code flow with PKCE)",
            response_class=HTMLResponse)
def authorize_page(request: Request) -> Response:
    params = {k: request.query_params.get(k, "")[:2048] for k in _PARAMS}
    try:
        client = _checked_client(request, params)
    except OAuthError as exc:
        return _error_page(exc)
    return _page(params, client)


@router.post("/authorize", summary="Sign in and approve (form post)",
             response_class=HTMLResponse)
async def authorize(request: Request) -> Response:
    try:
        form = await _form(request)
        params = {k: form.get(k, "")[:2048] for k in _PARAMS}
        client = _checked_client(request, params)
    except OAuthError as exc:
        return _error_page(exc)
    node = _node(request)
    user = node.auth.store.check_password(form.get("username", "")[:128],
                                          form.get("password", "")[:1024],
                                          form.get("otp") or None)
    if user is None:
        node.auth.server._audit(form.get("username", "")[:128] or "anonymous", "sign-in", 401,
                                reason="wrong user name, password or one-time code")
        return _page(params, client, "The user name, password or one-time code is wrong "
                     "(or the account is locked for a few minutes).", 401)
    try:
        code = node.auth.server.authorize(client, user, params)
    except OAuthError as exc:
        query = {"error": exc.error, "error_description": exc.description}
    else:
        query = {"code": code}
    if params.get("state"):
        query["state"] = params["state"]
    return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", status_code=303,
                            headers=_NO_STORE)
