"""GetObject with Range, both behaviours (oss-protocol.md section 3)."""
from __future__ import annotations

import pytest

import alibabacloud_oss_v2 as ossv2

from support import BUCKET, crc64, expect_error

DATA = bytes((i * 7 + 3) % 256 for i in range(1000))


@pytest.fixture
def obj(client, uniq):
    key = uniq + "range.bin"
    client.put(key, DATA)
    return key


@pytest.mark.parametrize("rng,first,last", [
    ((0, 9), 0, 9),
    ((100, 900), 100, 900),
    ((990, None), 990, 999),
    ((None, 10), 990, 999),
    ((999, 999), 999, 999),
    ((0, 999), 0, 999),
])
@pytest.mark.parametrize("standard", [False, True], ids=["legacy", "standard"])
def test_valid_ranges(client, obj, rng, first, last, standard):
    g = client.get(obj, byte_range=rng, standard=standard)
    assert g.status == 206
    assert g.body == DATA[first:last + 1]
    assert g.content_range == f"bytes {first}-{last}/1000"
    assert g.content_length == last - first + 1
    assert g.crc == crc64(DATA), "x-oss-hash-crc64ecma is the whole-object CRC even on 206"


@pytest.mark.parametrize("rng,first,last", [
    ((500, 2000), 500, 999),
    ((999, 5000), 999, 999),
])
def test_standard_clamps_end_beyond_eof(client, obj, rng, first, last):
    g = client.get(obj, byte_range=rng, standard=True)
    assert g.status == 206
    assert g.content_range == f"bytes {first}-{last}/1000"
    assert g.body == DATA[first:last + 1]


@pytest.mark.parametrize("rng", [(1000, None), (1000, 2000), (5000, 6000)])
def test_standard_start_beyond_eof_is_416(client, obj, rng):
    e = expect_error(lambda: client.get(obj, byte_range=rng, standard=True), 416, "InvalidRange")
    assert e.request_id


@pytest.mark.parametrize("rng", [(0, 1000), (500, 2000), (1000, 2000), (1000, None),
                                 (None, 2000)])
def test_legacy_out_of_range_returns_whole_object(client, obj, rng):
    g = client.get(obj, byte_range=rng, standard=False)
    assert g.status == 200, f"legacy behaviour: invalid range {rng} is ignored"
    assert g.body == DATA
    assert g.content_range is None
    assert g.content_length == 1000


def test_standard_suffix_longer_than_object(client, obj):
    # undocumented; RFC 7233 answers the whole object as 206 -- accept 200 or 206, whole body
    g = client.get(obj, byte_range=(None, 5000), standard=True)
    assert g.status in (200, 206)
    assert g.body == DATA


def test_range_on_appendable_object(client, uniq):
    key = uniq + "app-range.log"
    client.append(key, 0, DATA[:600])
    client.append(key, 600, DATA[600:])
    g = client.get(key, byte_range=(595, 604), standard=True)
    assert g.status == 206
    assert g.body == DATA[595:605]
    assert g.content_range == "bytes 595-604/1000"
    assert g.object_type == "Appendable"
    assert g.headers.get("x-oss-next-append-position") == "1000"
    assert g.crc == crc64(DATA)
    # reading exactly at the end of an appendable object (a tail -f poll) with standard behaviour
    expect_error(lambda: client.get(key, byte_range=(1000, None), standard=True), 416,
                 "InvalidRange")


def test_v2_read_only_file(server, uniq):
    """The v2 SDK's ReadOnlyFile: HEAD, then ranged GETs with x-oss-range-behavior: standard,
    checking that ETag / Last-Modified / Content-Range stay consistent."""
    from support import V2Client

    c = V2Client(server.endpoint).c
    key = uniq + "rof.bin"
    c.put_object(ossv2.PutObjectRequest(bucket=BUCKET, key=key, body=DATA))
    with c.open_file(BUCKET, key) as f:
        assert f.read(10) == DATA[:10]
        f.seek(500)
        assert f.read(100) == DATA[500:600]
        f.seek(990)
        assert f.read() == DATA[990:]
        f.seek(0)
        assert f.read() == DATA
