"""HeadObject / GetObjectMeta / errors decoded from x-oss-err (oss-protocol.md sections 0, 2)."""
from __future__ import annotations

import base64
import re
import time

import pytest

import oss2
import alibabacloud_oss_v2 as ossv2

from support import (BUCKET, crc64, expect_error, md5_b64, md5_hex_upper, parse_error_xml,
                     parse_http_date, raw_request)

APPENDABLE_ETAG_RE = re.compile(r'^"?[0-9A-F]{32}"?$')


def _recent(ts, slack=300):
    assert ts is not None, "Last-Modified missing"
    assert abs(time.time() - ts) < slack, f"Last-Modified {ts} is not close to now"


def test_head_normal_object(client, uniq):
    key = uniq + "normal.bin"
    data = b"normal object body\n" * 3
    client.put(key, data)
    h = client.head(key)
    assert h.status == 200
    assert h.object_type == "Normal"
    assert h.content_length == len(data)
    assert h.crc == crc64(data)
    assert h.storage_class == "Standard"
    assert h.headers.get("etag") == f'"{md5_hex_upper(data)}"', \
        "Normal ETag = quoted uppercase hex MD5"
    assert h.etag == md5_hex_upper(data)
    assert h.next_position is None, "x-oss-next-append-position only for Appendable objects"
    assert h.headers.get("content-md5") == md5_b64(data)
    assert h.headers.get("accept-ranges") == "bytes"
    _recent(h.last_modified)
    assert h.request_id


def test_head_appendable_object(client, uniq):
    key = uniq + "app.log"
    client.append(key, 0, b"abc")
    h1 = client.head(key)
    assert h1.object_type == "Appendable"
    assert (h1.content_length, h1.next_position, h1.crc) == (3, 3, crc64(b"abc"))
    assert h1.storage_class == "Standard"
    assert h1.etag, "ETag missing"
    assert APPENDABLE_ETAG_RE.match(h1.headers["etag"]), h1.headers["etag"]
    _recent(h1.last_modified)
    client.append(key, 3, b"defg")
    h2 = client.head(key)
    assert (h2.content_length, h2.next_position, h2.crc) == (7, 7, crc64(b"abcdefg"))
    assert h2.etag != h1.etag, "the ETag of an appendable object must change when it grows"
    assert h2.last_modified >= h1.last_modified


def test_get_object_meta(client, uniq):
    for key, make in ((uniq + "n.txt", "put"), (uniq + "a.log", "append")):
        data = b"0123456789abcdef"
        if make == "put":
            client.put(key, data)
        else:
            client.append(key, 0, data)
        m = client.meta(key)
        assert m.status == 200
        assert m.content_length == len(data)
        assert m.crc == crc64(data)
        assert m.etag == client.head(key).etag
        _recent(m.last_modified)


def test_head_missing_key_decodes_x_oss_err(client, uniq):
    key = uniq + "nope"
    e = expect_error(lambda: client.head(key), 404, "NoSuchKey")
    assert e.request_id, "request id missing"
    assert e.request_id == e.headers.get("x-oss-request-id")
    assert "x-oss-err" in e.headers, "HEAD errors carry the error XML in x-oss-err"


def test_oss2_head_missing_key_exception(oss2_v1, uniq):
    with pytest.raises(oss2.exceptions.NoSuchKey) as ei:
        oss2_v1.b.head_object(uniq + "missing")
    e = ei.value
    assert e.status == 404
    assert e.code == "NoSuchKey"
    assert e.request_id and e.request_id == e.headers.get("x-oss-request-id")
    assert e.details.get("RequestId") == e.request_id
    assert e.body in (b"", ""), "HEAD responses have no body"
    with pytest.raises(oss2.exceptions.NoSuchKey):
        oss2_v1.b.get_object_meta(uniq + "missing")
    assert oss2_v1.b.object_exists(uniq + "missing") is False


def test_v2_head_missing_key_service_error(v2, uniq):
    with pytest.raises(ossv2.exceptions.OperationError) as ei:
        v2.c.head_object(ossv2.HeadObjectRequest(bucket=BUCKET, key=uniq + "missing"))
    e = ei.value.unwrap()
    assert isinstance(e, ossv2.exceptions.ServiceError)
    assert (e.status_code, e.code) == (404, "NoSuchKey")
    assert e.request_id
    assert e.ec, "EC should come from the x-oss-err XML or the x-oss-ec header"
    assert v2.c.is_object_exist(BUCKET, uniq + "missing") is False


