"""Per-form tokens for the pointer forms (rollback, canary promote / abort): the lock against forged posts.

Why not Origin / Referer alone: a request with neither, or with `Origin: null` (sandboxed frames,
privacy redirects), names no site at all, and the login cookie still goes with it. The token is an
HMAC, keyed by Airflow's own [api] secret_key (shared by every api-server, so any replica checks it),
of the user and the login credential the page was loaded with: another site cannot read it from our
page, another login's page does not carry it, and it dies with the login. Nothing is stored.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
from fastapi import HTTPException, Request

FIELD = "csrf_token"
_PURPOSE = b"feedloop pointer forms\x00"


def issue(request: Request, user: Any) -> str:
    """The token a page loaded by this request's login puts in its forms."""
    return token_for(_secret(), user_id=str(user.get_id()), login=_login(request))


def check(request: Request, user: Any, token: str) -> None:
    """Refuse (403) a state-changing form without this login's token; nothing else is looked at first."""
    if not token:
        raise HTTPException(403, f"the form carries no {FIELD}: a pointer change is accepted only from a Models "
                                 "page this login loaded (a form posted from another site has none); nothing was "
                                 "applied: reload the Models view and submit again")
    if not hmac.compare_digest(token, issue(request, user)):
        raise HTTPException(403, f"the form's {FIELD} is not this login's (the page was loaded by another login, "
                                 "or you signed in again since); nothing was applied: reload the Models view and "
                                 "submit again")


def token_for(secret: bytes, *, user_id: str, login: str) -> str:
    """HMAC-SHA256 over (user, sha256 of the login credential): bound to both, reveals neither."""
    session = hashlib.sha256(login.encode()).hexdigest()
    return hmac.new(secret, _PURPOSE + f"{user_id}\x00{session}".encode(), hashlib.sha256).hexdigest()


def _login(request: Request) -> str:
    """The credential Airflow's get_user trusts for this request: a bearer token first, else the cookie."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials:
        return credentials
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")


@lru_cache(maxsize=1)
def _secret() -> bytes:
    from airflow.configuration import conf

    return conf.get("api", "secret_key").encode()
