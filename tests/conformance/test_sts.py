"""STS-style credentials (OSS_SESSION_TOKEN on the server) and V4 additional signed headers."""
from __future__ import annotations

import uuid

import pytest
import requests

import oss2
import alibabacloud_oss_v2 as ossv2

from support import (ACCESS_KEY_ID, ACCESS_KEY_SECRET, BUCKET, REGION, SDK_TIMEOUT, crc64,
                     parse_error_xml)

TOKEN = "sts-token/with+odd=chars&more"


@pytest.fixture(scope="module")
def sts_server(server_factory):
    return server_factory.start(env={"OSS_SESSION_TOKEN": TOKEN}, name="sts")


def _oss2(srv, version, token=TOKEN):
    auth = oss2.StsAuth(ACCESS_KEY_ID, ACCESS_KEY_SECRET, token, auth_version=version) \
        if token is not None else (oss2.AuthV4 if version == "v4" else oss2.Auth)(
            ACCESS_KEY_ID, ACCESS_KEY_SECRET)
    return oss2.Bucket(auth, srv.endpoint, BUCKET, region=REGION, connect_timeout=SDK_TIMEOUT)


def _v2(srv, token=TOKEN):
    return ossv2.Client(ossv2.config.Config(
        region=REGION, endpoint=srv.endpoint,
        credentials_provider=ossv2.credentials.StaticCredentialsProvider(
            ACCESS_KEY_ID, ACCESS_KEY_SECRET, token),
        retryer=ossv2.retry.NopRetryer(), connect_timeout=SDK_TIMEOUT,
        readwrite_timeout=SDK_TIMEOUT))


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_oss2_sts_auth(sts_server, version):
    b = _oss2(sts_server, version)
    key = f"sts/{version}/{uuid.uuid4().hex}.log"
    r = b.append_object(key, 0, b"token ", init_crc=0)
    r = b.append_object(key, r.next_position, b"ok", init_crc=r.crc)
    assert (r.next_position, r.crc) == (8, crc64(b"token ok"))
    assert b.head_object(key).content_length == 8
    assert b.get_object(key).read() == b"token ok"
    assert key in [o.key for o in oss2.ObjectIteratorV2(b, prefix="sts/")]
    url = b.sign_url("GET", key, 60)  # carries security-token / x-oss-security-token
    got = requests.get(url, timeout=10)
    assert (got.status_code, got.content) == (200, b"token ok")


def test_v2_sts_credentials(sts_server):
    c = _v2(sts_server)
    key = f"sts/v2/{uuid.uuid4().hex}.log"
    r = c.append_object(ossv2.AppendObjectRequest(bucket=BUCKET, key=key, position=0, body=b"v2"))
    assert r.next_position == 2
    assert c.get_object(ossv2.GetObjectRequest(bucket=BUCKET, key=key)).body.read() == b"v2"
    p = c.presign(ossv2.GetObjectRequest(bucket=BUCKET, key=key))
    got = requests.get(p.url, headers=dict(p.signed_headers or {}), timeout=10)
    assert (got.status_code, got.content) == (200, b"v2")


@pytest.mark.parametrize("version", ["v1", "v4"])
def test_sts_server_rejects_missing_or_wrong_token(sts_server, version):
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        _oss2(sts_server, version, token=None).put_object("sts/none", b"x")
    assert ei.value.status == 403
    with pytest.raises(oss2.exceptions.ServerError) as ei:
        _oss2(sts_server, version, token="wrong-token").put_object("sts/wrong", b"x")
    assert ei.value.status == 403
    assert ei.value.code == "InvalidSecurityToken"
    assert not _oss2(sts_server, version).object_exists("sts/none")
    assert not _oss2(sts_server, version).object_exists("sts/wrong")


def test_v4_additional_headers_header_auth(server):
    """V4 header auth with AdditionalHeaders=host (oss2's signer, which puts AdditionalHeaders
    after Signature with ', ' separators).  Note: the v2 SDK's `additional_headers` config
    silently drops host/user-agent because they are not yet set when it signs."""
    b = oss2.Bucket(oss2.AuthV4(ACCESS_KEY_ID, ACCESS_KEY_SECRET), server.endpoint, BUCKET,
                    region=REGION, connect_timeout=SDK_TIMEOUT)
    key = f"addl/{uuid.uuid4().hex}"
    b.put_object(key, b"signed host")
    url = f"{server.endpoint}/{BUCKET}/{key}"

    def signed(host):
        req = oss2.http.Request("GET", url, headers={"Host": host}, region=REGION,
                                product="oss")
        b.auth._sign_request(req, BUCKET, key, in_additional_headers={"host"})
        assert "AdditionalHeaders=host" in req.headers["authorization"]
        return {k: v for k, v in req.headers.items() if v is not None}

    got = requests.get(url, headers=signed(server.addr), timeout=10)
    assert (got.status_code, got.content) == (200, b"signed host")
    # the signature covers the Host header: the same request under another Host must fail
    h = signed("example.invalid")
    h["Host"] = server.addr
    got = requests.get(url, headers=h, timeout=10)
    assert got.status_code == 403
    assert parse_error_xml(got.content)["Code"] == "SignatureDoesNotMatch"


def test_oss2_v4_presign_additional_headers(server):
    b = oss2.Bucket(oss2.AuthV4(ACCESS_KEY_ID, ACCESS_KEY_SECRET), server.endpoint, BUCKET,
                    region=REGION, connect_timeout=SDK_TIMEOUT)
    key = f"addl/{uuid.uuid4().hex}"
    b.put_object(key, b"presigned host")
    url = b.sign_url("GET", key, 60, headers={"Host": server.addr}, additional_headers={"host"})
    assert "x-oss-additional-headers=host" in url
    got = requests.get(url, timeout=10)
    assert (got.status_code, got.content) == (200, b"presigned host")
    # signed with a different Host value: must be rejected
    url = b.sign_url("GET", key, 60, headers={"Host": "example.invalid"},
                     additional_headers={"host"})
    got = requests.get(url, timeout=10)
    assert got.status_code == 403
    assert parse_error_xml(got.content)["Code"] == "SignatureDoesNotMatch"
