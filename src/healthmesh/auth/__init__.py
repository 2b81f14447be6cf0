"""Authentication and authorisation of a node's users and apps (OAuth 2.0 / SMART v2).

:class:`NodeAuth` bundles a node's OAuth records (:mod:`.store`), its token signer
(:mod:`.tokens`) and its authorization server (:mod:`.server`); scopes are parsed and
checked by :mod:`.scopes`, and enforced per resource by the egress gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from healthmesh.auth.scopes import InsufficientScope, InvalidScope, Scope, ScopeSet, parse_scopes
from healthmesh.auth.server import AuthServer, OAuthError, TokenResponse, pkce_challenge
from healthmesh.auth.store import ROLES, AuthStore, Client, User
from healthmesh.auth.tokens import AccessClaims, TokenService, Unauthorized

__all__ = [
    "ROLES", "AccessClaims", "AuthServer", "AuthStore", "Client", "InsufficientScope",
    "InvalidScope", "NodeAuth", "OAuthError", "Scope", "ScopeSet", "TokenResponse",
    "TokenService", "Unauthorized", "User", "parse_scopes", "pkce_challenge",
]

AUTH_FILE = "auth.sqlite"


class NodeAuth:
    """The OAuth parts of one node folder, opened lazily (most commands never need them)."""

    def __init__(self, folder: Path, audit: Any, ttl: int) -> None:
        self.folder = folder
        self.audit = audit
        self.ttl = ttl
        self._tokens: TokenService | None = None
        self._store: AuthStore | None = None

    @property
    def tokens(self) -> TokenService:
        if self._tokens is None:
            self._tokens = TokenService(self.folder)
        return self._tokens

    @property
    def store(self) -> AuthStore:
        if self._store is None:
            self._store = AuthStore(self.folder / AUTH_FILE)
        return self._store

    @property
    def server(self) -> AuthServer:
        return AuthServer(self.store, self.tokens, self.audit, self.ttl)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
