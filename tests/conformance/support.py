"""Shared helpers of the SDK conformance suite.

Everything here is independent of the server implementation: CRC-64/XZ, hand-rolled OSS V1
signing (for raw requests the SDKs cannot produce), the `appendfs serve` process wrapper and a
thin adapter layer that lets one test body drive three official client set-ups:

  * ``oss2-v1``  -- oss2 2.19.1 with ``oss2.Auth`` (signature V1, HMAC-SHA1)
  * ``oss2-v4``  -- oss2 2.19.1 with ``oss2.AuthV4`` (OSS4-HMAC-SHA256, region cn-hangzhou)
  * ``v2-v4``    -- alibabacloud-oss-v2 1.4.1 (OSS4-HMAC-SHA256, region cn-hangzhou)

The adapters call the SDKs' public APIs and then report what the SDK parsed *and* the raw
response headers, so assertions can be made on both.  SDK service errors are converted to
``SdkError`` carrying status / code / request id / headers; anything else (crashes inside the
SDK, connection errors, CRC mismatches detected by the SDK) propagates unchanged so that it
shows up as a test failure with the SDK's own message.
"""
from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import oss2
import alibabacloud_oss_v2 as ossv2

# --------------------------------------------------------------------------------------------
# constants

REPO = Path(__file__).resolve().parents[2]
BUCKET = "confbucket"
REGION = "cn-hangzhou"
ACCESS_KEY_ID = "LTAIconformanceTestAK"
ACCESS_KEY_SECRET = "conformance-test-secret-0123456789"
STARTUP_TIMEOUT = 20.0
SDK_TIMEOUT = 15  # seconds; every SDK request has a timeout so a hung server fails fast

REQUEST_ID_RE = re.compile(r"^[0-9A-F]{24}$")
# oss2's ISO 8601 parser (utils._ISO8601_RE) only accepts exactly ".000Z" milliseconds.
OSS2_ISO8601_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.000Z$")

# --------------------------------------------------------------------------------------------
# CRC-64/XZ (the algorithm behind x-oss-hash-crc64ecma), independent table implementation


def _make_crc_table() -> List[int]:
    poly = 0xC96C5795D7870F42  # reflected 0x42F0E1EBA9EA3693 (ECMA-182)
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _make_crc_table()
_MASK64 = 0xFFFFFFFFFFFFFFFF


