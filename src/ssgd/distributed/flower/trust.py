"""The node runs only an app it trusts: signed FABs, verified by Flower's own SuperNode code.

A SuperNode runs the ClientApp of whatever FAB (Flower App Bundle) the SuperLink hands it, and
the SuperLink is the server -- in SSGD's threat model, possibly malicious. It could ship an app
without :class:`~ssgd.distributed.flower.SSGDMod`, and the node's policy would never run.

flwr 1.42 has one mechanism against this: ``flower-supernode --trusted-entities FILE`` (a YAML
map ``public-key-id: "ssh-ed25519 ..."``). A SuperNode started with it runs a FAB only if the
FAB carries a verification record whose Ed25519 signature over ``signed_at (8 bytes) ||
sha256(FAB)`` checks out against one of those keys; an unsigned or altered FAB gets an error
reply (``FAB_VERIFICATION_ERROR``) and its code never runs. The check happens in the SuperNode
process, before the FAB is installed (``flwr.supernode.start_client_internal._verify_fab``).

In flwr 1.42 a FAB carries verification records only when the SuperLink fetched it from an app
registry (Flower Hub's ``/hub/fetch-fab``, at ``$FLWR_SUPERGRID_API_URL``) -- ``flwr run <dir>``
sends none. So :class:`AppRegistry` is a minimal registry on 127.0.0.1 that serves the FAB and
the signature :class:`AppSigner` made, and ``ssgd flower up`` runs ``flwr run @ssgd/ssgd-flower==V``
against a SuperLink pointed at it. The registry is not trusted: it (like the SuperLink) can serve
any bytes and any signature; only a signature made with the private key -- which never leaves
the process that runs ``ssgd flower up`` -- passes the nodes' check.

What remains trusted (docs/threat-model.md): the holder of the signing key; the Python
environment of the node (``ssgd`` and ``flwr`` as installed: the packaged ClientApp is imported
from it, the FAB only names it); the node's own config.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["AppSigner", "AppRegistry", "build_fab", "write_trusted_entities", "APP_ID", "APP_VERSION"]

#: the app id ``@publisher/name`` and version of the packaged app (deploy.APP_PYPROJECT)
APP_ID = "@ssgd/ssgd-flower"
APP_VERSION = "0.1.0"


def build_fab(app_dir: str | Path) -> bytes:
    """The FAB Flower's own builder makes from ``app_dir`` (as ``flwr run`` / ``flwr build`` do)."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(Path(app_dir).absolute())


class AppSigner:
    """A fresh Ed25519 key pair; :meth:`sign` makes the verification record a SuperNode checks."""

    def __init__(self, key_id: str | None = None) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self._key = ed25519.Ed25519PrivateKey.generate()
        public = self._key.public_key()
        self.public_key = public.public_bytes(serialization.Encoding.OpenSSH,
                                              serialization.PublicFormat.OpenSSH).decode("ascii")
        digest = hashlib.sha256(self.public_key.encode()).hexdigest()[:16]
        self.key_id = key_id or f"fpk_ssgd-{digest}"

    def sign(self, fab: bytes, signed_at: int | None = None) -> dict[str, Any]:
        """The verification record of ``fab``: ``{public_key_id, signature, signed_at}``."""
        from flwr.supercore.primitives.asymmetric_ed25519 import create_message_to_sign

        signed_at = int(time.time()) if signed_at is None else int(signed_at)
        message = create_message_to_sign(hashlib.sha256(fab).digest(), signed_at)
        signature = base64.urlsafe_b64encode(self._key.sign(message)).decode("ascii").rstrip("=")
        return {"public_key_id": self.key_id, "signature": signature, "signed_at": signed_at}

    def trusted_entities(self) -> dict[str, str]:
        return {self.key_id: self.public_key}


def write_trusted_entities(path: str | Path, entities: dict[str, str]) -> Path:
    """The YAML file ``flower-supernode --trusted-entities`` reads (key id -> OpenSSH public key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{json.dumps(k)}: {json.dumps(v)}\n" for k, v in entities.items()), encoding="utf-8")
    return path


class AppRegistry:
    """A minimal app registry on 127.0.0.1 speaking the part of Flower Hub's API a SuperLink uses:
    ``POST /hub/fetch-fab`` ({app_id, app_version}) -> ``{fab_url, verifications}``, and the FAB bytes."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._apps: dict[tuple[str, str], tuple[bytes, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                try:
                    n = min(int(self.headers.get("Content-Length", "0")), 65536)
                    body = json.loads(self.rfile.read(n) or b"{}")
                    key = (str(body.get("app_id")), str(body.get("app_version")))
                except (ValueError, TypeError):
                    return self._send(400, b'{"detail": "bad request"}')
                with registry._lock:
                    app = registry._apps.get(key)
                if self.path.rstrip("/") != "/hub/fetch-fab" or app is None:
                    return self._send(404, b'{"detail": "not found"}')
                url = f"{registry.url}/fab/{hashlib.sha256(app[0]).hexdigest()}"
                self._send(200, json.dumps({"fab_url": url, "verifications": app[1]}).encode())

            def do_GET(self) -> None:  # noqa: N802
                with registry._lock:
                    fabs = {hashlib.sha256(f).hexdigest(): f for f, _ in registry._apps.values()}
                fab = fabs.get(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/fab/") else None
                if fab is None:
                    return self._send(404, b"not found", "text/plain")
                self._send(200, fab, "application/octet-stream")

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="ssgd-app-registry", daemon=True)
        self._thread.start()

    def publish(self, fab: bytes, verifications: list[dict[str, Any]], app_id: str = APP_ID,
                version: str = APP_VERSION) -> str:
        """Serve ``fab`` (with ``verifications``) as ``app_id==version``; return that app spec."""
        with self._lock:
            self._apps[(app_id, version)] = (bytes(fab), [dict(v) for v in verifications])
        return f"{app_id}=={version}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
