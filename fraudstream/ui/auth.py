"""Who may do what on the ops dashboard: users and roles, sessions, and CSRF.

Verdicts and rules change how the system decides, so every request names a user with a
role, each role able to do what the one before it can:

- ``viewer`` sees the alerts, the card trails, the rules and the counters;
- ``analyst`` also gives verdicts (label events on the labels topic);
- ``admin`` also enables and disables rules (rule events on the rules topic).

Who the user is comes one of three ways (``fraudstream dashboard --auth``):

- ``password``: the user logs in on the page. The users file (``fraudstream users add``)
  holds each user's role and a scrypt hash of the password, never the password.
- ``proxy``: an authenticating reverse proxy in front of the dashboard names the user in
  a header (``--proxy-header``, default ``X-Forwarded-User``). The header is believed only
  from the proxy's own addresses (``--trusted-proxy``); the role is the user's in the users
  file (listed there without a password), or ``viewer``.
- ``none``: no logins, for one person on this machine. The dashboard then listens on the
  loopback address only, and everyone is the admin ``local``.

Sessions live in the service's memory: a random id in an ``HttpOnly``, ``SameSite=Strict``
cookie (``Secure`` under TLS), ending after :data:`SESSION_TTL_S` or at logout; a restart
ends them all (with ``password`` the user logs in again, the others get a new one at
once). Each session has its own CSRF token, which every request that changes something
must carry in the ``X-CSRF-Token`` header: a page of another site can neither read the
token nor send the header without the browser asking this service first, which it never
allows. Failed logins are counted per user name; after :data:`MAX_FAILURES` within
:data:`LOCKOUT_S` that name is refused until the window has passed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from fraudstream import config
from fraudstream.errors import FraudstreamError

log = logging.getLogger(__name__)

#: The roles, each able to do what the ones before it can.
ROLES = ("viewer", "analyst", "admin")
AUTH_MODES = ("password", "proxy", "none")
DEFAULT_USERS_FILE = config.VAR_DIR / "dashboard" / "users.json"
DEFAULT_PROXY_HEADER = "X-Forwarded-User"
DEFAULT_TRUSTED_PROXIES = ("127.0.0.1", "::1")
#: The user everyone is with ``--auth none``.
LOCAL_USER = "local"

SESSION_COOKIE = "fraudstream_session"
CSRF_HEADER = "X-CSRF-Token"
#: A session ends this long after its login, whatever it does meanwhile.
SESSION_TTL_S = 12 * 3600
#: Failed logins of one user name that lock it, and for how long.
MAX_FAILURES = 5
LOCKOUT_S = 300

#: scrypt's cost (n, r, p): about 16 MiB and 50 ms a check, as OWASP advises for scrypt.
_SCRYPT = (2**14, 8, 1)
_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


class AuthError(FraudstreamError):
    """Users or logins cannot be set up as asked; the message says why in one sentence."""


@dataclass(frozen=True)
class Identity:
    """Who makes a request, and their role."""

    name: str
    role: str

    def can(self, role: str) -> bool:
        """Whether this identity may do what ``role`` may."""
        return ROLES.index(self.role) >= ROLES.index(role)


# --- passwords ------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``: ``scrypt$n$r$p$salt$hash`` (base64 parts)."""
    n, r, p = _SCRYPT
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    encode = base64.b64encode
    return f"scrypt${n}${r}${p}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password`.

    The comparison takes the same time wherever the two differ.
    """
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    """A hash to check against when the user name is unknown.

    A wrong name then costs what a wrong password does, and the time of an answer does
    not tell which names exist.
    """
    return hash_password(secrets.token_hex(16))


# --- the users file -------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    """A user of the users file; ``password_hash`` None: only through the proxy."""

    name: str
    role: str
    password_hash: str | None = None


class UserStore:
    """The users file: JSON ``{"users": {name: {"role": ..., "password": hash}}}``.

    It is read again when it changes, so that ``fraudstream users add`` takes effect in a
    running dashboard at the next login. Written whole (a new file moved in place), and
    readable by its owner only.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._seen: tuple[int, int] | None = None
        self._users: dict[str, User] = {}

    def users(self) -> dict[str, User]:
        """Every user, by name; none if the file does not exist."""
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._seen, self._users = None, {}
                return {}
            seen = (stat.st_mtime_ns, stat.st_size)
            if seen != self._seen:
                self._users = self._read()
                self._seen = seen
            return dict(self._users)

    def get(self, name: str) -> User | None:
        """The user of that name, or None."""
        return self.users().get(name)

    def _read(self) -> dict[str, User]:
        try:
            listed = json.loads(self.path.read_text(encoding="utf-8"))["users"]
            users = {
                name: User(name, entry["role"], entry.get("password"))
                for name, entry in listed.items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AuthError(
                f"The users file {self.path} is not valid ({type(error).__name__}); "
                "fix it or remove it and add the users again."
            ) from None
        for user in users.values():
            if user.role not in ROLES:
                raise AuthError(
                    f"User {user.name} in {self.path} has the unknown role {user.role!r}; "
                    f"the roles are {', '.join(ROLES)}."
                )
        return users

    def add(self, name: str, role: str, password: str | None) -> bool:
        """Add a user or replace one of that name; True if it is new.

        Raises
        ------
        AuthError
            If the name or the role is not valid, or the password is empty.
        """
        if not _NAME.fullmatch(name):
            raise AuthError(
                f"A user name is 1 to 64 letters, digits or ._@- characters, not {name!r}."
            )
        if role not in ROLES:
            raise AuthError(f"The role must be one of {', '.join(ROLES)}, not {role!r}.")
        if password is not None and not password:
            raise AuthError("The password must not be empty.")
        users = self.users()
        new = name not in users
        users[name] = User(name, role, None if password is None else hash_password(password))
        self._write(users)
        return new

    def remove(self, name: str) -> None:
        """Remove a user.

        Raises
        ------
        AuthError
            If there is no such user.
        """
        users = self.users()
        if name not in users:
            raise AuthError(f"No user {name} in {self.path}.")
        del users[name]
        self._write(users)

    def _write(self, users: dict[str, User]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        listed = {
            user.name: {"role": user.role}
            | ({"password": user.password_hash} if user.password_hash else {})
            for user in sorted(users.values(), key=lambda u: u.name)
        }
        text = json.dumps({"users": listed}, indent=2) + "\n"
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, self.path)


# --- sessions and failed logins -------------------------------------------------------


@dataclass
class Session:
    """A logged-in browser: who, its CSRF token, and when it ends (``time.monotonic``)."""

    token: str
    identity: Identity
    csrf: str
    expires: float


class Sessions:
    """The open sessions, in memory, by their cookie's random id."""

    def __init__(self, ttl_s: float = SESSION_TTL_S):
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._open: dict[str, Session] = {}

    def new(self, identity: Identity) -> Session:
        """Open a session for ``identity``, with a new id and CSRF token."""
        now = time.monotonic()
        session = Session(
            secrets.token_urlsafe(32), identity, secrets.token_urlsafe(32), now + self.ttl_s
        )
        with self._lock:
            # Forget the ended ones here: nothing else visits them.
            for token in [t for t, s in self._open.items() if s.expires <= now]:
                del self._open[token]
            self._open[session.token] = session
        return session

    def get(self, token: str) -> Session | None:
        """The open session of that id, or None (unknown or ended)."""
        with self._lock:
            session = self._open.get(token)
            if session is not None and session.expires <= time.monotonic():
                del self._open[token]
                return None
            return session

    def end(self, token: str) -> None:
        """End a session (logout)."""
        with self._lock:
            self._open.pop(token, None)


@dataclass
class Throttle:
    """Failed logins per user name: :data:`MAX_FAILURES` within the window lock it."""

    max_failures: int = MAX_FAILURES
    window_s: float = LOCKOUT_S
    _failures: dict[str, list[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def locked_for(self, name: str) -> float:
        """Seconds until ``name`` may try again; 0 if it may now."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(name, []) if t > now - self.window_s]
            self._failures[name] = recent
            if len(recent) < self.max_failures:
                return 0.0
            return recent[-self.max_failures] + self.window_s - now

    def failed(self, name: str) -> None:
        """Count a failed login of ``name``."""
        with self._lock:
            self._failures.setdefault(name, []).append(time.monotonic())

    def succeeded(self, name: str) -> None:
        """Forget the failures of ``name`` after a good login."""
        with self._lock:
            self._failures.pop(name, None)


# --- the dashboard's door -------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """How the dashboard learns who is asking: ``fraudstream dashboard``'s --auth options."""

    mode: str = "none"
    users_file: Path = DEFAULT_USERS_FILE
    proxy_header: str = DEFAULT_PROXY_HEADER
    trusted_proxies: tuple[str, ...] = DEFAULT_TRUSTED_PROXIES
    #: Cookies only over HTTPS: the dashboard serves TLS itself, or behind a TLS proxy.
    secure_cookies: bool = False


def _a(role: str) -> str:
    return ("an " if role[0] in "aeiou" else "a ") + role


def _networks(addresses: tuple[str, ...]):
    try:
        return [ipaddress.ip_network(address, strict=False) for address in addresses]
    except ValueError as error:
        raise AuthError(f"--trusted-proxy takes addresses or networks: {error}.") from None


Handler = Callable[..., Awaitable]


class Gate:
    """The dashboard's door: logins, sessions, CSRF, and the role each route needs.

    Wrap every route that shows or changes anything with :meth:`guard`; only the login
    page, its API and the static files are open.
    """

    def __init__(self, access: Access):
        if access.mode not in AUTH_MODES:
            raise AuthError(f"--auth must be one of {', '.join(AUTH_MODES)}.")
        self.access = access
        self.store = UserStore(access.users_file)
        self.sessions = Sessions()
        self.throttle = Throttle()
        self._proxies = _networks(access.trusted_proxies)

    def check(self) -> None:
        """Refuse, in one sentence, a setup nobody could log in to.

        Raises
        ------
        AuthError
            With ``password``, if the users file holds nobody with a password (or is
            not valid).
        """
        users = self.store.users()
        if self.access.mode == "password" and not any(u.password_hash for u in users.values()):
            raise AuthError(
                f"No dashboard users with a password in {self.access.users_file}: add one "
                "with 'fraudstream users add NAME --role admin', or serve this machine "
                "alone without logins with --auth none."
            )

    # --- who is asking

    def _from_proxy(self, request) -> Identity | None:
        client = request.client.host if request.client else None
        try:
            trusted = client is not None and any(
                ipaddress.ip_address(client) in network for network in self._proxies
            )
        except ValueError:
            trusted = False
        name = request.headers.get(self.access.proxy_header, "").strip()
        if not trusted or not _NAME.fullmatch(name):
            return None
        user = self.store.get(name)
        return Identity(name, user.role if user else "viewer")

    def _session(self, request) -> tuple[Session | None, bool]:
        """The request's session and whether it is new (its cookie still to be set)."""
        token = request.cookies.get(SESSION_COOKIE)
        session = self.sessions.get(token) if token else None
        if self.access.mode == "password":
            if session is None:
                return None, False
            # The role as the users file says now: a change or a removal counts at once.
            user = self.store.get(session.identity.name)
            if user is None or not user.password_hash:
                self.sessions.end(session.token)
                return None, False
            session.identity = Identity(user.name, user.role)
            return session, False
        if self.access.mode == "none":
            identity: Identity | None = Identity(LOCAL_USER, "admin")
        else:
            identity = self._from_proxy(request)
        if identity is None:
            return None, False
        if session is not None and session.identity.name == identity.name:
            session.identity = identity
            return session, False
        return self.sessions.new(identity), True

    def _set_cookie(self, response, session: Session) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session.token,
            max_age=int(self.sessions.ttl_s),
            path="/",
            httponly=True,
            samesite="strict",
            secure=self.access.secure_cookies,
        )

    # --- the routes

    def guard(self, role: str, handler: Handler, page: bool = False) -> Handler:
        """``handler`` for identities of ``role`` or above.

        The handler finds who asks in ``request.state.identity`` (and the session in
        ``request.state.session``).

        Without a session, a page redirects to the login page and an API call gets 401.
        A request that changes something (any method but GET and HEAD) needs the
        session's CSRF token in the ``X-CSRF-Token`` header, else 403; so does a role
        below ``role``.
        """
        from starlette.responses import JSONResponse, RedirectResponse

        async def guarded(request):
            try:
                session, fresh = self._session(request)
            except AuthError as error:
                return JSONResponse({"error": str(error)}, status_code=503)
            if session is None:
                if self.access.mode == "proxy":
                    return JSONResponse(
                        {"error": "No user named by the trusted proxy; sign in through it."},
                        status_code=401,
                    )
                if page:
                    where = quote(request.url.path, safe="")
                    return RedirectResponse(f"/login?next={where}", status_code=303)
                return JSONResponse({"error": "Log in first."}, status_code=401)
            if request.method not in ("GET", "HEAD"):
                sent = request.headers.get(CSRF_HEADER, "")
                if fresh or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    log.warning(
                        "Refused %s %s without a valid CSRF token (user %s).",
                        request.method,
                        request.url.path,
                        session.identity.name,
                    )
                    return JSONResponse(
                        {
                            "error": "No valid CSRF token with the request; reload the page.",
                            "reason": "csrf",
                        },
                        status_code=403,
                    )
            identity = session.identity
            if not identity.can(role):
                return JSONResponse(
                    {"error": f"{identity.name} is {_a(identity.role)}; this needs {_a(role)}."},
                    status_code=403,
                )
            request.state.identity = identity
            request.state.session = session
            response = await handler(request)
            if fresh:
                self._set_cookie(response, session)
            return response

        return guarded

    async def login(self, request):
        """``POST /api/login`` with JSON ``{"user", "password"}``: open a session."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse

        if self.access.mode != "password":
            return JSONResponse(
                {"error": f"This dashboard has no logins of its own (--auth {self.access.mode})."},
                status_code=404,
            )
        # JSON only: a form of another site cannot post it without the browser asking.
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return JSONResponse({"error": "send JSON"}, status_code=415)
        try:
            body = await request.json()
            name, password = body["user"], body["password"]
        except (ValueError, KeyError, TypeError):
            name = password = None
        if not isinstance(name, str) or not isinstance(password, str):
            return JSONResponse({"error": 'send {"user": ..., "password": ...}'}, 400)
        wait = self.throttle.locked_for(name)
        if wait:
            minutes = max(1, round(wait / 60))
            return JSONResponse(
                {"error": f"Too many failed logins for {name}; try again in {minutes} min."},
                status_code=429,
            )
        try:
            user = self.store.get(name)
        except AuthError as error:
            return JSONResponse({"error": str(error)}, status_code=503)
        stored = user.password_hash if user and user.password_hash else _dummy_hash()
        matches = await run_in_threadpool(verify_password, password, stored)
        if not (matches and user and user.password_hash):
            self.throttle.failed(name)
            client = request.client.host if request.client else "?"
            log.warning("Failed login as %s from %s.", name, client)
            return JSONResponse({"error": "Wrong user name or password."}, status_code=401)
        self.throttle.succeeded(name)
        session = self.sessions.new(Identity(user.name, user.role))
        log.info("%s (%s) logged in.", user.name, user.role)
        response = JSONResponse({"user": user.name, "role": user.role})
        self._set_cookie(response, session)
        return response

    async def logout(self, request):
        """``POST /api/logout`` (guarded): end the session."""
        from starlette.responses import JSONResponse

        self.sessions.end(request.state.session.token)
        response = JSONResponse({"logged_out": request.state.identity.name})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def me(self, request):
        """``GET /api/me`` (guarded): who the session is, and its CSRF token."""
        from starlette.responses import JSONResponse

        session = request.state.session
        identity = session.identity
        return JSONResponse(
            {
                "user": identity.name,
                "role": identity.role,
                "csrf": session.csrf,
                "auth": self.access.mode,
            }
        )
