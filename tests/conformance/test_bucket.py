"""Bucket-level calls the SDKs need: GetBucketInfo, PutBucket (create)."""
from __future__ import annotations

import uuid

import oss2

from support import BUCKET, FLAVORS, expect_error, make_client


def test_oss2_get_bucket_info(oss2_v1, oss2_v4):
    for c in (oss2_v1, oss2_v4):
        info = c.b.get_bucket_info()
        assert info.status == 200
        assert info.name == BUCKET
        assert info.storage_class == "Standard"
        assert info.creation_date
        assert info.location
        assert info.acl.grant in ("private", "public-read", "public-read-write")


def test_v2_get_bucket_info(v2):
    r = v2.bucket_info()
    assert r.status_code == 200
    assert r.bucket_info.name == BUCKET
    assert r.bucket_info.storage_class == "Standard"
    assert r.bucket_info.creation_date is not None


def test_create_bucket(server):
    for flavor in FLAVORS:
        name = f"new-{flavor}-{uuid.uuid4().hex[:8]}"
        c = make_client(flavor, server.endpoint, bucket=name)
        expect_error(lambda: c.list_page(), 404, "NoSuchBucket")
        r = c.create_bucket()
        assert r.status == 200
        keys, prefixes, _ = c.list_all()
        assert (keys, prefixes) == ([], [])
        c.append("x.log", 0, b"in new bucket")
        assert c.get("x.log").body == b"in new bucket"
        info = c.bucket_info()
        name_seen = info.name if hasattr(info, "name") else info.bucket_info.name
        assert name_seen == name
        # the original bucket does not see it
        assert not make_client(flavor, server.endpoint).exists("x.log")


def test_oss2_create_bucket_with_acl(server):
    from support import ACCESS_KEY_ID, ACCESS_KEY_SECRET

    name = f"acl-{uuid.uuid4().hex[:8]}"
    b = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, ACCESS_KEY_SECRET), server.endpoint, name)
    r = b.create_bucket(oss2.BUCKET_ACL_PRIVATE)
    assert r.status == 200
    b.put_object("k", b"v")
    assert b.get_object("k").read() == b"v"


def test_copy_across_buckets(server):
    from support import Oss2Client

    name = f"copy-dst-{uuid.uuid4().hex[:8]}"
    dst = make_client("oss2-v1", server.endpoint, bucket=name)
    dst.create_bucket()
    src = Oss2Client(server.endpoint)
    key = f"xb/{uuid.uuid4().hex}/a b.txt"
    src.put(key, b"cross bucket")
    for flavor in FLAVORS:
        c = make_client(flavor, server.endpoint, bucket=name)
        r = c.copy(key, f"{flavor}/copied", src_bucket=BUCKET)
        assert r.status == 200
        assert c.get(f"{flavor}/copied").body == b"cross bucket"
    expect_error(lambda: dst.copy(key, "x", src_bucket="no-such-src-bucket"), 404, "NoSuchBucket")


def test_virtual_hosted_missing_bucket(server):
    from support import raw_exchange, signed_v1_head_block

    host = f"nosuchbucket.localhost:{server.port}"
    st, h, body = raw_exchange(server, signed_v1_head_block(
        server, "GET", "k", {}, None, target="/k", host=host, bucket="nosuchbucket"))
    assert st == 404
    assert b"<Code>NoSuchBucket</Code>" in body
