"""AppendObject semantics, driven through each SDK (oss-protocol.md section 1)."""
from __future__ import annotations

import pytest

import oss2
import alibabacloud_oss_v2 as ossv2

from support import (ACCESS_KEY_ID, ACCESS_KEY_SECRET, BUCKET, V2Client, crc64, expect_error,
                     md5_b64)


def test_crc64_reference_vectors():
    # the suite's own CRC-64/XZ must agree with the documented check values and with crcmod
    # (pulled in by oss2), which is what the SDKs use for their client-side checks
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA == 11051210869376104954
    assert crc64(b"") == 0
    assert crc64(b"hello world") == 5981764153023615706
    assert crc64(b"hello world!") == 0x8483C0FA32607D61
    assert crc64(b"world", crc64(b"hello ")) == crc64(b"hello world")
    from oss2.utils import Crc64
    c = Crc64(0)
    c.update(b"123456789")
    assert c.crc == crc64(b"123456789")


CHUNKS = [b"first line\n", b"x", b"\x00\xff binary \r\n" * 37, "ünïcødé ✓\n".encode(), b"last"]


def test_append_sequence(client, uniq):
    key = uniq + "seq.log"
    content = b""
    for i, chunk in enumerate(CHUNKS):
        r = client.append(key, len(content), chunk)
        content += chunk
        assert r.status == 200, f"append #{i}"
        assert r.next_position == len(content), f"append #{i}: next position"
        assert r.headers.get("x-oss-next-append-position") == str(len(content))
        assert r.crc == crc64(content), f"append #{i}: x-oss-hash-crc64ecma must be the " \
                                        f"CRC of the whole object, not of the chunk"
        assert r.request_id, "x-oss-request-id missing"
    g = client.get(key)
    assert g.status == 200
    assert g.body == content
    assert g.crc == crc64(content)
    assert g.object_type == "Appendable"
    h = client.head(key)
    assert (h.content_length, h.next_position, h.crc) == (len(content), len(content),
                                                          crc64(content))


def test_append_creates_object_at_position_zero(client, uniq):
    key = uniq + "new.log"
    assert not client.exists(key)
    r = client.append(key, 0, b"hello")
    assert (r.status, r.next_position, r.crc) == (200, 5, crc64(b"hello"))
    h = client.head(key)
    assert h.object_type == "Appendable"
    assert h.content_length == 5


def test_oss2_sdk_crc_check_with_init_crc(server, uniq, tmp_path):
    """oss2 (enable_crc=True, the default) verifies every append's returned CRC against its own
    running CRC when init_crc is given; a wrong server CRC raises InconsistentError."""
    for v4 in (False, True):
        auth = (oss2.AuthV4 if v4 else oss2.Auth)(ACCESS_KEY_ID, ACCESS_KEY_SECRET)
        b = oss2.Bucket(auth, server.endpoint, BUCKET, region="cn-hangzhou", enable_crc=True,
                        connect_timeout=15)
        assert b.enable_crc
        key = uniq + ("v4" if v4 else "v1") + ".log"
        pos, crc, content = 0, 0, b""
        for chunk in CHUNKS:
            r = b.append_object(key, pos, chunk, init_crc=crc)  # raises on CRC mismatch
            content += chunk
            pos, crc = r.next_position, r.crc
            assert (pos, crc) == (len(content), crc64(content))
        # a full download through oss2 with its CRC adapter
        g = b.get_object(key)
        data = g.read()
        assert data == content
        assert g.client_crc == g.server_crc == crc64(content)
        out = tmp_path / ("v4" if v4 else "v1")
        b.get_object_to_file(key, str(out))  # checks the CRC itself (InconsistentError)
        assert out.read_bytes() == content


def test_v2_append_only_file(server, uniq):
    """alibabacloud-oss-v2's AppendOnlyFile: HEAD on open, append at its offset, track CRC."""
    c = V2Client(server.endpoint).c
    key = uniq + "aof.log"
    content = b""
    with c.append_file(BUCKET, key) as f:
        for chunk in CHUNKS[:3]:
            n = f.write(chunk)
            content += chunk
            assert n == len(chunk)
    # re-open: the SDK HEADs the object and must see Appendable + length + crc
    with c.append_file(BUCKET, key) as f:
        assert f._offset == len(content)
        for chunk in CHUNKS[3:]:
            f.write(chunk)
            content += chunk
        assert f._offset == len(content)
        assert int(f._hash_crc64) == crc64(content)
    r = c.get_object(ossv2.GetObjectRequest(bucket=BUCKET, key=key))
    assert r.body.read() == content