def crc64(data: bytes, prev: int = 0) -> int:
    """CRC-64/XZ of `data`; pass the CRC of the preceding bytes as `prev` to continue it."""
    c = prev ^ _MASK64
    tbl = _CRC_TABLE
    for b in data:
        c = tbl[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ _MASK64


def md5_hex_upper(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def http_date(ts: Optional[float] = None) -> str:
    return email.utils.formatdate(ts if ts is not None else time.time(), usegmt=True)


def parse_http_date(value: str) -> float:
    return email.utils.parsedate_to_datetime(value).timestamp()


def lower_headers(h: Any) -> Dict[str, str]:
    return {str(k).lower(): v for k, v in dict(h or {}).items()}


# --------------------------------------------------------------------------------------------
# hand-made V1 signing for raw requests (oss-protocol.md section 6.4)

V1_SUBRESOURCES = frozenset(oss2.Auth._subresource_key_set)


def v1_string_to_sign(method: str, bucket: Optional[str], key: str, params: Dict[str, Optional[str]],
                      headers: Dict[str, str]) -> str:
    h = {k.lower(): v for k, v in headers.items()}
    oss_headers = sorted((k, v) for k, v in h.items() if k.startswith("x-oss-"))
    canon_headers = "".join(f"{k}:{v}\n" for k, v in oss_headers)
    if bucket:
        resource = f"/{bucket}/{key}"
    else:
        resource = "/"
    sub = sorted((k, v) for k, v in params.items() if k in V1_SUBRESOURCES)
    if sub:
        resource += "?" + "&".join(k if not v else f"{k}={v}" for k, v in sub)
    date = h.get("x-oss-date") or h.get("date", "")
    return "\n".join([method, h.get("content-md5", ""), h.get("content-type", ""), date,
                      canon_headers + resource])


def v1_authorization(method: str, bucket: Optional[str], key: str, params: Dict[str, Optional[str]],
                     headers: Dict[str, str], ak: str = ACCESS_KEY_ID,
                     sk: str = ACCESS_KEY_SECRET) -> str:
    sts = v1_string_to_sign(method, bucket, key, params, headers)
    sig = base64.b64encode(hmac.new(sk.encode(), sts.encode("utf-8"), hashlib.sha1).digest()).decode()
    return f"OSS {ak}:{sig}"


def quote_key(key: str) -> str:
    """Percent-encode a key for the URL path the way oss2 does (slashes become %2F)."""
    return urllib.parse.quote(key, safe="")


def build_query(params: Dict[str, Optional[str]], bare: bool = True) -> str:
    parts = []
    for k, v in params.items():
        if v is None or (v == "" and bare):
            parts.append(urllib.parse.quote(k, safe=""))
        else:
            parts.append(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}")
    return "&".join(parts)


def raw_request(server: "Server", method: str, key: Optional[str] = None, *,
                params: Optional[Dict[str, Optional[str]]] = None,
                headers: Optional[Dict[str, str]] = None, body: bytes = b"",
                bucket: Optional[str] = BUCKET, sign: bool = True, bare_params: bool = True,
                ak: str = ACCESS_KEY_ID, sk: str = ACCESS_KEY_SECRET, timeout: float = SDK_TIMEOUT):
    """Send one V1-signed (or unsigned) path-style request with `requests`; returns the Response."""
    import requests

    params = dict(params or {})
    hdrs = {"Date": http_date()}
    hdrs.update(headers or {})
    if body and not any(k.lower() == "content-type" for k in hdrs):
        hdrs["Content-Type"] = "application/octet-stream"
    if sign:
        hdrs["Authorization"] = v1_authorization(method, bucket, key or "", params, hdrs, ak, sk)
    path = "/"
    if bucket:
        path += bucket + "/"
        if key:
            path += quote_key(key)
    url = server.endpoint + path
    q = build_query(params, bare=bare_params)
    if q:
        url += "?" + q
    return requests.request(method, url, headers=hdrs, data=body, timeout=timeout,
                            allow_redirects=False)


def parse_error_xml(body: bytes) -> Dict[str, str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(body)
    assert root.tag == "Error", f"error body root is {root.tag!r}, expected un-namespaced <Error>"
    return {child.tag: (child.text or "") for child in root}


# --------------------------------------------------------------------------------------------
# the server process


class ServerStartError(Exception):
    pass


def appendfs_bin() -> Path:
    return Path(os.environ.get("APPENDFS_BIN", str(REPO / "target" / "debug" / "appendfs")))


def server_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OSS_", "ALIBABA_CLOUD_"))}
    env["OSS_ACCESS_KEY_ID"] = ACCESS_KEY_ID
    env["OSS_ACCESS_KEY_SECRET"] = ACCESS_KEY_SECRET
    env.setdefault("RUST_BACKTRACE", "1")
    if extra:
        env.update(extra)
    return env


class Server:
    """One `appendfs serve` child process."""

    LISTEN_RE = re.compile(r"listening on (http://\S+)")

    def __init__(self, args: Sequence[str], log_dir: Path, name: str,
                 env: Optional[Dict[str, str]] = None):
        self.args = list(args)
        self.name = name
        self.log_path = log_dir / f"{name}.stderr.log"
        self.stdout_lines: List[str] = []
        self.endpoint = ""
        self.addr = ""
        binary = appendfs_bin()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            raise ServerStartError(
                f"appendfs binary not found or not executable: {binary}\n"
                f"Build it first (`cargo build` in {REPO}) or point APPENDFS_BIN at it.")
        self.cmd = [str(binary), "serve", *self.args]
        self._stderr = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self._stderr,
                                     stdin=subprocess.DEVNULL, env=server_env(env),
                                     start_new_session=True)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        if not self._ready.wait(STARTUP_TIMEOUT) or not self.endpoint:
            rc = self.proc.poll()
            self.kill()
            state = (f"exited with status {rc}" if rc is not None
                     else f"printed no 'listening on http://ADDR' line within {STARTUP_TIMEOUT:.0f} s")
            raise ServerStartError(
                f"`{' '.join(self.cmd)}` {state}.\nstdout: {self.stdout_lines[-20:]!r}\n"
                f"stderr (tail):\n{self.stderr_tail()}")
        host_port = self.addr
        host, _, port = host_port.rpartition(":")
        self.host = host.strip("[]")
        self.port = int(port)
        assert self.host.startswith("127.") or self.host in ("::1", "localhost"), \
            f"server must listen on loopback only, got {self.addr}"

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stdout_lines.append(line)
            if not self._ready.is_set():
                m = self.LISTEN_RE.search(line)
                if m:
                    self.endpoint = m.group(1).rstrip("/")
                    self.addr = self.endpoint[len("http://"):]
                    self._ready.set()
        self._ready.set()  # EOF: unblock the waiter

    def stderr_tail(self, n: int = 4000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-n:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL, as a crash would; waits for the process to be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        try:
            self._stderr.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# SDK adapters


class SdkError(Exception):
    """A service error as decoded by one of the SDKs."""

    def __init__(self, flavor: str, status: int, code: str, request_id: str, ec: str,
                 message: str, headers: Dict[str, str], details: Dict[str, Any], exc: BaseException):
        super().__init__(f"[{flavor}] HTTP {status} {code}: {message} (request id {request_id!r})")
        self.flavor = flavor
        self.status = status
        self.code = code
        self.request_id = request_id
        self.ec = ec
        self.message = message
        self.headers = headers
        self.details = details
        self.exc = exc


@dataclass
class Result:
    status: int
    headers: Dict[str, str]
    body: bytes = b""
    next_position: Optional[int] = None
    crc: Optional[int] = None
    etag: Optional[str] = None
    object_type: Optional[str] = None
    content_length: Optional[int] = None
    content_type: Optional[str] = None
    content_range: Optional[str] = None
    last_modified: Optional[float] = None
    storage_class: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)
    request_id: str = ""
    raw: Any = None


@dataclass
class ListPage:
    keys: List[str]
    prefixes: List[str]
    is_truncated: bool
    next_token: Optional[str]
    objects: List[Any]


def _int_or_none(v: Any) -> Optional[int]:
    return None if v is None else int(v)


class Client:
    flavor = "?"

    def __init__(self, endpoint: str, bucket: str = BUCKET, ak: str = ACCESS_KEY_ID,
                 sk: str = ACCESS_KEY_SECRET, anonymous: bool = False):
        self.endpoint = endpoint
        self.bucket = bucket
        self.ak = ak
        self.sk = sk
        self.anonymous = anonymous

    # implemented by subclasses: append put get head meta delete copy list_page create_bucket
    # bucket_info presign_get

    def list_all(self, prefix: str = "", delimiter: str = "", max_keys: int = 100,
                 start_after: str = "") -> Tuple[List[str], List[str], List[ListPage]]:
        pages = []
        token = None
        while True:
            page = self.list_page(prefix=prefix, delimiter=delimiter, max_keys=max_keys,
                                  start_after=start_after, token=token)
            pages.append(page)
            if not page.is_truncated:
                break
            assert page.next_token, f"[{self.flavor}] truncated page without NextContinuationToken"
            token = page.next_token
            assert len(pages) < 10000, "listing does not terminate"
        keys = [k for p in pages for k in p.keys]
        prefixes = [k for p in pages for k in p.prefixes]
        return keys, prefixes, pages


class Oss2Client(Client):
    def __init__(self, endpoint: str, bucket: str = BUCKET, ak: str = ACCESS_KEY_ID,
                 sk: str = ACCESS_KEY_SECRET, anonymous: bool = False, v4: bool = False,
                 enable_crc: bool = True):
        super().__init__(endpoint, bucket, ak, sk, anonymous)
        self.v4 = v4
        if anonymous:
            self.auth = oss2.AnonymousAuth()
            self.flavor = "oss2-anon"
        elif v4:
            self.auth = oss2.AuthV4(ak, sk)
            self.flavor = "oss2-v4"
        else:
            self.auth = oss2.Auth(ak, sk)
            self.flavor = "oss2-v1"
        self.b = oss2.Bucket(self.auth, endpoint, bucket, region=REGION, enable_crc=enable_crc,
                             connect_timeout=SDK_TIMEOUT)

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except oss2.exceptions.ServerError as e:
            raise SdkError(self.flavor, e.status, e.code, e.request_id, e.ec, e.message,
                           lower_headers(e.headers), dict(e.details or {}), e) from e

    def _res(self, r: Any, **kw: Any) -> Result:
        return Result(status=r.status, headers=lower_headers(r.headers), request_id=r.request_id,
                      raw=r, **kw)

    def append(self, key: str, position: int, data: Any, headers: Optional[Dict[str, str]] = None,
               init_crc: Optional[int] = None) -> Result:
        r = self._call(lambda: self.b.append_object(key, position, data, headers=headers,
                                                     init_crc=init_crc))
        return self._res(r, next_position=r.next_position, crc=r.crc, etag=r.etag)

    def put(self, key: str, data: Any, headers: Optional[Dict[str, str]] = None,
            metadata: Optional[Dict[str, str]] = None, content_type: Optional[str] = None,
            forbid_overwrite: Optional[bool] = None) -> Result:
        h = dict(headers or {})
        for k, v in (metadata or {}).items():
            h["x-oss-meta-" + k] = v
        if content_type:
            h["Content-Type"] = content_type
        if forbid_overwrite is not None:
            h["x-oss-forbid-overwrite"] = "true" if forbid_overwrite else "false"
        r = self._call(lambda: self.b.put_object(key, data, headers=h))
        return self._res(r, crc=r.crc, etag=r.etag)

    def get(self, key: str, byte_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
            standard: bool = False, headers: Optional[Dict[str, str]] = None) -> Result:
        h = dict(headers or {})
        if standard:
            h["x-oss-range-behavior"] = "standard"

        def go():
            r = self.b.get_object(key, byte_range=byte_range, headers=h)
            body = r.read()
            return r, body

        r, body = self._call(go)
        res = self._res(r, body=body, crc=r.server_crc, etag=r.etag, object_type=r.object_type,
                        content_length=r.content_length, content_type=r.content_type,
                        content_range=r.content_range, last_modified=r.last_modified)
        if self.b.enable_crc and byte_range is None and r.client_crc is not None \
                and r.server_crc is not None:
            # what oss2.Bucket.get_object_to_file does after a full download
            oss2.utils.check_crc("get object", r.client_crc, r.server_crc, r.request_id)
        return res

    def head(self, key: str) -> Result:
        r = self._call(lambda: self.b.head_object(key))
        h = lower_headers(r.headers)
        meta = {k[len("x-oss-meta-"):]: v for k, v in h.items() if k.startswith("x-oss-meta-")}
        return self._res(r, crc=r.server_crc, etag=r.etag, object_type=r.object_type,
                         content_length=r.content_length, content_type=r.content_type,
                         last_modified=r.last_modified, storage_class=h.get("x-oss-storage-class"),
                         next_position=_int_or_none(h.get("x-oss-next-append-position")),
                         metadata=meta)

    def meta(self, key: str) -> Result:
        r = self._call(lambda: self.b.get_object_meta(key))
        h = lower_headers(r.headers)
        return self._res(r, etag=r.etag, content_length=r.content_length,
                         last_modified=r.last_modified,
                         crc=_int_or_none(h.get("x-oss-hash-crc64ecma")))

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.b.object_exists(key))

    def delete(self, key: str) -> Result:
        r = self._call(lambda: self.b.delete_object(key))
        return self._res(r)

    def copy(self, src: str, dst: str, headers: Optional[Dict[str, str]] = None,
             src_bucket: Optional[str] = None) -> Result:
        r = self._call(lambda: self.b.copy_object(src_bucket or self.bucket, src, dst,
                                                   headers=headers))
        return self._res(r, crc=r.crc, etag=r.etag)

    def list_page(self, prefix: str = "", delimiter: str = "", max_keys: int = 100,
                  start_after: str = "", token: Optional[str] = None) -> ListPage:
        r = self._call(lambda: self.b.list_objects_v2(prefix=prefix, delimiter=delimiter,
                                                       continuation_token=token or "",
                                                       start_after=start_after,
                                                       max_keys=max_keys))
        return ListPage(keys=[o.key for o in r.object_list], prefixes=list(r.prefix_list),
                        is_truncated=r.is_truncated, next_token=r.next_continuation_token or None,
                        objects=list(r.object_list))

    def iterate(self, prefix: str = "", delimiter: str = "", max_keys: int = 100,
                start_after: str = "") -> List[Any]:
        """oss2's own iterator (sends start-after together with continuation-token)."""
        return self._call(lambda: list(oss2.ObjectIteratorV2(
            self.b, prefix=prefix, delimiter=delimiter, start_after=start_after,
            max_keys=max_keys)))

    def bucket_info(self) -> Any:
        return self._call(lambda: self.b.get_bucket_info())

    def create_bucket(self) -> Result:
        r = self._call(lambda: self.b.create_bucket())
        return self._res(r)

    def presign_get(self, key: str, expires: int = 300) -> Tuple[str, Dict[str, str]]:
        return self.b.sign_url("GET", key, expires), {}

    def presign_put(self, key: str, expires: int = 300,
                    content_type: Optional[str] = None) -> Tuple[str, Dict[str, str]]:
        h = {"Content-Type": content_type} if content_type else None
        return self.b.sign_url("PUT", key, expires, headers=h), dict(h or {})


class V2Client(Client):
    flavor = "v2-v4"

    def __init__(self, endpoint: str, bucket: str = BUCKET, ak: str = ACCESS_KEY_ID,
                 sk: str = ACCESS_KEY_SECRET, anonymous: bool = False,
                 use_path_style: Optional[bool] = None, retry_max_attempts: Optional[int] = None):
        super().__init__(endpoint, bucket, ak, sk, anonymous)
        if anonymous:
            cred = ossv2.credentials.AnonymousCredentialsProvider()
            self.flavor = "v2-anon"
        else:
            cred = ossv2.credentials.StaticCredentialsProvider(ak, sk)
        cfg = ossv2.config.Config(
            region=REGION, endpoint=endpoint, credentials_provider=cred,
            # no automatic retries: a conformance suite must see the first answer (but note that
            # Client.get_object_to_file does nothing at all with fewer than 2 attempts)
            retryer=None if retry_max_attempts else ossv2.retry.NopRetryer(),
            retry_max_attempts=retry_max_attempts,
            connect_timeout=SDK_TIMEOUT, readwrite_timeout=SDK_TIMEOUT,
            use_path_style=use_path_style)
        self.c = ossv2.Client(cfg)

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except ossv2.exceptions.OperationError as e:
            inner = e.unwrap()
            if isinstance(inner, ossv2.exceptions.ServiceError):
                raise SdkError(self.flavor, inner.status_code, inner.code or "",
                               inner.request_id or "", inner.ec or "", inner.message or "",
                               lower_headers(inner.headers), dict(inner.error_fileds or {}),
                               inner) from e
            raise

    def _res(self, r: Any, **kw: Any) -> Result:
        return Result(status=r.status_code, headers=lower_headers(r.headers),
                      request_id=r.request_id, raw=r, **kw)

    @staticmethod
    def _ts(dt: Any) -> Optional[float]:
        return None if dt is None else dt.timestamp()

    @staticmethod
    def _etag(v: Optional[str]) -> Optional[str]:
        return None if v is None else v.strip('"')

    def append(self, key: str, position: int, data: Any, headers: Optional[Dict[str, str]] = None,
               init_crc: Optional[int] = None) -> Result:
        h = {k.lower(): v for k, v in (headers or {}).items()}
        req = ossv2.AppendObjectRequest(
            bucket=self.bucket, key=key, position=position, body=data,
            content_type=h.pop("content-type", None), content_md5=h.pop("content-md5", None),
            metadata={k[len("x-oss-meta-"):]: v for k, v in h.items() if k.startswith("x-oss-meta-")}
            or None)
        r = self._call(lambda: self.c.append_object(req))
        return self._res(r, next_position=r.next_position, crc=_int_or_none(r.hash_crc64),
                         etag=self._etag(r.headers.get("ETag")))

    def put(self, key: str, data: Any, headers: Optional[Dict[str, str]] = None,
            metadata: Optional[Dict[str, str]] = None, content_type: Optional[str] = None,
            forbid_overwrite: Optional[bool] = None) -> Result:
        h = {k.lower(): v for k, v in (headers or {}).items()}
        meta = dict(metadata or {})
        for k, v in list(h.items()):
            if k.startswith("x-oss-meta-"):
                meta[k[len("x-oss-meta-"):]] = v
        req = ossv2.PutObjectRequest(bucket=self.bucket, key=key, body=data,
                                     metadata=meta or None,
                                     content_type=content_type or h.get("content-type"),
                                     content_md5=h.get("content-md5"),
                                     forbid_overwrite=forbid_overwrite)
        r = self._call(lambda: self.c.put_object(req))
        return self._res(r, crc=_int_or_none(r.hash_crc64), etag=self._etag(r.etag))

    def get(self, key: str, byte_range: Optional[Tuple[Optional[int], Optional[int]]] = None,
            standard: bool = False, headers: Optional[Dict[str, str]] = None) -> Result:
        rng = None
        if byte_range is not None:
            a, b = byte_range
            rng = "bytes=" + ("" if a is None else str(a)) + "-" + ("" if b is None else str(b))
        req = ossv2.GetObjectRequest(bucket=self.bucket, key=key, range_header=rng,
                                     range_behavior="standard" if standard else None)

        def go():
            r = self.c.get_object(req)
            body = r.body.read()
            r.body.close()
            return r, body

        r, body = self._call(go)
        return self._res(r, body=body, crc=_int_or_none(r.hash_crc64), etag=self._etag(r.etag),
                         object_type=r.object_type, content_length=r.content_length,
                         content_type=r.content_type, content_range=r.content_range,
                         last_modified=self._ts(r.last_modified),
                         next_position=r.next_append_position)

    def head(self, key: str) -> Result:
        r = self._call(lambda: self.c.head_object(ossv2.HeadObjectRequest(bucket=self.bucket,
                                                                           key=key)))
        return self._res(r, crc=_int_or_none(r.hash_crc64), etag=self._etag(r.etag),
                         object_type=r.object_type, content_length=r.content_length,
                         content_type=r.content_type, last_modified=self._ts(r.last_modified),
                         storage_class=r.storage_class, next_position=r.next_append_position,
                         metadata=dict(r.metadata or {}))

    def meta(self, key: str) -> Result:
        r = self._call(lambda: self.c.get_object_meta(ossv2.GetObjectMetaRequest(
            bucket=self.bucket, key=key)))
        return self._res(r, etag=self._etag(r.etag), content_length=r.content_length,
                         last_modified=self._ts(r.last_modified), crc=_int_or_none(r.hash_crc64))

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.c.is_object_exist(self.bucket, key))

    def delete(self, key: str) -> Result:
        r = self._call(lambda: self.c.delete_object(ossv2.DeleteObjectRequest(bucket=self.bucket,
                                                                               key=key)))
        return self._res(r)

    def copy(self, src: str, dst: str, headers: Optional[Dict[str, str]] = None,
             src_bucket: Optional[str] = None) -> Result:
        h = {k.lower(): v for k, v in (headers or {}).items()}
        fo = h.get("x-oss-forbid-overwrite")
        req = ossv2.CopyObjectRequest(bucket=self.bucket, key=dst, source_key=src,
                                      source_bucket=src_bucket or self.bucket,
                                      forbid_overwrite=None if fo is None else fo == "true")
        r = self._call(lambda: self.c.copy_object(req))
        return self._res(r, crc=_int_or_none(r.hash_crc64), etag=self._etag(r.etag))

    def list_page(self, prefix: str = "", delimiter: str = "", max_keys: int = 100,
                  start_after: str = "", token: Optional[str] = None) -> ListPage:
        req = ossv2.ListObjectsV2Request(bucket=self.bucket, prefix=prefix or None,
                                         delimiter=delimiter or None, max_keys=max_keys,
                                         start_after=start_after or None,
                                         continuation_token=token)
        r = self._call(lambda: self.c.list_objects_v2(req))
        return ListPage(keys=[o.key for o in (r.contents or [])],
                        prefixes=[p.prefix for p in (r.common_prefixes or [])],
                        is_truncated=bool(r.is_truncated), next_token=r.next_continuation_token,
                        objects=list(r.contents or []))

    def iterate(self, prefix: str = "", delimiter: str = "", max_keys: int = 100,
                start_after: str = "") -> List[Any]:
        """The SDK's own paginator; returns the object entries of all pages."""
        p = self.c.list_objects_v2_paginator()
        req = ossv2.ListObjectsV2Request(bucket=self.bucket, prefix=prefix or None,
                                         delimiter=delimiter or None,
                                         start_after=start_after or None)
        out = []
        for page in self._call(lambda: list(p.iter_page(req, limit=max_keys))):
            out.extend(page.contents or [])
        return out

    def bucket_info(self) -> Any:
        return self._call(lambda: self.c.get_bucket_info(ossv2.GetBucketInfoRequest(
            bucket=self.bucket)))

    def create_bucket(self) -> Result:
        r = self._call(lambda: self.c.put_bucket(ossv2.PutBucketRequest(bucket=self.bucket)))
        return self._res(r)

    def presign_get(self, key: str, expires: int = 300) -> Tuple[str, Dict[str, str]]:
        import datetime

        r = self.c.presign(ossv2.GetObjectRequest(bucket=self.bucket, key=key),
                           expires=datetime.timedelta(seconds=expires))
        return r.url, dict(r.signed_headers or {})

    def presign_put(self, key: str, expires: int = 300,
                    content_type: Optional[str] = None) -> Tuple[str, Dict[str, str]]:
        import datetime

        r = self.c.presign(ossv2.PutObjectRequest(bucket=self.bucket, key=key,
                                                  content_type=content_type),
                           expires=datetime.timedelta(seconds=expires))
        return r.url, dict(r.signed_headers or {})


