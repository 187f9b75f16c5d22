"""Local registries for the image tests: Debian's docker-registry on 127.0.0.1 (plain,
htpasswd, token auth) and a small bearer-token server of our own signing JWTs with openssl."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASSWORD = "tester", "s3cret"
IDENTITY_TOKEN = "refresh-" + "x" * 16
SERVICE, ISSUER = "test-registry", "test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Registry:
    proc: subprocess.Popen[bytes]
    port: int
    log: str
    scheme: str = "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_registry(
    workdir: str,
    storage: str,
    name: str,
    auth_yaml: str = "",
    tls: TlsFiles | None = None,
    client_auth: bool = False,
) -> Registry:
    """docker-registry on 127.0.0.1; with `tls`, HTTPS only (and, with `client_auth`, only for
    clients presenting a certificate signed by the test CA)."""
    port = free_port()
    tls_yaml = ""
    if tls is not None:
        tls_yaml = f"  tls:\n    certificate: {tls.server_cert}\n    key: {tls.server_key}\n"
        if client_auth:
            tls_yaml += f"    clientcas: [{tls.ca_cert}]\n"
    config = os.path.join(workdir, f"{name}.yml")
    with open(config, "w") as f:
        f.write(
            "version: 0.1\n"
            "log: {level: warn}\n"
            f"storage:\n  filesystem: {{rootdirectory: {storage}}}\n  delete: {{enabled: true}}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + tls_yaml + auth_yaml
        )
    log = os.path.join(workdir, f"{name}.log")
    with open(log, "ab") as out:
        proc = subprocess.Popen([REGISTRY_BIN, "serve", config], stdout=out, stderr=out)
    reg = Registry(proc, port, log, "https" if tls else "http")
    context = tls.client_context() if tls else None
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"{reg.url}/", timeout=1, context=context).close()
            return reg
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                reg.stop()
                with open(log) as f:
                    raise RuntimeError(f"registry {name} did not start:\n{f.read()}") from None
            time.sleep(0.05)


@dataclass
class TlsFiles:
    """A test CA, a server certificate for IP 127.0.0.1 and a client certificate it signed."""

    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_tls_files(directory: str) -> TlsFiles:
    """Generates the CA and its leaf certificates with the openssl command (EC keys: fast)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    def path(name: str) -> str:
        return os.path.join(directory, name)

    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *newkey, "-days", "2", "-subj", "/CN=criruntime test CA",
        "-keyout", path("ca.key"), "-out", path("ca.crt"))  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        with open(path(f"{name}.ext"), "w") as f:
            f.write(ext)
        run("req", "-new", *newkey, "-subj", f"/CN=criruntime test {name}",
            "-keyout", path(f"{name}.key"), "-out", path(f"{name}.csr"))  # fmt: skip
        run("x509", "-req", "-in", path(f"{name}.csr"), "-CA", path("ca.crt"),
            "-CAkey", path("ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", path(f"{name}.ext"), "-out", path(f"{name}.crt"))  # fmt: skip
    return TlsFiles(
        path("ca.crt"), path("server.crt"), path("server.key"), path("client.crt"),
        path("client.key"),
    )  # fmt: skip


def htpasswd(workdir: str) -> str:
    path = os.path.join(workdir, "htpasswd")
    subprocess.run(["htpasswd", "-Bbc", path, USER, PASSWORD], check=True, capture_output=True)
    return path


# ---- token server ------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _libtrust_key_id(key_pem: str) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-in", key_pem, "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    """GET /token with basic auth, or POST /token with an OAuth2 refresh token → a JWT the
    registry trusts. Counts the tokens it issued, so tests can see the flow happened."""

    def __init__(self, workdir: str) -> None:
        self.key = os.path.join(workdir, "token.key")
        self.cert = os.path.join(workdir, "token.crt")
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=token", "-keyout", self.key, "-out", self.cert,
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.kid = _libtrust_key_id(self.key)
        self.port = free_port()
        self.issued = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def _sign(self, scope: str) -> str:
        access = []
        if scope:
            kind, name, actions = scope.split(":", 2) if scope.count(":") >= 2 else ("", "", "")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        claims = {
            "iss": ISSUER, "sub": USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
            "iat": now, "jti": secrets.token_hex(8), "access": access,
        }  # fmt: skip
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        sig = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        self.issued += 1
        return f"{signing_input}.{_b64url(sig)}"

    async def _token(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            form = await request.post()
            if (
                form.get("grant_type") != "refresh_token"
                or form.get("refresh_token") != IDENTITY_TOKEN
            ):
                return web.Response(status=401)
            scope = str(form.get("scope", ""))
            return web.json_response({"access_token": self._sign(scope)})
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401)
        return web.json_response({"token": self._sign(request.query.get("scope", ""))})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/token", self._token)
        runner = web.AppRunner(app)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._runner = runner
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._runner.cleanup()

        fut = asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def auth_yaml(self) -> str:
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.cert}\n"
        )


def in_thread(fn: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=fn, daemon=True)
    t.start()
    return t


class _LoopbackFront:
    """An aiohttp server of the test's own on 127.0.0.1, in front of the registry at
    `upstream`, run on its own loop in a thread; subclasses answer requests in `_handle`."""

    handler_cancellation = False

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def _upstream(self, request: web.Request) -> AsyncIterator[aiohttp.ClientResponse]:
        """The same request sent on to the registry, with the headers that matter to it."""
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.request(
                request.method,
                self.upstream + request.path_qs,
                headers={k: v for k, v in request.headers.items() if k in ("Accept", "Range")},
            ) as up,
        ):
            yield up

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handler_cancellation=self.handler_cancellation, shutdown_timeout=0.5
        )
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class SlowProxy(_LoopbackFront):
    """A pull-through HTTP proxy to a registry that, while `slow`, trickles blob bodies, so a
    test can kill the daemon in the middle of a layer download."""

    handler_cancellation = True  # the daemon is killed mid-download; drop its requests

    def __init__(self, upstream: str) -> None:
        self.slow = True
        self.blob_requests = 0
        super().__init__(upstream)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        async with self._upstream(request) as up:
            headers = {
                k: v
                for k, v in up.headers.items()
                if k.lower() not in ("transfer-encoding", "connection")
            }
            resp = web.StreamResponse(status=up.status, headers=headers)
            await resp.prepare(request)
            if "/blobs/" in request.path:
                self.blob_requests += 1
            async for chunk in up.content.iter_chunked(16384):
                if self.slow and "/blobs/" in request.path:
                    await asyncio.sleep(0.2)
                await resp.write(chunk)
            await resp.write_eof()
            return resp


class RedirectingRegistry(_LoopbackFront):
    """A registry front of our own: manifests are proxied to `upstream`, blob GETs answered with
    a 307 to the upstream's blob URL (as S3-backed registries do), or, while `corrupt`, to a URL
    of ours serving the wrong bytes. Counts redirects and hits on the wrong-bytes URL."""

    def __init__(self, upstream: str) -> None:
        self.corrupt = False
        self.redirects = 0
        self.corrupt_hits = 0
        self.blob_bodies_served = 0
        super().__init__(upstream)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/corrupt/"):
            self.corrupt_hits += 1
            return web.Response(body=b"these are not the bytes you are looking for")
        if "/blobs/" in request.path and request.method == "GET":
            self.redirects += 1
            digest = request.path.rsplit("/", 1)[1]
            target = (
                f"http://{self.host}/corrupt/{digest}"
                if self.corrupt
                else self.upstream + request.path
            )
            return web.Response(status=307, headers={"Location": target})
        async with self._upstream(request) as up:
            if "/blobs/" in request.path:
                self.blob_bodies_served += 1
            headers = {
                k: v
                for k, v in up.headers.items()
                if k.lower() not in ("transfer-encoding", "connection", "content-length")
            }
            return web.Response(status=up.status, headers=headers, body=await up.read())


class HostileRegistry(_LoopbackFront):
    """A registry of the test's own that serves what the test puts in `manifests` (tag ->
    media type, body) and `blobs` (digest -> body); a body of None is an endless manifest sent
    chunked, with no length, and `streamed` counts what was written of it before the client hung
    up."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[str, bytes | None]] = {}
        self.blobs: dict[str, bytes] = {}
        self.blob_requests: list[str] = []
        self.streamed = 0
        super().__init__("")

    def blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/v2/":
            return web.json_response({})
        kind, _, ref = request.path.rpartition("/")
        if kind.endswith("/blobs"):
            self.blob_requests.append(ref)
            body = self.blobs.get(ref)
            return web.Response(body=body) if body is not None else web.Response(status=404)
        if not kind.endswith("/manifests") or ref not in self.manifests:
            return web.Response(status=404)
        media_type, manifest = self.manifests[ref]
        if manifest is not None:
            return web.Response(body=manifest, headers={"Content-Type": media_type})
        resp = web.StreamResponse(headers={"Content-Type": media_type})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b" " * (1 << 20)
        with contextlib.suppress(ConnectionError):
            while self.streamed < 1 << 30:
                await resp.write(chunk)
                self.streamed += len(chunk)
        return resp
