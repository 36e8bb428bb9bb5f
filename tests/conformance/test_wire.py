"""Wire-level details below the SDKs (oss-protocol.md section 0, design.md "Command line")."""
from __future__ import annotations

import base64
import re

import pytest

from support import (BUCKET, REQUEST_ID_RE, Oss2Client, crc64, parse_error_xml, parse_http_date,
                     quote_key, raw_exchange, raw_request, signed_v1_head_block)


def test_common_response_headers(server, uniq):
    for r in (raw_request(server, "PUT", uniq + "k", body=b"abc"),
              raw_request(server, "GET", uniq + "k"),
              raw_request(server, "GET", uniq + "missing"),
              raw_request(server, "HEAD", uniq + "missing")):
        rid = r.headers.get("x-oss-request-id", "")
        assert REQUEST_ID_RE.match(rid), f"x-oss-request-id {rid!r} is not 24 uppercase hex chars"
        assert abs(parse_http_date(r.headers["date"]) - __import__("time").time()) < 300
        assert r.headers.get("server") == "AliyunOSS"


def test_request_ids_are_unique(server, uniq):
    ids = {raw_request(server, "GET", uniq + "missing").headers["x-oss-request-id"]
           for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("bare", [True, False], ids=["append&position", "append=&position"])
def test_valueless_subresource_forms(server, uniq, bare):
    key = uniq + "form.log"
    r = raw_request(server, "POST", key, params={"append": "", "position": "0"}, body=b"ab",
                    bare_params=bare)
    assert r.status_code == 200, r.text
    assert r.headers["x-oss-next-append-position"] == "2"
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"ab"))
    assert r.content == b""
    assert r.headers.get("etag")


@pytest.mark.parametrize("params,label", [
    ({"append": ""}, "missing position"),
    ({"append": "", "position": "abc"}, "non-integer position"),
    ({"append": "", "position": "-1"}, "negative position"),
])
def test_append_bad_position_argument(server, uniq, params, label):
    key = uniq + "bad.log"
    r = raw_request(server, "POST", key, params=params, body=b"x")
    assert r.status_code == 400, f"{label}: {r.status_code} {r.text}"
    assert parse_error_xml(r.content)["Code"] == "InvalidArgument", label
    assert raw_request(server, "HEAD", key).status_code == 404, f"{label} created the object"


def test_key_too_long(server):
    r = raw_request(server, "PUT", "k" * 1024, body=b"x")
    assert r.status_code == 400
    assert parse_error_xml(r.content)["Code"] == "InvalidObjectName"
    r = raw_request(server, "PUT", "k" * 1023, body=b"x")
    assert r.status_code == 200, r.text


def test_head_success_has_no_body_but_length(server, uniq):
    key = uniq + "h"
    raw_request(server, "PUT", key, body=b"12345")
    st, h, body = raw_exchange(server, signed_v1_head_block(server, "HEAD", key, {}, None),
                               head=True)
    assert st == 200
    assert h.get("content-length") == "5"
    assert h.get("x-oss-object-type") == "Normal"


def test_get_object_meta_raw(server, uniq):
    key = uniq + "m.log"
    raw_request(server, "POST", key, params={"append": "", "position": "0"}, body=b"meta")
    r = raw_request(server, "HEAD", key, params={"objectMeta": ""})
    assert r.status_code == 200
    assert r.headers["content-length"] == "4"
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"meta"))
    assert r.headers.get("etag")
    assert r.headers.get("last-modified")


def test_virtual_hosted_request(server, uniq):
    key = uniq + "vh.txt"
    raw_request(server, "PUT", key, body=b"virtual")
    host = f"{BUCKET}.localhost:{server.port}"
    st, h, body = raw_exchange(server, signed_v1_head_block(
        server, "GET", key, {}, None, target="/" + quote_key(key), host=host))
    assert (st, body) == (200, b"virtual"), (st, h, body)


