"""Who may use the admin console, with which role (docs/admin.md, "Auth").

`AdminAuth.authenticate` tries, in order: (1) `Authorization: Bearer` ADMIN_TOKEN (admin) or
ADMIN_READONLY_TOKEN (read), compared in constant time; a browser never sends it on its own,
so it needs no CSRF token (a wrong one grants nothing; the others are still tried, as an
OAuth2 proxy may pass a bearer of its own); (2) the login form's session cookie; (3) the user
in ADMIN_TRUSTED_USER_HEADER, believed only from ADMIN_TRUSTED_PROXIES (ADMIN_USERS, compared
ignoring the case of ASCII letters, are admins, others read); (4) local mode (`bot admin` on
loopback, nothing configured): a loopback peer naming a loopback host (not a DNS-rebound name).

Session cookie `sb_admin` = `<payload>.<signature>`: base64url JSON `{"r": role, "s": session
id, "e": expiry (Unix s), "t": token tag}` and its base64url HMAC-SHA256 under the session
secret. The tag, an HMAC of the token that made the session, must match the role's current
token: rotating (or removing) ADMIN_TOKEN ends its sessions. HttpOnly, SameSite=Strict,
Path=/admin, Max-Age=ADMIN_SESSION_TTL_S, Secure over HTTPS (or X-Forwarded-Proto: https
from a trusted proxy). The secret: ADMIN_SESSION_SECRET, else derived from ADMIN_TOKEN, else
random per process.

CSRF: forms carry `csrf_token(principal)`, an HMAC of the session id (random per login; a
keyed hash of the name for proxy users; per process in local mode), checked by handlers with
`check_csrf`; the middleware also refuses unsafe requests from another origin. The login
form (no session yet) uses a signed double submit: `login_csrf` gives the random nonce of
the `sb_admin_login` cookie (Path=/admin/login; `set_login_cookie`) and the form token, its
HMAC; `check_login_csrf` needs both to match. Another site can read neither.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urlsplit

from aiohttp import web

if TYPE_CHECKING:
    from bot.config import Settings

SESSION_COOKIE = "sb_admin"
LOGIN_COOKIE = "sb_admin_login"
#: How long the login form's nonce cookie lives, seconds (renewed by each visit to the form).
LOGIN_COOKIE_TTL_S = 24 * 3600
#: The request key the middleware stores the authenticated `Principal` under.
PRINCIPAL_KEY = "principal"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REALM = 'Bearer realm="switchboard-admin"'
#: Sent with every response of the console.
SECURITY_HEADERS = {
    "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"}
_SECRET_LABEL = b"switchboard-admin-session-secret-v1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_USER_CHARS = 256
#: ADMIN_USERS are compared with proxy users ignoring the case of ASCII letters only: Unicode
#: case folding makes other names equal ("boſs" and "\u212aate" fold to "boss", "kate").
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Role(StrEnum):
    READ = "read"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who makes a request. `session_id` binds CSRF tokens: the login session's random id,
    for proxy users a keyed hash of the user name, per process in local mode; "" for bearer."""

    name: str  # "admin-token", "readonly-token", the proxy's user, or "local"
    role: Role
    via: Literal["bearer", "session", "proxy", "local"]
    session_id: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


_TOKEN_NAMES = {Role.ADMIN: "admin-token", Role.READ: "readonly-token"}