def test_raw_head_missing_key(server, uniq):
    key = uniq + "raw-missing"
    r = raw_request(server, "HEAD", key)
    assert r.status_code == 404
    assert r.content == b""
    err = base64.b64decode(r.headers["x-oss-err"])
    d = parse_error_xml(err)
    assert d["Code"] == "NoSuchKey"
    assert d["RequestId"] == r.headers["x-oss-request-id"]
    assert d.get("Message")


def test_get_missing_key_body(client, uniq):
    key = uniq + "get-missing"
    e = expect_error(lambda: client.get(key), 404, "NoSuchKey")
    assert e.details.get("Key") == key, "NoSuchKey error XML carries <Key>"
    assert e.details.get("RequestId") == e.request_id


def test_head_after_delete(client, uniq):
    key = uniq + "gone"
    client.put(key, b"x")
    client.head(key)
    client.delete(key)
    expect_error(lambda: client.head(key), 404, "NoSuchKey")
    assert client.exists(key) is False


def test_last_modified_header_format(client, uniq):
    key = uniq + "lm"
    client.append(key, 0, b"x")
    h = client.head(key)
    raw = h.headers["last-modified"]
    assert re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$",
                    raw), raw
    assert abs(parse_http_date(raw) - h.last_modified) < 1


def test_conditional_get(server, uniq):
    key = uniq + "cond.log"
    raw_request(server, "POST", key, params={"append": "", "position": "0"}, body=b"v1")
    etag = raw_request(server, "HEAD", key).headers["etag"]
    r = raw_request(server, "GET", key, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    r = raw_request(server, "GET", key, headers={"If-None-Match": '"0000"'})
    assert (r.status_code, r.content) == (200, b"v1")
    r = raw_request(server, "GET", key, headers={"If-Match": '"0000"'})
    assert r.status_code == 412
    assert parse_error_xml(r.content)["Code"] == "PreconditionFailed"
    r = raw_request(server, "GET", key, headers={"If-Match": etag, "Range": "bytes=1-1",
                                                   "x-oss-range-behavior": "standard"})
    assert (r.status_code, r.content) == (206, b"1")
    # the appendable object grows: the old ETag no longer matches
    raw_request(server, "POST", key, params={"append": "", "position": "2"}, body=b"v2")
    r = raw_request(server, "GET", key, headers={"If-Match": etag})
    assert r.status_code == 412


def test_conditional_dates(server, uniq):
    from support import http_date

    key = uniq + "cond-date"
    raw_request(server, "PUT", key, body=b"x")
    future, past = http_date(time.time() + 3600), http_date(time.time() - 3600)
    r = raw_request(server, "GET", key, headers={"If-Modified-Since": future})
    assert r.status_code == 304
    r = raw_request(server, "GET", key, headers={"If-Modified-Since": past})
    assert r.status_code == 200
    r = raw_request(server, "GET", key, headers={"If-Unmodified-Since": past})
    assert r.status_code == 412
    r = raw_request(server, "HEAD", key, headers={"If-Unmodified-Since": future})
    assert r.status_code == 200
    r = raw_request(server, "GET", key, headers={"If-Modified-Since": "not a date"})
    assert r.status_code == 200, "an unparsable If-Modified-Since is ignored"


def test_oss2_not_modified(oss2_v1, uniq):
    key = uniq + "nm"
    oss2_v1.b.put_object(key, b"x")
    etag = oss2_v1.b.head_object(key).headers["etag"]
    with pytest.raises(oss2.exceptions.NotModified):
        oss2_v1.b.get_object(key, headers={"If-None-Match": etag})
    with pytest.raises(oss2.exceptions.PreconditionFailed):
        oss2_v1.b.get_object(key, headers={"If-Match": '"nope"'})


def test_head_implicit_directory_is_404(client, uniq):
    client.put(uniq + "dir/child.txt", b"x")
    expect_error(lambda: client.head(uniq + "dir/"), 404, "NoSuchKey")
    expect_error(lambda: client.head(uniq + "dir"), 404, "NoSuchKey")
    client.put(uniq + "dir/", b"")  # explicit directory marker
    h = client.head(uniq + "dir/")
    assert (h.content_length, h.object_type) == (0, "Normal")