def test_absolute_form_request_line(server, uniq):
    """Clients configured with an HTTP proxy send `GET http://bucket.host:port/key`."""
    key = uniq + "abs.txt"
    raw_request(server, "PUT", key, body=b"absolute")
    host = f"{BUCKET}.localhost:{server.port}"
    st, h, body = raw_exchange(server, signed_v1_head_block(
        server, "GET", key, {}, None, target=f"http://{host}/{quote_key(key)}", host=host))
    assert (st, body) == (200, b"absolute"), (st, h, body)
    # absolute form, path style
    st, h, body = raw_exchange(server, signed_v1_head_block(
        server, "GET", key, {}, None,
        target=f"http://{server.addr}/{BUCKET}/{quote_key(key)}"))
    assert (st, body) == (200, b"absolute"), (st, h, body)


def test_put_without_length_is_411(server, uniq):
    key = uniq + "nolen"
    req = signed_v1_head_block(server, "PUT", key, {}, None)
    st, h, body = raw_exchange(server, req)
    assert st == 411, (st, body)
    assert parse_error_xml(body)["Code"] == "MissingContentLength"


def test_chunked_put_raw(server, uniq):
    key = uniq + "chunked"
    head = signed_v1_head_block(server, "PUT", key, {}, None,
                                extra={"Transfer-Encoding": "chunked"})
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    st, h, resp = raw_exchange(server, head + body)
    assert st == 200, resp
    assert h.get("x-oss-hash-crc64ecma") == str(crc64(b"hello world"))
    assert raw_request(server, "GET", key).content == b"hello world"


def test_encoded_slash_equals_slash(server, uniq):
    """oss2 sends '/' inside keys as %2F, the v2 SDK as '/': both name the same object."""
    key = uniq + "dir/sub/file.txt"
    Oss2Client(server.endpoint).b.put_object(key, b"slash")
    from support import V2Client
    assert V2Client(server.endpoint).get(key).body == b"slash"
    import requests
    from support import http_date, v1_authorization
    hdrs = {"Date": http_date()}
    hdrs["Authorization"] = v1_authorization("GET", BUCKET, key, {}, hdrs)
    r = requests.get(f"{server.endpoint}/{BUCKET}/{key}", headers=hdrs, timeout=10)
    assert (r.status_code, r.content) == (200, b"slash")


def test_error_ec_header_consistent(server, uniq):
    r = raw_request(server, "HEAD", uniq + "missing")
    d = parse_error_xml(base64.b64decode(r.headers["x-oss-err"]))
    if "EC" in d or "x-oss-ec" in r.headers:
        assert d.get("EC") == r.headers.get("x-oss-ec")
        assert re.match(r"^\d{4}-\d{8}$", d["EC"])


def test_append_storage_class_at_creation(server, uniq):
    key = uniq + "ia.log"
    r = raw_request(server, "POST", key, params={"append": "", "position": "0"}, body=b"ia",
                    headers={"x-oss-storage-class": "IA"})
    assert r.status_code == 200, r.text
    assert raw_request(server, "HEAD", key).headers.get("x-oss-storage-class") == "IA"
    r = raw_request(server, "POST", uniq + "cold.log", params={"append": "", "position": "0"},
                    body=b"x", headers={"x-oss-storage-class": "ColdArchive"})
    assert r.status_code == 400, "appendable objects cannot be ColdArchive"
    assert raw_request(server, "HEAD", uniq + "cold.log").status_code == 404


@pytest.mark.parametrize("method,params", [
    ("POST", {"append": "", "position": "0"}),
    ("PUT", {}),
])
def test_oversized_upload_rejected_before_body(server, uniq, method, params):
    """A declared Content-Length above 5 GiB is refused at once (400 InvalidArgument), without
    waiting for a body that will never be accepted."""
    key = uniq + "huge"
    head = signed_v1_head_block(server, method, key, params, 5 * 2 ** 30 + 1)
    st, h, body = raw_exchange(server, head, timeout=3)
    assert st == 400, (st, body)
    assert parse_error_xml(body)["Code"] == "InvalidArgument"
    assert h.get("connection", "").lower() == "close", \
        "the unread 5 GiB body can only be skipped by closing: say 'Connection: close'"
    assert raw_request(server, "HEAD", key).status_code == 404


