"""Who may see the dashboard and which POSTs are genuine.

* With a token, a request is let in by ``Authorization: Bearer <token>`` or by the session
  cookie the login form sets (an HMAC of the token, so the cookie is not the token). Without
  one, the dashboard trusts whatever the hosting app put in front of it.
* Every POST carries the CSRF token: a random per-browser value in a ``SameSite=Strict``
  cookie that the form repeats in a hidden field (double submit); a request whose
  ``Origin`` names another host is refused as well. Bearer requests carry no ambient
  credential a third-party page could ride on, so they need no CSRF field.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Optional
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = ["Guard", "AUTH_COOKIE", "CSRF_COOKIE", "CSRF_FIELD"]

AUTH_COOKIE = "omniq_dash_auth"
CSRF_COOKIE = "omniq_dash_csrf"
CSRF_FIELD = "csrf"


class Guard:
    """Authentication and CSRF checks for one dashboard app."""

    def __init__(self, token: Optional[str]) -> None:
        if token is not None and not token:
            raise ValueError("token must be a non-empty string or None")
        self._token = token
        self._session = (
            hmac.new(token.encode(), b"omniq-fast dashboard session", hashlib.sha256).hexdigest()
            if token else ""
        )

    @property
    def required(self) -> bool:
        return self._token is not None

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        return (
            self._token is not None and scheme.lower() == "bearer"
            and hmac.compare_digest(value.strip().encode(), self._token.encode())
        )

    def authenticated(self, request: Request) -> bool:
        if self._token is None:
            return True
        cookie = request.cookies.get(AUTH_COOKIE, "")
        return self.bearer_ok(request) or hmac.compare_digest(cookie, self._session)

    def token_matches(self, candidate: str) -> bool:
        return self._token is not None and hmac.compare_digest(
            candidate.encode(), self._token.encode()
        )

    def log_in(self, response: Response, path: str, secure: bool) -> None:
        response.set_cookie(AUTH_COOKIE, self._session, path=path, httponly=True,
                            samesite="strict", secure=secure)

    @staticmethod
    def log_out(response: Response, path: str) -> None:
        response.delete_cookie(AUTH_COOKIE, path=path)

    @staticmethod
    def csrf_token(request: Request) -> str:
        """This browser's CSRF token (a new one if it has none yet; see :meth:`keep_csrf`)."""
        token = request.cookies.get(CSRF_COOKIE, "")
        if len(token) < 32:
            token = getattr(request.state, "new_csrf", "") or secrets.token_urlsafe(32)
            request.state.new_csrf = token
        return token

    @staticmethod
    def keep_csrf(request: Request, response: Response, path: str, secure: bool) -> None:
        """Set the CSRF cookie if :meth:`csrf_token` made a new token for this request."""
        token = getattr(request.state, "new_csrf", "")
        if token:
            response.set_cookie(CSRF_COOKIE, token, path=path, httponly=True,
                                samesite="strict", secure=secure)

    def post_ok(self, request: Request, form_token: str) -> bool:
        """Whether a POST is genuine: same-origin and carrying this browser's token."""
        origin = request.headers.get("origin")
        if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
            return False
        if self.bearer_ok(request):
            return True
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return len(cookie) >= 32 and hmac.compare_digest(cookie, form_token)