FLAVORS = ("oss2-v1", "oss2-v4", "v2-v4")


def make_client(flavor: str, endpoint: str, **kw: Any) -> Client:
    if flavor == "oss2-v1":
        return Oss2Client(endpoint, v4=False, **kw)
    if flavor == "oss2-v4":
        return Oss2Client(endpoint, v4=True, **kw)
    if flavor == "v2-v4":
        return V2Client(endpoint, **kw)
    raise ValueError(flavor)


def expect_error(fn: Callable[[], Any], status: int, code: Optional[str] = None) -> SdkError:
    """Run `fn`, require an SdkError with this status (and code); return it."""
    try:
        r = fn()
    except SdkError as e:
        assert (e.status, e.code if code is not None else None) == (status, code), \
            f"{e.flavor}: expected HTTP {status} {code}, got HTTP {e.status} {e.code!r} " \
            f"({e.message!r}, headers {e.headers})"
        return e
    raise AssertionError(f"expected HTTP {status} {code}, but the request succeeded: "
                         f"status {getattr(r, 'status', r)!r}, "
                         f"headers {getattr(r, 'headers', None)!r}")


# --------------------------------------------------------------------------------------------
# raw sockets (for what `requests` cannot send: absolute-form targets, truncated bodies, ...)


def signed_v1_head_block(server: "Server", method: str, key: str, params: Dict[str, Optional[str]],
                         content_length: Optional[int], *, target: Optional[str] = None,
                         host: Optional[str] = None, bucket: str = BUCKET,
                         extra: Optional[Dict[str, str]] = None) -> bytes:
    """The request line and headers (V1-signed) of a path-style request, as bytes."""
    hdrs = {"Date": http_date(), "Content-Type": "application/octet-stream"}
    hdrs.update(extra or {})
    hdrs["Authorization"] = v1_authorization(method, bucket, key, params, hdrs)
    q = build_query(params)
    if target is None:
        target = f"/{bucket}/{quote_key(key)}" + (f"?{q}" if q else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host or server.addr}"]
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def read_http_response(sock: socket.socket, timeout: float = 10.0,
                       head: bool = False) -> Tuple[int, Dict[str, str], bytes]:
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {buf!r}")
        buf += chunk
    head_bytes, _, rest = buf.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if head or status in (204, 304):
        return status, headers, b""
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest[:n]
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        data = rest
        while True:
            while b"\r\n" not in data:
                data += sock.recv(65536)
            size_line, _, data = data.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(data) < size + 2:
                data += sock.recv(65536)
            body += data[:size]
            data = data[size + 2:]
            if size == 0:
                return status, headers, body
    while True:  # read to EOF
        chunk = sock.recv(65536)
        if not chunk:
            return status, headers, rest
        rest += chunk


def raw_exchange(server: "Server", request: bytes, head: bool = False,
                 timeout: float = 10.0) -> Tuple[int, Dict[str, str], bytes]:
    with socket.create_connection((server.host, server.port), timeout=timeout) as s:
        s.sendall(request)
        return read_http_response(s, timeout, head=head)
