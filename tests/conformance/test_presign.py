"""Presigned URLs (V1 query auth, V4 query auth) fetched with plain `requests`."""
from __future__ import annotations

import urllib.parse

import pytest
import requests

from support import FLAVORS, Oss2Client, make_client, parse_error_xml

KEYS = ["plain.txt", "dir/with space+plus.txt", "日志/ü.log", "star*tilde~"]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_presigned_get(server, flavor, uniq):
    c = make_client(flavor, server.endpoint)
    for name in KEYS:
        key = uniq + name
        c.put(key, name.encode() * 3)
        url, hdrs = c.presign_get(key, expires=300)
        assert url.startswith(server.endpoint + "/")
        r = requests.get(url, headers=hdrs, timeout=10)
        assert r.status_code == 200, f"{flavor} {name!r}: {r.status_code} {r.text}"
        assert r.content == name.encode() * 3
        # a ranged fetch through the same URL
        r = requests.get(url, headers={**hdrs, "Range": "bytes=0-1"}, timeout=10)
        assert (r.status_code, r.content) == (206, name.encode()[:2])


@pytest.mark.parametrize("flavor", FLAVORS)
def test_presigned_get_tampered(server, flavor, uniq):
    c = make_client(flavor, server.endpoint)
    c.put(uniq + "a", b"a")
    c.put(uniq + "b", b"b")
    url, hdrs = c.presign_get(uniq + "a")
    # same signature, other key
    parts = urllib.parse.urlsplit(url)
    assert parts.path.endswith("a")
    other = urllib.parse.urlunsplit(parts._replace(path=parts.path[:-1] + "b"))
    assert other != url
    r = requests.get(other, headers=hdrs, timeout=10)
    assert r.status_code == 403
    assert parse_error_xml(r.content)["Code"] == "SignatureDoesNotMatch"


@pytest.mark.parametrize("flavor", FLAVORS)
def test_presigned_put(server, flavor, uniq):
    c = make_client(flavor, server.endpoint)
    key = uniq + "uploaded.bin"
    url, hdrs = c.presign_put(key, content_type="application/octet-stream")
    r = requests.put(url, data=b"via presigned put", headers=hdrs, timeout=10)
    assert r.status_code == 200, r.text
    assert c.get(key).body == b"via presigned put"


def test_presigned_v1_expired(server, uniq):
    c = Oss2Client(server.endpoint)
    c.put(uniq + "k", b"x")
    url = c.b.sign_url("GET", uniq + "k", -60)  # Expires one minute in the past
    r = requests.get(url, timeout=10)
    assert r.status_code == 403
    assert parse_error_xml(r.content)["Code"] == "AccessDenied"


def test_presigned_v4_wrong_secret(server, uniq):
    c = Oss2Client(server.endpoint, v4=True)
    c.put(uniq + "k", b"x")
    bad = Oss2Client(server.endpoint, v4=True, sk="wrong")
    r = requests.get(bad.b.sign_url("GET", uniq + "k", 60), timeout=10)
    assert r.status_code == 403
    assert parse_error_xml(r.content)["Code"] == "SignatureDoesNotMatch"
