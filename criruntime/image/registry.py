"""OCI distribution v2 client: manifests and blobs, auth, TLS, mirrors, retries.

Built on aiohttp rather than httpx: both are well kept and typed, but aiohttp parses HTTP in C
and streams bodies with less per-chunk overhead, and layer downloads are this module's hot path.
Redirects are followed by hand so credentials never go to a host that did not ask for them
(blob storage behind an S3/CDN redirect must not see the registry's bearer token).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import json
import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
import grpc

from criruntime.config import Config
from criruntime.errors import CriError, InvalidArgument, NotFound, Unavailable
from criruntime.image.content_store import Ingest
from criruntime.image.manifest import MAX_MANIFEST_BYTES
from criruntime.image.reference import DEFAULT_DOMAIN, Reference

log = logging.getLogger("criruntime.image.registry")

DEFAULT_CERTS_DIR = "/etc/criruntime/certs.d"
DOCKER_HUB_HOST = "registry-1.docker.io"
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 20


class RegistryError(CriError):
    """The registry refused or failed a request in a way retrying will not fix."""

    code = grpc.StatusCode.UNKNOWN


class Unauthorized(RegistryError):
    code = grpc.StatusCode.UNAUTHENTICATED


@dataclass(frozen=True)
class Credentials:
    """What kubelet passes in AuthConfig; empty means anonymous."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @classmethod
    def from_auth(
        cls,
        username: str = "",
        password: str = "",
        auth: str = "",
        identity_token: str = "",
        registry_token: str = "",
    ) -> Credentials:
        if auth and not username:
            try:
                username, _, password = base64.b64decode(auth).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument("auth.auth is not base64 of 'username:password'") from None
        return cls(username, password, identity_token, registry_token)


@dataclass(frozen=True)
class RegistryOptions:
    insecure: frozenset[str] = frozenset()
    mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    certs_dir: str = DEFAULT_CERTS_DIR
    max_concurrent_downloads: int = 3
    no_progress_timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5

    @classmethod
    def from_config(cls, config: Config) -> RegistryOptions:
        reg = config.registry
        return cls(
            insecure=frozenset(reg.insecure),
            mirrors={host: tuple(m.endpoints) for host, m in reg.mirrors.items()},
            certs_dir=reg.certs_dir,
            max_concurrent_downloads=reg.max_concurrent_downloads,
            no_progress_timeout=float(reg.no_progress_timeout),
        )


@dataclass(frozen=True)
class Endpoint:
    url: str  # scheme://host[:port], no trailing slash
    host: str  # host[:port], the key for certs.d and auth
    mirror: bool
    http_fallback: bool = False  # https first; plain http if the host does not speak TLS


