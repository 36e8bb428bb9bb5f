"""Authentication, bucket errors and --anonymous (oss-protocol.md section 6)."""
from __future__ import annotations

import uuid

import pytest
import requests

import oss2
import alibabacloud_oss_v2 as ossv2

from support import (ACCESS_KEY_ID, BUCKET, FLAVORS, Oss2Client, V2Client, crc64, expect_error,
                     http_date, make_client, parse_error_xml, raw_request)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wrong_secret(server, flavor, uniq):
    good = make_client(flavor, server.endpoint)
    good.put(uniq + "k", b"x")
    bad = make_client(flavor, server.endpoint, sk="not-the-secret")
    e = expect_error(lambda: bad.get(uniq + "k"), 403, "SignatureDoesNotMatch")
    assert e.request_id
    e = expect_error(lambda: bad.append(uniq + "k2", 0, b"x"), 403, "SignatureDoesNotMatch")
    e = expect_error(lambda: bad.head(uniq + "k"), 403, "SignatureDoesNotMatch")  # via x-oss-err
    expect_error(lambda: bad.list_page(prefix=uniq), 403, "SignatureDoesNotMatch")
    assert not good.exists(uniq + "k2"), "a rejected append must not create the object"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_unknown_access_key(server, flavor, uniq):
    bad = make_client(flavor, server.endpoint, ak="LTAIunknownKeyId", sk="whatever")
    e = expect_error(lambda: bad.get(uniq + "k"), 403, "InvalidAccessKeyId")
    assert e.request_id
    expect_error(lambda: bad.put(uniq + "k", b"x"), 403, "InvalidAccessKeyId")
    expect_error(lambda: bad.head(uniq + "k"), 403, "InvalidAccessKeyId")


def test_oss2_signature_error_class(server, uniq):
    b = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, "wrong"), server.endpoint, BUCKET)
    with pytest.raises(oss2.exceptions.SignatureDoesNotMatch) as ei:
        b.put_object(uniq + "x", b"x")
    assert ei.value.status == 403
    d = ei.value.details
    assert d.get("Code") == "SignatureDoesNotMatch"
    assert d.get("RequestId") == ei.value.request_id


@pytest.mark.parametrize("flavor", FLAVORS)
def test_missing_bucket(server, flavor, uniq):
    c = make_client(flavor, server.endpoint, bucket="no-such-bucket-" + uuid.uuid4().hex[:8])
    for op in (lambda: c.get("k"), lambda: c.put("k", b"x"), lambda: c.append("k", 0, b"x"),
               lambda: c.list_page(), lambda: c.head("k"), lambda: c.delete("k")):
        e = expect_error(op, 404, "NoSuchBucket")
        assert e.request_id


def test_oss2_missing_bucket_classes(server):
    b = oss2.Bucket(oss2.Auth(ACCESS_KEY_ID, "conformance-test-secret-0123456789"),
                    server.endpoint, "no-such-bucket-x1")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        b.get_object("k")
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        b.object_exists("k")  # HEAD ?objectMeta, decoded from x-oss-err
    with pytest.raises(oss2.exceptions.NoSuchBucket):
        b.get_bucket_info()


def test_raw_error_body(server, uniq):
    r = raw_request(server, "GET", uniq + "missing")
    assert r.status_code == 404
    assert r.headers.get("content-type", "").startswith("application/xml")
    d = parse_error_xml(r.content)
    assert d["Code"] == "NoSuchKey"
    assert d["Message"]
    assert d["RequestId"] == r.headers["x-oss-request-id"]
    assert "HostId" in d
    assert d.get("Key") == uniq + "missing"


def test_unsigned_request_rejected(server, uniq):
    Oss2Client(server.endpoint).b.put_object(uniq + "k", b"secret")
    r = requests.get(f"{server.endpoint}/{BUCKET}/{uniq}k", timeout=10)
    assert r.status_code == 403
    assert parse_error_xml(r.content)["Code"] == "AccessDenied"
    r = requests.post(f"{server.endpoint}/{BUCKET}/{uniq}new?append&position=0", data=b"x",
                      timeout=10)
    assert r.status_code == 403
    assert not Oss2Client(server.endpoint).exists(uniq + "new")


def test_clock_skew_rejected(server, uniq):
    import time

    r = raw_request(server, "GET", uniq + "k", headers={"Date": http_date(time.time() - 3600)})
    assert r.status_code == 403, r.text
    assert parse_error_xml(r.content)["Code"] == "RequestTimeTooSkewed"


def test_v1_signature_hand_made(server, uniq):
    """The suite's own V1 signer agrees with the server (used by raw tests elsewhere)."""
    r = raw_request(server, "POST", uniq + "hand.log", params={"append": "", "position": "0"},
                    body=b"hand")
    assert r.status_code == 200, r.text
    assert r.headers["x-oss-next-append-position"] == "4"
    assert r.headers["x-oss-hash-crc64ecma"] == str(crc64(b"hand"))


