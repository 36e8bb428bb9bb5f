"""PutObject / DeleteObject / CopyObject / metadata / forbid-overwrite (oss-protocol.md section 5)."""
from __future__ import annotations

import pytest

import alibabacloud_oss_v2 as ossv2

from support import BUCKET, crc64, expect_error, md5_hex_upper

EMPTY_MD5 = "D41D8CD98F00B204E9800998ECF8427E"


def test_put_get_round_trip(client, uniq):
    key = uniq + "obj.bin"
    data = bytes(range(256)) * 10
    r = client.put(key, data)
    assert r.status == 200
    assert r.crc == crc64(data)
    assert r.etag == md5_hex_upper(data)
    g = client.get(key)
    assert (g.status, g.body, g.crc, g.object_type) == (200, data, crc64(data), "Normal")
    assert g.content_length == len(data)


def test_empty_object(client, uniq):
    key = uniq + "empty"
    r = client.put(key, b"")
    assert r.crc == 0
    assert r.etag == EMPTY_MD5
    g = client.get(key)
    assert (g.status, g.body, g.content_length, g.crc) == (200, b"", 0, 0)
    h = client.head(key)
    assert (h.content_length, h.object_type, h.crc) == (0, "Normal", 0)
    assert h.headers.get("etag") == f'"{EMPTY_MD5}"'


def test_put_content_md5(client, uniq):
    from support import md5_b64

    key = uniq + "md5"
    client.put(key, b"good", headers={"Content-MD5": md5_b64(b"good")})
    expect_error(lambda: client.put(key, b"evil", headers={"Content-MD5": md5_b64(b"good")}),
                 400, "InvalidDigest")
    assert client.get(key).body == b"good"


def test_delete_returns_204_even_if_missing(client, uniq):
    key = uniq + "d"
    client.put(key, b"x")
    assert client.delete(key).status == 204
    assert client.exists(key) is False
    assert client.delete(key).status == 204
    assert client.delete(uniq + "never-existed").status == 204


def test_delete_appendable(client, uniq):
    key = uniq + "d.log"
    client.append(key, 0, b"abc")
    assert client.delete(key).status == 204
    expect_error(lambda: client.head(key), 404, "NoSuchKey")


@pytest.mark.parametrize("src_name", ["plain.txt", "dir/with space+plus.txt", "日志/ü.log"])
def test_copy_normal_object(client, uniq, src_name):
    src, dst = uniq + src_name, uniq + "copy/" + src_name
    data = b"copy me " * 100
    client.put(src, data, metadata={"colour": "blue"}, content_type="text/x-copy")
    r = client.copy(src, dst)
    assert r.status == 200
    assert r.crc == crc64(data)
    assert r.etag == md5_hex_upper(data)
    g = client.get(dst)
    assert g.body == data
    assert g.crc == crc64(data)
    h = client.head(dst)
    assert h.object_type == "Normal"
    assert h.metadata.get("colour") == "blue", "default metadata directive is COPY"
    assert h.content_type == "text/x-copy"
    assert client.get(src).body == data


def test_copy_missing_source(client, uniq):
    expect_error(lambda: client.copy(uniq + "nope", uniq + "dst"), 404, "NoSuchKey")


def test_copy_forbid_overwrite(client, uniq):
    src, dst = uniq + "s", uniq + "d"
    client.put(src, b"src")
    client.put(dst, b"dst")
    expect_error(lambda: client.copy(src, dst, headers={"x-oss-forbid-overwrite": "true"}),
                 409, "FileAlreadyExists")
    assert client.get(dst).body == b"dst"


def test_user_metadata_round_trip(client, uniq):
    key = uniq + "meta.txt"
    meta = {"author": "alice", "magic": "abracadabra", "with-dash": "x y z"}
    client.put(key, b"m", metadata=meta)
    h = client.head(key)
    assert {k: h.metadata.get(k) for k in meta} == meta
    assert h.headers.get("x-oss-meta-author") == "alice"
    g = client.get(key)
    assert g.headers.get("x-oss-meta-magic") == "abracadabra"


def test_user_metadata_names_are_lowercased(oss2_v1, uniq):
    key = uniq + "case.txt"
    oss2_v1.b.put_object(key, b"x", headers={"X-Oss-Meta-MixedCase": "Value"})
    h = oss2_v1.b.head_object(key)
    assert h.headers.get("x-oss-meta-mixedcase") == "Value"


def test_content_type_guessed_by_sdk(client, uniq):
    """Both SDKs send a Content-Type derived from the key's extension; the server stores it."""
    for name, expect in (("a.txt", "text/plain"), ("b.json", "application/json"),
                         ("c.html", "text/html")):
        client.put(uniq + name, b"{}")
        assert client.head(uniq + name).content_type == expect, name
    client.put(uniq + "d.weird", b"x", content_type="application/x-conformance")
    assert client.head(uniq + "d.weird").content_type == "application/x-conformance"
    g = client.get(uniq + "d.weird")
    assert g.content_type == "application/x-conformance"


def test_content_type_default(oss2_v1, uniq):
    # oss2 sends no Content-Type for unknown extensions; the object gets a default type
    key = uniq + "noext"
    oss2_v1.b.put_object(key, b"x")
    ct = oss2_v1.b.head_object(key).content_type
    assert ct == "application/octet-stream"


def test_forbid_overwrite(client, uniq):
    key = uniq + "fo.txt"
    r = client.put(key, b"first", forbid_overwrite=True)
    assert r.status == 200, "forbid-overwrite on a new key succeeds"
    e = expect_error(lambda: client.put(key, b"second", forbid_overwrite=True), 409,
                     "FileAlreadyExists")
    assert e.request_id
    assert client.get(key).body == b"first"
    client.put(key, b"third", forbid_overwrite=False)
    assert client.get(key).body == b"third"


def test_forbid_overwrite_over_appendable(client, uniq):
    key = uniq + "fo.log"
    client.append(key, 0, b"log")
    expect_error(lambda: client.put(key, b"x", forbid_overwrite=True), 409, "FileAlreadyExists")
    h = client.head(key)
    assert (h.object_type, h.content_length) == ("Appendable", 3)


def test_oss2_put_crc_check(oss2_v4, uniq):
    # oss2 compares its own CRC of the upload with x-oss-hash-crc64ecma (InconsistentError)
    r = oss2_v4.b.put_object(uniq + "crc", b"hello world")
    assert r.crc == 5981764153023615706


def test_v2_put_and_download_crc_check(server, uniq, tmp_path):
    from support import V2Client

    v2 = V2Client(server.endpoint, retry_max_attempts=2)
    key = uniq + "v2crc.bin"
    data = b"v2 payload " * 999
    r = v2.c.put_object(ossv2.PutObjectRequest(bucket=BUCKET, key=key, body=data))
    assert int(r.hash_crc64) == crc64(data)
    out = tmp_path / "dl"
    v2.c.get_object_to_file(ossv2.GetObjectRequest(bucket=BUCKET, key=key), str(out))
    assert out.read_bytes() == data


def test_cache_headers_stored(oss2_v1, uniq):
    key = uniq + "hdrs"
    oss2_v1.b.put_object(key, b"x", headers={"Cache-Control": "no-cache",
                                             "Content-Disposition": "attachment; filename=x",
                                             "Content-Encoding": "identity",
                                             "Expires": "Thu, 01 Dec 2044 16:00:00 GMT"})
    h = oss2_v1.b.head_object(key).headers
    assert h.get("cache-control") == "no-cache"
    assert h.get("content-disposition") == "attachment; filename=x"
    assert h.get("expires") == "Thu, 01 Dec 2044 16:00:00 GMT"