def test_append_beyond_5gib_total_rejected(server, uniq):
    """Total appendable size is capped at 5 GiB: an append whose end would pass the cap is
    refused from its headers alone (position + Content-Length)."""
    key = uniq + "cap.log"
    raw_request(server, "POST", key, params={"append": "", "position": "0"}, body=b"abc")
    head = signed_v1_head_block(server, "POST", key, {"append": "", "position": "3"},
                                5 * 2 ** 30 - 2)
    try:
        st, h, body = raw_exchange(server, head, timeout=3)
    except TimeoutError:
        pytest.fail("no answer within 3 s: the server waits for (and would buffer) a body that "
                    "can only be refused, instead of checking position + Content-Length first")
    assert st == 400, (st, body)
    assert raw_request(server, "HEAD", key).headers["content-length"] == "3"


def _split_body_exchange(srv, method, key, params, body, sk=None, bucket=BUCKET):
    """Send the request head, pause, then the body (as http.client does in two writes), read
    the response, and report whether the server then closed the connection."""
    import socket
    import time

    from support import ACCESS_KEY_SECRET, build_query, http_date, read_http_response, \
        v1_authorization

    hdrs = {"Date": http_date(), "Content-Type": "application/octet-stream"}
    hdrs["Authorization"] = v1_authorization(method, bucket, key, params, hdrs,
                                             sk=sk or ACCESS_KEY_SECRET)
    q = build_query(params)
    lines = [f"{method} /{bucket}/{quote_key(key)}" + (f"?{q}" if q else "") + " HTTP/1.1",
             f"Host: {srv.addr}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    with socket.create_connection((srv.host, srv.port), timeout=5) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        time.sleep(0.15)
        try:
            s.sendall(body)
        except OSError:
            pass
        st, h, _ = read_http_response(s, 5)
        time.sleep(0.3)
        s.settimeout(0.5)
        try:
            closed = s.recv(1) == b""
        except socket.timeout:
            closed = False
        except ConnectionResetError:
            closed = True
    return st, h, closed


@pytest.mark.parametrize("case", ["bad-signature", "position-mismatch", "no-such-bucket"])
def test_early_error_response_keeps_connection_usable(server, uniq, case):
    """An error answered before the request body was read must either drain the body and keep
    the connection, or announce `Connection: close`.  Closing silently makes keep-alive clients
    (requests/urllib3, hyper) fail their *next* request with 'connection closed without
    response'."""
    key = uniq + "early.log"
    raw_request(server, "POST", key, params={"append": "", "position": "0"}, body=b"abc")
    body = b"z" * 10
    if case == "bad-signature":
        st, h, closed = _split_body_exchange(server, "POST", key,
                                             {"append": "", "position": "3"}, body, sk="bad")
        assert st == 403
    elif case == "position-mismatch":
        st, h, closed = _split_body_exchange(server, "POST", key,
                                             {"append": "", "position": "1"}, body)
        assert st == 409
    else:
        st, h, closed = _split_body_exchange(server, "POST", key,
                                             {"append": "", "position": "0"}, body,
                                             bucket="no-such-bucket-early")
        assert st == 404
    if closed:
        assert h.get("connection", "").lower() == "close", \
            f"HTTP {st}: server closed the keep-alive connection without 'Connection: close'"


@pytest.mark.parametrize("fault,status", [("error500", 500), ("throttle503", 503)])
def test_fault_error_keeps_connection_usable(server_factory, fault, status):
    srv = server_factory.start("--fault", f"{fault}:1.0", name="fault-keepalive")
    st, h, closed = _split_body_exchange(srv, "POST", "k.log", {"append": "", "position": "0"},
                                         b"z" * 10)
    assert st == status
    if closed:
        assert h.get("connection", "").lower() == "close", \
            f"HTTP {st} ({fault}): server closed the connection without 'Connection: close'"
    srv.kill()
