"""A real S3-compatible server for the image tier: Versity S3 Gateway
(versitygw, built by e2e/setup/install-s3.sh) with its posix backend, on
127.0.0.1 and a random free port, plus the few S3 calls the tests make
themselves (create a bucket, list and delete objects), signed with AWS
Signature Version 4 by the standard library alone.

The server keeps its objects under <root>/data and their metadata under
<root>/meta (a sidecar directory, so the filesystem needs no xattrs); it can
be stopped and started again on the same port with the same data, which is
how the tests make a storage outage.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

REGION = "us-east-1"
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def server_bin() -> str | None:
    """PGSTEWARD_S3_SERVER, else the versitygw that install-s3.sh built."""
    explicit = os.environ.get("PGSTEWARD_S3_SERVER")
    if explicit:
        return explicit
    cache = Path(os.environ.get("PGSTEWARD_CACHE", "/var/cache/pgsteward"))
    candidate = cache / "bin" / "versitygw"
    if candidate.exists():
        return str(candidate)
    return shutil.which("versitygw")


def server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    version = fields.get("Version  ", fields.get("Version", "")).strip()
    return f"versitygw {version or out.strip()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Error(Exception):
    def __init__(self, status: int, body: str):
        super().__init__(f"S3 answered {status}: {body[:300]}")
        self.status = status
        self.body = body


class S3Server:
    """One versitygw process. start() and stop() may be called repeatedly."""

    def __init__(self, binary: str, root: Path, port: int | None = None):
        self.binary = binary
        self.root = root
        self.port = port or _free_port()
        self.access_key = "PGSTEWARDE2E" + secrets.token_hex(4).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.proc: subprocess.Popen | None = None
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "meta").mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.root / "server.log", "a")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ROOT_", "VGW_"))}
        self.proc = subprocess.Popen(
            [self.binary, "--port", f"127.0.0.1:{self.port}", "--access", self.access_key,
             "--secret", self.secret_key, "--region", REGION,
             "posix", "--sidecar", str(self.root / "meta"), str(self.root / "data")],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"versitygw exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                self.request("GET", "/")
                return
            except (OSError, S3Error):
                time.sleep(0.1)
        raise RuntimeError(f"versitygw did not answer on {self.endpoint} within {timeout}s: {self.log()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the S3 API, signed (Signature Version 4) -----------------------------
    def request(self, method: str, path: str, query: dict | None = None, body: bytes = b"",
                access_key: str | None = None, secret_key: str | None = None) -> bytes:
        access_key = access_key or self.access_key
        secret_key = secret_key or self.secret_key
        now = dt.datetime.now(dt.timezone.utc)
        amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = f"127.0.0.1:{self.port}"
        canonical_path = urllib.parse.quote(path, safe="/-_.~")
        canonical_query = "&".join(
            f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(str(v), safe='-_.~')}"
            for k, v in sorted((query or {}).items()))
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
        signed = ";".join(sorted(headers))
        canonical = "\n".join([method, canonical_path, canonical_query,
                               "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), signed, payload_hash])
        scope = f"{day}/{REGION}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = f"AWS4{secret_key}".encode()
        for part in (day, REGION, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        auth = f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
        url = f"{self.endpoint}{canonical_path}" + (f"?{canonical_query}" if canonical_query else "")
        req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None, method=method,
                                     headers={"x-amz-content-sha256": payload_hash, "x-amz-date": amz_date,
                                              "Authorization": auth})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            raise S3Error(e.code, e.read().decode(errors="replace")) from None

    def create_bucket(self, bucket: str) -> None:
        self.request("PUT", f"/{bucket}")

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix}
            if token:
                query["continuation-token"] = token
            root = ET.fromstring(self.request("GET", f"/{bucket}", query))
            keys += [c.findtext(f"{S3_NS}Key") for c in root.findall(f"{S3_NS}Contents")]
            if root.findtext(f"{S3_NS}IsTruncated") != "true":
                return keys
            token = root.findtext(f"{S3_NS}NextContinuationToken")

    def delete_key(self, bucket: str, key: str) -> None:
        self.request("DELETE", f"/{bucket}/{key}")