def test_position_not_equal_to_length(client, uniq):
    key = uniq + "pos.log"
    client.append(key, 0, b"0123456789")
    for bad in (5, 9, 11, 20, 0):
        e = expect_error(lambda: client.append(key, bad, b"zz"), 409, "PositionNotEqualToLength")
        assert e.headers.get("x-oss-next-append-position") == "10", \
            f"position {bad}: 409 must carry x-oss-next-append-position = current length"
        assert e.request_id
    h = client.head(key)
    assert (h.content_length, h.crc) == (10, crc64(b"0123456789")), "failed appends changed data"
    assert client.get(key).body == b"0123456789"


def test_position_nonzero_on_missing_object(client, uniq):
    key = uniq + "missing.log"
    e = expect_error(lambda: client.append(key, 7, b"abc"), 409, "PositionNotEqualToLength")
    assert e.headers.get("x-oss-next-append-position") == "0"
    assert not client.exists(key)


def test_oss2_position_exception_class(oss2_v1, uniq):
    key = uniq + "cls.log"
    oss2_v1.b.append_object(key, 0, b"abc")
    try:
        oss2_v1.b.append_object(key, 1, b"zz")
    except oss2.exceptions.PositionNotEqualToLength as e:
        assert e.status == 409
        assert e.code == "PositionNotEqualToLength"
        assert e.next_position == 3
        assert e.request_id and e.request_id == e.headers.get("x-oss-request-id")
        assert e.details.get("RequestId") == e.request_id, "XML RequestId != x-oss-request-id"
    except KeyError as e:  # pragma: no cover - what oss2 does when the header is missing
        pytest.fail(f"oss2 crashed building PositionNotEqualToLength (missing header {e})")
    else:
        pytest.fail("append at a wrong position succeeded")


def test_v2_position_error_fields(v2, uniq):
    key = uniq + "v2pos.log"
    v2.append(key, 0, b"abcd")
    try:
        v2.c.append_object(ossv2.AppendObjectRequest(bucket=BUCKET, key=key, position=1,
                                                     body=b"x"))
    except ossv2.exceptions.OperationError as oe:
        e = oe.unwrap()
        assert isinstance(e, ossv2.exceptions.ServiceError), repr(e)
        assert (e.status_code, e.code) == (409, "PositionNotEqualToLength")
        assert e.headers.get("x-oss-next-append-position") == "4"
        assert e.request_id
        assert e.message
    else:
        pytest.fail("append at a wrong position succeeded")


def test_zero_length_append(client, uniq):
    key = uniq + "zero.log"
    r1 = client.append(key, 0, b"abc")
    h1 = client.head(key)
    r = client.append(key, 3, b"")
    assert r.status == 200
    assert r.next_position == 3
    assert r.crc == crc64(b"abc")
    h2 = client.head(key)
    assert (h2.content_length, h2.crc, h2.object_type) == (3, crc64(b"abc"), "Appendable")
    assert h2.etag == h1.etag, "a zero-length append must not change the object (ETag)"
    assert client.get(key).body == b"abc"
    assert r1.next_position == 3


def test_zero_length_append_creates_empty_appendable(client, uniq):
    key = uniq + "empty.log"
    r = client.append(key, 0, b"")
    assert (r.status, r.next_position, r.crc) == (200, 0, 0)
    h = client.head(key)
    assert (h.object_type, h.content_length, h.next_position, h.crc) == ("Appendable", 0, 0, 0)
    # position 0 is still valid while the appendable object is empty
    r = client.append(key, 0, b"now")
    assert (r.next_position, r.crc) == (3, crc64(b"now"))


def test_object_not_appendable_after_put(client, uniq):
    key = uniq + "normal.txt"
    client.put(key, b"normal object")
    for pos in (13, 0, 5):
        e = expect_error(lambda: client.append(key, pos, b"more"), 409, "ObjectNotAppendable")
        assert e.request_id
    h = client.head(key)
    assert (h.object_type, h.content_length) == ("Normal", 13)


def test_oss2_object_not_appendable_class(oss2_v4, uniq):
    key = uniq + "n.txt"
    oss2_v4.b.put_object(key, b"data")
    with pytest.raises(oss2.exceptions.ObjectNotAppendable) as ei:
        oss2_v4.b.append_object(key, 4, b"more")
    assert ei.value.status == 409


def test_put_over_appendable_makes_it_normal(client, uniq):
    key = uniq + "was-appendable.log"
    client.append(key, 0, b"appendable data")
    assert client.head(key).object_type == "Appendable"
    r = client.put(key, b"replaced")
    assert r.crc == crc64(b"replaced")
    h = client.head(key)
    assert h.object_type == "Normal"
    assert h.content_length == 8
    assert h.next_position is None, "Normal objects carry no x-oss-next-append-position"
    assert client.get(key).body == b"replaced"
    expect_error(lambda: client.append(key, 8, b"x"), 409, "ObjectNotAppendable")


