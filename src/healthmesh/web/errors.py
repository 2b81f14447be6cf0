"""Errors of the web pages, drawn as a tree::

    HealthmeshError
    └── PageError            a page cannot be shown; ``status`` and a message for people
        ├── SignInRequired   no valid session: the page redirects to the sign-in flow
        ├── CsrfRejected     a form post without the session's CSRF token (403)
        └── NotForYourRole   signed in, but the page is for another role (403)

Every other :class:`~healthmesh.errors.HealthmeshError` raised while building a page
(a refused read, an invalid consent choice) is shown as an error page with its status;
no page ever answers with a traceback.
"""

from __future__ import annotations

from healthmesh.errors import HealthmeshError

__all__ = ["CsrfRejected", "NotForYourRole", "PageError", "SignInRequired"]


class PageError(HealthmeshError):
    """A page that cannot be shown, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class SignInRequired(PageError):
    """No session, or one that can no longer be refreshed."""

    def __init__(self, message: str = "Please sign in.") -> None:
        super().__init__(message, 401)


class CsrfRejected(PageError):
    """A form post that does not carry this session's CSRF token."""

    def __init__(self, message: str = "This form has expired; reload the page and try "
                 "again.") -> None:
        super().__init__(message, 403)


class NotForYourRole(PageError):
    """A signed-in user asked for a page of another role."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 403)