def _now() -> float:
    return time.time()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _address(remote: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(remote or "")
    except ValueError:
        return None
    return getattr(addr, "ipv4_mapped", None) or addr


def _is_loopback_host(host: str) -> bool:
    """`host` (a Host header) names this machine: localhost, 127.0.0.0/8, [::1]."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:name.find("]")]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    addr = _address(name)
    return name == "localhost" or name.endswith(".localhost") or bool(addr and addr.is_loopback)


def _network(entry: str) -> Network:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"ADMIN_TRUSTED_PROXIES: {entry!r} is not an IP address or CIDR "
                         "network") from None


def safe_next(target: str | None, prefix: str = "/admin") -> str:
    """`target` when it is a path of the console (a relative URL under `prefix`, no `..`
    segment, which a browser resolves, "%2e%2e" too), else the console's start page: where
    the login form may send the browser afterwards."""
    home = prefix + "/"
    if not target or any(c in target for c in "\\\r\n\t") or target.startswith("//"):
        return home
    parts = urlsplit(target)
    under = (parts.path == prefix or parts.path.startswith(home)) \
        and ".." not in unquote(parts.path).split("/")
    return target if under and not (parts.scheme or parts.netloc) else home


class AdminAuth:
    """Authenticates requests to the console, signs sessions and CSRF tokens.

    Raises:
        ValueError: an entry of `trusted_proxies` is no address or CIDR network.
    """

    def __init__(self, *, admin_token: str | None, readonly_token: str | None,
                 trusted_user_header: str | None, trusted_proxies: Sequence[str],
                 admin_users: Sequence[str], session_secret: bytes | None,
                 session_ttl_s: int, local: bool = False, prefix: str = "/admin") -> None:
        self._tokens = {role: token.strip() for role, token in
                        ((Role.ADMIN, admin_token), (Role.READ, readonly_token))
                        if token and token.strip()}
        self._header = trusted_user_header or None
        self._proxies = [_network(p.strip()) for p in trusted_proxies if p.strip()]
        self._admin_users = {u.strip().translate(_ASCII_LOWER) for u in admin_users
                             if u.strip()}
        if session_secret is None:
            admin = self._tokens.get(Role.ADMIN)
            session_secret = hmac.new(admin.encode(), _SECRET_LABEL, hashlib.sha256).digest() \
                if admin else os.urandom(32)
        self._secret = session_secret
        self.session_ttl_s = session_ttl_s
        self.local = local
        self.prefix = prefix
        self._local_session = "local-" + secrets.token_urlsafe(16)

    @classmethod
    def from_settings(cls, settings: Settings, *, local: bool = False) -> AdminAuth:
        s = settings
        secret = s.admin_session_secret.get_secret_value().encode() \
            if s.admin_session_secret else None
        return cls(admin_token=s.admin_token.get_secret_value() if s.admin_token else None,
                   readonly_token=s.admin_readonly_token.get_secret_value()
                   if s.admin_readonly_token else None,
                   trusted_user_header=s.admin_trusted_user_header,
                   trusted_proxies=s.admin_trusted_proxies.split(","),
                   admin_users=s.admin_users.split(","), session_secret=secret,
                   session_ttl_s=s.admin_session_ttl_s, local=local)

    @property
    def configured(self) -> bool:
        """A token or a trusted user header is set, or this is local mode."""
        return bool(self._tokens) or self._header is not None or self.local

    def _mac(self, label: str, data: str) -> str:
        return _b64(hmac.new(self._secret, f"{label}\0{data}".encode(), hashlib.sha256).digest())

    def authenticate(self, request: web.Request) -> Principal | None:
        """The principal of `request`, or None when it carries no valid credential."""
        return (self._bearer(request) or self._session(request) or self._proxy_user(request)
                or self._local(request))

    def _role_of(self, token: str) -> Role | None:
        token = token.strip()  # compared with each token, in constant time
        found = [role for role, expected in self._tokens.items() if _equal(token, expected)]
        return found[0] if token and found else None

    def _bearer(self, request: web.Request) -> Principal | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        role = self._role_of(value) if scheme.lower() == "bearer" else None
        return Principal(_TOKEN_NAMES[role], role, "bearer", "") if role else None

    def _token_tag(self, role: Role) -> str | None:
        token = self._tokens.get(role)
        return self._mac("token", token)[:16] if token else None

    def _session(self, request: web.Request) -> Principal | None:
        raw = request.cookies.get(SESSION_COOKIE, "")
        payload, dot, signature = raw.rpartition(".")
        if not dot or len(raw) > 1024 or not _equal(signature, self._mac("session", payload)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            role, session_id, expiry, tag = Role(data["r"]), data["s"], data["e"], data["t"]
        except (ValueError, TypeError, KeyError):
            return None
        expected = self._token_tag(role)
        if not (isinstance(session_id, str) and session_id and isinstance(expiry, int)
                and expiry > _now() and isinstance(tag, str) and expected is not None
                and _equal(tag, expected)):
            return None
        return Principal(_TOKEN_NAMES[role], role, "session", session_id)

    def from_trusted_proxy(self, request: web.Request) -> bool:
        """True when the connection comes from one of ADMIN_TRUSTED_PROXIES."""
        addr = _address(request.remote)
        return addr is not None and any(addr in net for net in self._proxies)

    def _proxy_user(self, request: web.Request) -> Principal | None:
        if self._header is None or not self.from_trusted_proxy(request):
            return None
        values = request.headers.getall(self._header, [])
        if len(values) != 1:  # absent, or ambiguous
            return None
        user = values[0].strip()
        if not user or len(user) > _MAX_USER_CHARS or not user.isprintable():
            return None
        role = Role.ADMIN if user.translate(_ASCII_LOWER) in self._admin_users else Role.READ
        return Principal(user, role, "proxy", "proxy-" + self._mac("proxy-user", user)[:32])

    def _local(self, request: web.Request) -> Principal | None:
        addr = _address(request.remote)
        if self.local and addr and addr.is_loopback and _is_loopback_host(request.host):
            return Principal("local", Role.ADMIN, "local", self._local_session)
        return None

    def login(self, token: str) -> Principal | None:
        """The principal of a new session for a token typed into the login form (its role
        decided by the token), or None for a wrong token."""
        role = self._role_of(token)
        return Principal(_TOKEN_NAMES[role], role, "session", secrets.token_urlsafe(24)) \
            if role else None

    def is_https(self, request: web.Request) -> bool:
        """The browser talks HTTPS: to us, or to a trusted proxy (X-Forwarded-Proto)."""
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return request.secure or (proto == "https" and self.from_trusted_proxy(request))

    def set_session(self, response: web.StreamResponse, request: web.Request,
                    principal: Principal) -> None:
        """Set the session cookie of `principal` (from `login`; else ValueError)."""
        tag = self._token_tag(principal.role)
        if tag is None or not principal.session_id:
            raise ValueError("a session needs a login principal whose role has a token")
        body = {"r": str(principal.role), "s": principal.session_id,
                "e": int(_now()) + self.session_ttl_s, "t": tag}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        response.set_cookie(SESSION_COOKIE, f"{payload}.{self._mac('session', payload)}",
                            max_age=self.session_ttl_s, path=self.prefix, httponly=True,
                            samesite="Strict", secure=self.is_https(request))

    def clear_session(self, response: web.StreamResponse) -> None:
        response.del_cookie(SESSION_COOKIE, path=self.prefix, httponly=True,
                            samesite="Strict")

    def sign(self, label: str, text: str) -> str:
        """A signature of `text` for `label`: what the console wrote, not a link's author."""
        return self._mac(label, text)

    def check_signature(self, label: str, text: str, signature: str | None) -> bool:
        return bool(signature) and _equal(signature or "", self._mac(label, text))

    def csrf_token(self, principal: Principal) -> str:
        """The token a form of `principal` carries ("" for bearer principals: none needed)."""
        if principal.via == "bearer" or not principal.session_id:
            return ""
        return self._mac("csrf", principal.session_id)

    def check_csrf(self, principal: Principal, token: str | None) -> bool:
        """True when `token` is the CSRF token of `principal` (always for bearer ones)."""
        expected = self.csrf_token(principal)
        return principal.via == "bearer" or (bool(token and expected)
                                             and _equal(token or "", expected))

    def login_csrf(self, request: web.Request) -> tuple[str, str]:
        """(nonce, form token) for the login form: the nonce is the request's
        `sb_admin_login` cookie or a new random one (set it with `set_login_cookie`), the
        form token goes into the form."""
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not _NONCE.fullmatch(nonce):
            nonce = secrets.token_urlsafe(32)
        return nonce, self._mac("login", nonce)

    def set_login_cookie(self, response: web.StreamResponse, request: web.Request,
                         nonce: str) -> None:
        response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_COOKIE_TTL_S,
                            path=f"{self.prefix}/login", httponly=True, samesite="Strict",
                            secure=self.is_https(request))

    def check_login_csrf(self, request: web.Request, token: str | None) -> bool:
        """True when the posted login form's `token` matches the request's nonce cookie."""
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        return bool(token and _NONCE.fullmatch(nonce)) and \
            _equal(token or "", self._mac("login", nonce))

    def same_origin(self, request: web.Request) -> bool:
        """False when the browser says the request comes from another site: an `Origin`
        naming another host (behind a trusted proxy: X-Forwarded-Host also counts), or
        `Sec-Fetch-Site: cross-site`."""
        if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
            return False
        origins = request.headers.getall("Origin", [])
        if not origins:
            return True
        if len(origins) > 1:  # no browser sends two
            return False
        parts = urlsplit(origins[0].strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" and the like
        hosts = [request.host]
        forwarded = request.headers.get("X-Forwarded-Host")
        if forwarded and self.from_trusted_proxy(request):
            hosts.append(forwarded.split(",")[0])
        default = {"http": ":80", "https": ":443"}[parts.scheme]
        return parts.netloc.lower().removesuffix(default) in \
            {h.strip().lower().removesuffix(default) for h in hosts}