def _strip_scheme_host(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc


class RegistryClient:
    """One per daemon: owns the HTTP connection pool and per-host TLS contexts."""

    def __init__(self, options: RegistryOptions) -> None:
        self.options = options
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[tuple[str, tuple[tuple[str, int], ...]], ssl.SSLContext] = {}

    def _http(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp binds to the running loop, which __init__ may not have.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=30, sock_read=self.options.no_progress_timeout
                ),
                auto_decompress=False,  # a blob's digest is over the bytes as stored
                connector=aiohttp.TCPConnector(limit=32, limit_per_host=16),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def is_insecure(self, host: str) -> bool:
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return host in self.options.insecure or hostname in _LOOPBACK or host in _LOOPBACK

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Mirrors in order, then the registry itself."""
        out = []
        for url in self.options.mirrors.get(domain, ()):
            url = url.rstrip("/").removesuffix("/v2")
            out.append(Endpoint(url, _strip_scheme_host(url), mirror=True))
        host = DOCKER_HUB_HOST if domain == DEFAULT_DOMAIN else domain
        # Insecure (and loopback) hosts are tried over HTTPS first, then plain HTTP if the host
        # does not speak TLS, as docker and containerd do: a TLS registry on localhost works.
        insecure = self.is_insecure(domain)
        out.append(Endpoint(f"https://{host}", host, mirror=False, http_fallback=insecure))
        return out

    def ssl_context(self, host: str) -> ssl.SSLContext:
        """System CAs plus certs.d/<host>/*.crt; client cert from *.cert + *.key (docker layout)."""
        directory = os.path.join(self.options.certs_dir, host)
        # Keyed by the directory's contents, so certificates added or replaced in certs.d are
        # used by the next pull without a restart (as docker does).
        cache_key = (host, _dir_signature(directory))
        ctx = self._ssl.get(cache_key)
        if ctx is None:
            ctx = ssl.create_default_context()
            for ca in sorted(glob.glob(os.path.join(directory, "*.crt"))):
                ctx.load_verify_locations(cafile=ca)
            for cert in sorted(glob.glob(os.path.join(directory, "*.cert"))):
                key = cert[: -len(".cert")] + ".key"
                ctx.load_cert_chain(cert, key if os.path.exists(key) else None)
            self._ssl = {k: v for k, v in self._ssl.items() if k[0] != host}
            self._ssl[cache_key] = ctx
        return ctx

    def repository(self, ref: Reference, credentials: Credentials) -> Repository:
        return Repository(self, ref, credentials)


def _dir_signature(directory: str) -> tuple[tuple[str, int], ...]:
    try:
        with os.scandir(directory) as entries:
            return tuple(sorted((e.name, e.stat().st_mtime_ns) for e in entries))
    except OSError:
        return ()


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """A manifest's body, refused once it passes `limit`: a broken or hostile registry must not
    make the daemon buffer an unbounded document."""
    if resp.content_length is not None and resp.content_length > limit:
        raise InvalidArgument(f"{what}: manifest larger than {limit} bytes")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_CHUNK):
        body += chunk
        if len(body) > limit:
            raise InvalidArgument(f"{what}: manifest larger than {limit} bytes")
    return bytes(body)


def _network_error(e: BaseException) -> str:
    """A failed request in words an operator can act on; aiohttp's own text for a refused
    connection names the SSL context object instead of the reason."""
    if isinstance(e, aiohttp.ClientConnectorError):
        err = e.os_error
        reason = os.strerror(err.errno) if err.errno and err.errno > 0 else err.strerror or str(err)
        return f"cannot connect to {e.host}:{e.port}: {reason}"
    return str(e) or ("timed out" if isinstance(e, TimeoutError) else type(e).__name__)


def _certificate_alert(e: BaseException) -> bool:
    """A TLS alert in which the server refuses our certificate (none sent, unknown CA...): TLS
    1.3 servers send it after the handshake, so it surfaces as a plain OSError."""
    text = str(e).upper()
    return (
        isinstance(e, OSError)
        and "[SSL:" in text
        and "_ALERT_" in text
        and ("CERTIFICATE" in text or "UNKNOWN_CA" in text)
    )


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


@dataclass
class _Auth:
    header: str | None = None  # Authorization value once known


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str


class Repository:
    """One repository on one registry (and its mirrors), with the caller's credentials."""

    def __init__(self, client: RegistryClient, ref: Reference, credentials: Credentials) -> None:
        self.client = client
        self.ref = ref
        self.credentials = credentials
        self.endpoints = client.endpoints(ref.domain)
        self._auth: dict[str, _Auth] = {}
        self._auth_lock = asyncio.Lock()
        self._preferred: Endpoint | None = None  # the endpoint that served the manifest
        self._plain_http: set[Endpoint] = set()  # http_fallback endpoints found not to speak TLS

    # ---- public ------------------------------------------------------------------------------

    async def fetch_manifest(self, obj: str, accept: list[str]) -> Manifest:
        """GETs a manifest or index by tag or digest, trying mirrors first."""
        headers = {"Accept": ", ".join(accept)}
        path = f"/v2/{self.ref.path}/manifests/{obj}"
        errors: list[str] = []
        for endpoint in self.endpoints:
            try:
                async with self._request(endpoint, "GET", path, headers) as resp:
                    if resp.status == 404:
                        errors.append(f"{self._base(endpoint)}: not found")
                        if not endpoint.mirror:
                            raise NotFound(f"{self.ref}: not found ({'; '.join(errors)})")
                        continue
                    await self._raise_for_status(resp, endpoint)
                    body = await _read_limited(resp, MAX_MANIFEST_BYTES, str(self.ref))
                    media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
                    self._preferred = endpoint
                    return Manifest(body, media_type, resp.headers.get("Docker-Content-Digest", ""))
            except (Unavailable, RegistryError) as e:
                if not endpoint.mirror:
                    if errors:  # what the mirrors said is half the story
                        raise type(e)(f"{e} (mirrors: {'; '.join(errors)})") from e
                    raise
                errors.append(f"{endpoint.url}: {e}")
                log.warning("mirror %s failed for %s: %s; trying next", endpoint.url, self.ref, e)
        raise Unavailable(f"{self.ref}: no endpoint answered ({'; '.join(errors)})")

    async def fetch_blob(self, digest: str, ingest: Ingest) -> None:
        """Streams a blob into `ingest` (which verifies it), resuming or retrying on failure."""
        path = f"/v2/{self.ref.path}/blobs/{digest}"
        order = self.endpoints
        if self._preferred is not None:
            order = [self._preferred] + [e for e in self.endpoints if e != self._preferred]
        last: Exception | None = None
        for endpoint in order:
            for attempt in range(self.client.options.retries + 1):
                headers = {}
                if ingest.written:
                    headers["Range"] = f"bytes={ingest.written}-"
                try:
                    async with self._request(endpoint, "GET", path, headers) as resp:
                        if resp.status == 404:
                            raise NotFound(f"blob {digest} not found in {self.ref.repository}")
                        await self._raise_for_status(resp, endpoint)
                        if resp.status != 206 and ingest.written:
                            ingest.reset()  # server ignored Range: start over
                        async for chunk in resp.content.iter_chunked(_CHUNK):
                            ingest.write(chunk)
                    return
                except NotFound as e:
                    last = e
                    break
                except (aiohttp.ClientError, TimeoutError, Unavailable) as e:
                    last = e
                    log.warning(
                        "blob %s from %s: %s (attempt %d)",
                        digest,
                        self._base(endpoint),
                        _network_error(e),
                        attempt + 1,
                    )
                    if attempt < self.client.options.retries:
                        await asyncio.sleep(self.client.options.backoff * 2**attempt)
            if not endpoint.mirror:
                break
        if isinstance(last, CriError):
            raise last
        reason = _network_error(last) if last is not None else "no endpoint"
        raise Unavailable(f"blob {digest} of {self.ref.repository}: {reason}")

    # ---- requests with auth, redirects and retries -------------------------------------------

    @contextlib.asynccontextmanager
    async def _request(
        self, endpoint: Endpoint, method: str, path: str, headers: dict[str, str]
    ) -> Any:
        """Yields a response that is not a 401, redirect or transient error."""
        http = self.client._http()
        options = self.client.options
        url = self._base(endpoint) + path
        if endpoint.mirror:
            url += "?" + urlencode({"ns": self.ref.domain})
        authenticated = False
        redirects = 0
        attempt = 0
        while True:
            send = dict(headers)
            same_host = urlsplit(url).netloc == endpoint.host
            auth = self._auth.get(endpoint.host)
            if same_host and auth is not None and auth.header:
                send["Authorization"] = auth.header
            elif same_host and self.credentials.registry_token:
                send["Authorization"] = f"Bearer {self.credentials.registry_token}"
            try:
                resp = await http.request(
                    method,
                    url,
                    headers=send,
                    allow_redirects=False,
                    ssl=self._ssl_for(url),
                )
            except (aiohttp.ClientConnectionError, TimeoutError) as e:
                host_certs = os.path.join(options.certs_dir, urlsplit(url).netloc)
                if isinstance(e, aiohttp.ClientConnectorCertificateError):
                    # Retrying cannot help; say which host and where its CA belongs.
                    raise Unavailable(
                        f"{url}: TLS certificate verification failed ({e.certificate_error}); "
                        f"is the registry's CA in {host_certs}/?"
                    ) from None
                if _certificate_alert(e):
                    # The registry wants a (different) client certificate; retrying cannot help.
                    raise Unavailable(
                        f"{url}: the registry rejected this client's TLS certificate ({e}); "
                        f"are client.cert and client.key in {host_certs}/?"
                    ) from None
                if (
                    isinstance(e, aiohttp.ClientConnectorSSLError)
                    and endpoint.http_fallback
                    and same_host
                    and url.startswith("https://")
                ):
                    log.info("%s does not speak TLS; using plain HTTP", endpoint.host)
                    self._plain_http.add(endpoint)
                    url = "http://" + url.removeprefix("https://")
                    continue
                if attempt >= options.retries:
                    raise Unavailable(f"{url}: {_network_error(e)}") from None
                attempt += 1
                await asyncio.sleep(options.backoff * 2 ** (attempt - 1))
                continue
            try:
                if resp.status == 401 and same_host and not authenticated:
                    challenge = resp.headers.get("WWW-Authenticate", "")
                    resp.release()
                    await self._authenticate(endpoint, challenge)
                    authenticated = True
                    continue
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    redirects += 1
                    if redirects > 10:
                        raise RegistryError(f"{url}: too many redirects")
                    url = urljoin(url, resp.headers["Location"])
                    resp.release()
                    continue
                if resp.status in _RETRY_STATUSES and attempt < options.retries:
                    delay = options.backoff * 2**attempt
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        delay = min(float(retry_after), 30.0)
                    resp.release()
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                yield resp
                return
            finally:
                resp.release()

    def _base(self, endpoint: Endpoint) -> str:
        """The endpoint's URL, plain http once an http_fallback endpoint proved not to be TLS."""
        if endpoint in self._plain_http:
            return "http://" + endpoint.host
        return endpoint.url

    def _ssl_for(self, url: str) -> ssl.SSLContext | bool:
        parts = urlsplit(url)
        if parts.scheme != "https":
            return False
        return self.client.ssl_context(parts.netloc)

    async def _raise_for_status(self, resp: aiohttp.ClientResponse, endpoint: Endpoint) -> None:
        if resp.status < 300:
            return
        detail = ""
        with contextlib.suppress(Exception):
            body = json.loads(await resp.content.read(8192))
            detail = "; ".join(
                f"{e.get('code', '')}: {e.get('message', '')}" for e in body.get("errors", [])
            )
        message = f"{self._base(endpoint)}: HTTP {resp.status} {resp.reason}" + (
            f" ({detail})" if detail else ""
        )
        if resp.status in (401, 403):
            raise Unauthorized(f"pulling {self.ref} failed, not authorized: {message}")
        if resp.status in _RETRY_STATUSES:
            raise Unavailable(message)
        raise RegistryError(message)

    async def _authenticate(self, endpoint: Endpoint, challenge: str) -> None:
        scheme, params = _parse_challenge(challenge)
        async with self._auth_lock:
            creds = self.credentials
            if scheme == "basic":
                if not creds.username:
                    raise Unauthorized(f"{self._base(endpoint)} requires a username and password")
                token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
                self._auth[endpoint.host] = _Auth(f"Basic {token}")
            elif scheme == "bearer":
                token = await self._fetch_token(endpoint, params)
                self._auth[endpoint.host] = _Auth(f"Bearer {token}")
            else:
                raise Unauthorized(
                    f"{self._base(endpoint)}: unsupported auth challenge {challenge!r}"
                )

    async def _fetch_token(self, endpoint: Endpoint, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm:
            raise Unauthorized(f"{self._base(endpoint)}: bearer challenge without a realm")
        scope = params.get("scope") or f"repository:{self.ref.path}:pull"
        service = params.get("service", "")
        http = self.client._http()
        creds = self.credentials
        ssl_ctx = self._ssl_for(realm)
        if creds.identity_token:
            # OAuth2 refresh-token grant, as docker does with an identity token.
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "service": service,
                "scope": scope,
                "client_id": "criruntime",
            }
            req = http.post(realm, data=form, ssl=ssl_ctx)
        else:
            query = {"scope": scope}
            if service:
                query["service"] = service
            headers = {}
            if creds.username:
                basic = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
                headers["Authorization"] = f"Basic {basic}"
            req = http.get(f"{realm}?{urlencode(query)}", headers=headers, ssl=ssl_ctx)
        try:
            async with req as resp:
                if resp.status in (401, 403):
                    raise Unauthorized(
                        f"token server {realm} refused credentials for {self.ref}: HTTP "
                        f"{resp.status}"
                    )
                if resp.status >= 300:
                    raise RegistryError(f"token server {realm}: HTTP {resp.status}")
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise Unavailable(f"token server {realm}: {_network_error(e)}") from None
        token = data.get("token") or data.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token server {realm} returned no token")
        return token