def test_v1_signature_error_details(server, uniq):
    """SignatureDoesNotMatch carries SignatureProvided and, for V1, the server's StringToSign
    (what a client author compares against when debugging)."""
    from support import v1_string_to_sign

    date = http_date()
    r = raw_request(server, "GET", uniq + "k", sk="bad", headers={"Date": date})
    assert r.status_code == 403
    d = parse_error_xml(r.content)
    assert d["Code"] == "SignatureDoesNotMatch"
    assert d.get("OSSAccessKeyId") == ACCESS_KEY_ID
    sent = r.request.headers["Authorization"].split(":", 1)[1]
    assert d.get("SignatureProvided") == sent
    assert d.get("StringToSign") == v1_string_to_sign("GET", BUCKET, uniq + "k", {},
                                                      {"Date": date})


@pytest.fixture(scope="module")
def anon_server(server_factory):
    return server_factory.start("--anonymous", name="anonymous")


def test_anonymous_server_oss2(anon_server):
    c = Oss2Client(anon_server.endpoint, anonymous=True)
    key = "anon/" + uuid.uuid4().hex + ".log"
    r = c.b.append_object(key, 0, b"anon ")
    assert (r.next_position, r.crc) == (5, crc64(b"anon "))
    r = c.b.append_object(key, 5, b"data", init_crc=r.crc)
    assert r.next_position == 9
    assert c.b.get_object(key).read() == b"anon data"
    assert c.b.head_object(key).object_type == "Appendable"
    keys = [o.key for o in oss2.ObjectIteratorV2(c.b, prefix="anon/")]
    assert key in keys
    c.b.delete_object(key)
    assert not c.b.object_exists(key)


def test_anonymous_server_v2_and_raw(anon_server):
    c = V2Client(anon_server.endpoint, anonymous=True)
    key = "anon-v2/" + uuid.uuid4().hex
    r = c.append(key, 0, b"v2")
    assert r.next_position == 2
    assert c.get(key).body == b"v2"
    r = requests.get(f"{anon_server.endpoint}/{BUCKET}/{key}", timeout=10)
    assert (r.status_code, r.content) == (200, b"v2")


def test_anonymous_server_still_accepts_signed_requests(anon_server):
    for flavor in FLAVORS:
        c = make_client(flavor, anon_server.endpoint)
        key = f"signed/{flavor}"
        c.put(key, b"ok")
        assert c.get(key).body == b"ok"


def test_v2_sdk_with_v1_signer(server, uniq):
    """alibabacloud-oss-v2 can also sign V1 (signature_version='v1')."""
    def mk(sk):
        return ossv2.Client(ossv2.config.Config(
            region="cn-hangzhou", endpoint=server.endpoint, signature_version="v1",
            credentials_provider=ossv2.credentials.StaticCredentialsProvider(ACCESS_KEY_ID, sk),
            retryer=ossv2.retry.NopRetryer(), connect_timeout=15, readwrite_timeout=15))
    from support import ACCESS_KEY_SECRET
    c = mk(ACCESS_KEY_SECRET)
    key = uniq + "dir/v2 v1+.log"
    r = c.append_object(ossv2.AppendObjectRequest(bucket=BUCKET, key=key, position=0, body=b"a"))
    r = c.append_object(ossv2.AppendObjectRequest(bucket=BUCKET, key=key, position=1, body=b"b"))
    assert (r.next_position, int(r.hash_crc64)) == (2, crc64(b"ab"))
    assert c.head_object(ossv2.HeadObjectRequest(bucket=BUCKET, key=key)).content_length == 2
    page = c.list_objects_v2(ossv2.ListObjectsV2Request(bucket=BUCKET, prefix=uniq))
    assert [o.key for o in page.contents] == [key]
    with pytest.raises(ossv2.exceptions.OperationError) as ei:
        mk("wrong").get_object(ossv2.GetObjectRequest(bucket=BUCKET, key=key))
    assert ei.value.unwrap().code == "SignatureDoesNotMatch"


class _ShiftedDatetime:
    """Stands in for datetime.datetime inside oss2.auth to sign with a skewed clock."""
    shift = 0.0

    @classmethod
    def utcnow(cls):
        import datetime as _dt
        return _dt.datetime.utcnow() + _dt.timedelta(seconds=cls.shift)


def test_v4_clock_skew_and_expiry(server, uniq, monkeypatch):
    c = Oss2Client(server.endpoint, v4=True)
    c.b.put_object(uniq + "k", b"x")
    monkeypatch.setattr(oss2.auth, "datetime", _ShiftedDatetime)
    _ShiftedDatetime.shift = -3600
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        c.b.get_object(uniq + "k")
    assert (ei.value.status, ei.value.code) == (403, "RequestTimeTooSkewed")
    # a V4 presigned URL signed 2 h ago for 60 s has expired
    _ShiftedDatetime.shift = -7200
    url = c.b.sign_url("GET", uniq + "k", 60)
    r = requests.get(url, timeout=10)
    assert r.status_code == 403
    assert parse_error_xml(r.content)["Code"] == "AccessDenied"
    # signed 10 minutes ago for 1 h: still valid (presigned URLs are not subject to skew)
    _ShiftedDatetime.shift = -600
    url = c.b.sign_url("GET", uniq + "k", 3600)
    r = requests.get(url, timeout=10)
    assert (r.status_code, r.content) == (200, b"x")
    _ShiftedDatetime.shift = 0
    assert c.b.get_object(uniq + "k").read() == b"x"