def test_append_after_delete_starts_over(client, uniq):
    key = uniq + "del.log"
    client.append(key, 0, b"abc")
    client.delete(key)
    e = expect_error(lambda: client.append(key, 3, b"d"), 409, "PositionNotEqualToLength")
    assert e.headers.get("x-oss-next-append-position") == "0"
    r = client.append(key, 0, b"new")
    assert (r.next_position, r.crc) == (3, crc64(b"new"))


def test_append_metadata_only_at_creation(client, uniq):
    key = uniq + "meta.log"
    client.append(key, 0, b"a", headers={"x-oss-meta-origin": "first", "Content-Type": "text/x-first"})
    # creation-only headers on later appends are silently ignored, not rejected
    client.append(key, 1, b"b", headers={"x-oss-meta-origin": "second",
                                          "Content-Type": "text/x-second"})
    h = client.head(key)
    assert h.metadata.get("origin") == "first"
    assert h.content_type == "text/x-first"
    assert client.get(key).body == b"ab"


def test_append_content_md5(client, uniq):
    key = uniq + "md5.log"
    client.append(key, 0, b"abc", headers={"Content-MD5": md5_b64(b"abc")})
    e = expect_error(lambda: client.append(key, 3, b"def", headers={"Content-MD5": md5_b64(b"xyz")}),
                     400, "InvalidDigest")
    assert e.request_id
    h = client.head(key)
    assert (h.content_length, h.crc) == (3, crc64(b"abc"))


def test_oss2_chunked_append(oss2_v1, uniq):
    """oss2 sends Transfer-Encoding: chunked (no Content-Length) for iterable bodies."""
    key = uniq + "chunked.log"
    parts = [b"alpha ", b"beta ", b"gamma"]
    r = oss2_v1.b.append_object(key, 0, iter(parts), init_crc=0)
    body = b"".join(parts)
    assert (r.next_position, r.crc) == (len(body), crc64(body))
    r = oss2_v1.b.append_object(key, r.next_position, iter([b"!", b"?"]), init_crc=r.crc)
    body += b"!?"
    assert (r.next_position, r.crc) == (len(body), crc64(body))
    assert oss2_v1.b.get_object(key).read() == body


def test_large_append(client, uniq):
    key = uniq + "big.bin"
    chunk = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB
    r1 = client.append(key, 0, chunk)
    r2 = client.append(key, r1.next_position, chunk)
    assert r2.next_position == 2 * len(chunk)
    assert r2.crc == crc64(chunk + chunk)
    g = client.get(key, byte_range=(len(chunk) - 10, len(chunk) + 9), standard=True)
    assert g.body == chunk[-10:] + chunk[:10]


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_appends_same_position(server, uniq, round_):
    """Racing appends at the same position: exactly one wins, the others get 409 with the new
    length, and the object holds exactly the base plus the winner's bytes."""
    import threading

    from support import Oss2Client

    key = uniq + "race.log"
    base = b"base\n"
    Oss2Client(server.endpoint).b.append_object(key, 0, base)
    n = 8
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        c = Oss2Client(server.endpoint, v4=bool(i % 2))  # own session / connection
        payload = (f"writer {i} " * (i + 1) + "\n").encode()
        barrier.wait()
        try:
            r = c.b.append_object(key, len(base), payload)
            results[i] = ("ok", payload, r.next_position, r.crc)
        except oss2.exceptions.PositionNotEqualToLength as e:
            results[i] = ("409", payload, e.next_position, None)
        except Exception as e:  # pragma: no cover - reported below
            results[i] = ("error", payload, repr(e), None)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r is not None for r in results), results
    winners = [r for r in results if r[0] == "ok"]
    assert len(winners) == 1, f"expected exactly one winner: {results}"
    _, wp, wpos, wcrc = winners[0]
    final = base + wp
    assert (wpos, wcrc) == (len(final), crc64(final))
    for r in results:
        if r[0] != "ok":
            assert r[0] == "409" and r[2] == len(final), results
    c = Oss2Client(server.endpoint)
    assert c.b.get_object(key).read() == final
    assert c.b.head_object(key).server_crc == crc64(final)


def test_zero_length_append_at_wrong_position(client, uniq):
    key = uniq + "zero-wrong.log"
    client.append(key, 0, b"abc")
    e = expect_error(lambda: client.append(key, 2, b""), 409, "PositionNotEqualToLength")
    assert e.headers.get("x-oss-next-append-position") == "3"
