"""ListObjectsV2 through each SDK (oss-protocol.md section 4)."""
from __future__ import annotations

import math
import urllib.parse
import uuid
import xml.etree.ElementTree as ET

import pytest

from support import (BUCKET, FLAVORS, OSS2_ISO8601_RE, Oss2Client, make_client, raw_request)

N_MANY = 250


@pytest.fixture(scope="module")
def listing(server):
    """Objects shared by the listing tests (created once through oss2 V1)."""
    root = f"list-{uuid.uuid4().hex[:8]}/"
    c = Oss2Client(server.endpoint)
    many = [f"{root}many/k{i:03d}" for i in range(N_MANY)]
    for k in many:
        c.b.put_object(k, k.encode())
    tree = [root + "tree/" + k for k in
            ("a", "a/b", "a/c/d", "d1/x", "d1/y", "d2/z", "z", "zz/", "a-b", "a.b", "a0")]
    for k in tree:
        if k.endswith("/"):
            c.b.put_object(k, b"")  # directory marker
        else:
            c.b.append_object(k, 0, k.encode())
    return {"root": root, "many": many, "tree": tree}


def test_pagination_small_max_keys(client, listing):
    prefix = listing["root"] + "many/"
    keys, prefixes, pages = client.list_all(prefix=prefix, max_keys=7)
    assert keys == listing["many"], "keys missing, duplicated or out of order across pages"
    assert prefixes == []
    assert len(pages) == math.ceil(N_MANY / 7)
    for p in pages[:-1]:
        assert len(p.keys) == 7 and p.is_truncated and p.next_token
    assert not pages[-1].is_truncated
    assert len(pages[-1].keys) == N_MANY % 7 or len(pages[-1].keys) == 7


def test_default_page_size_is_100(client, listing):
    page = client.list_page(prefix=listing["root"] + "many/", max_keys=100)
    assert len(page.keys) == 100 and page.is_truncated


def test_list_object_fields(client, listing):
    prefix = listing["root"] + "many/"
    page = client.list_page(prefix=prefix, max_keys=3)
    assert page.keys == listing["many"][:3]
    for o, k in zip(page.objects, page.keys):
        size = o.size
        assert size == len(k.encode())
        assert (getattr(o, "type", None) or getattr(o, "object_type", None)) == "Normal"
        assert o.storage_class == "Standard"
        assert o.etag and o.etag.strip('"')
        assert o.last_modified


def test_list_appendable_type_and_size(client, listing):
    prefix = listing["root"] + "tree/"
    page = client.list_page(prefix=prefix, delimiter="/")
    types = {o.key: ((getattr(o, "type", None) or getattr(o, "object_type", None)), o.size)
             for o in page.objects}
    assert types[prefix + "a"] == ("Appendable", len((prefix + "a").encode()))
    assert types[prefix + "z"] == ("Appendable", len((prefix + "z").encode()))


def test_sdk_iterators(client, listing):
    """oss2.ObjectIteratorV2 (sends start-after on every page together with the continuation
    token) and the v2 paginator."""
    prefix = listing["root"] + "many/"
    entries = client.iterate(prefix=prefix, max_keys=11, start_after=listing["many"][9])
    keys = [getattr(e, "key") for e in entries]
    assert keys == listing["many"][10:]


def test_delimiter_common_prefixes(client, listing):
    prefix = listing["root"] + "tree/"
    keys, prefixes, _ = client.list_all(prefix=prefix, delimiter="/")
    assert keys == [prefix + k for k in ("a", "a-b", "a.b", "a0", "z")]
    assert prefixes == [prefix + p for p in ("a/", "d1/", "d2/", "zz/")]


def test_delimiter_paginates_prefixes_and_keys(client, listing):
    prefix = listing["root"] + "tree/"
    keys, prefixes, pages = client.list_all(prefix=prefix, delimiter="/", max_keys=2)
    assert keys == [prefix + k for k in ("a", "a-b", "a.b", "a0", "z")]
    assert prefixes == [prefix + p for p in ("a/", "d1/", "d2/", "zz/")]
    assert all(len(p.keys) + len(p.prefixes) <= 2 for p in pages)
    assert len(pages) == math.ceil(9 / 2)


def test_nested_delimiter(client, listing):
    prefix = listing["root"] + "tree/a/"
    keys, prefixes, _ = client.list_all(prefix=prefix, delimiter="/")
    assert keys == [prefix + "b"]
    assert prefixes == [prefix + "c/"]
    keys, prefixes, _ = client.list_all(prefix=listing["root"] + "tree/zz/", delimiter="/")
    assert keys == [listing["root"] + "tree/zz/"], "a directory marker lists as a key"
    assert prefixes == []


def test_no_delimiter_lists_everything_under_prefix(client, listing):
    prefix = listing["root"] + "tree/"
    keys, prefixes, _ = client.list_all(prefix=prefix)
    assert keys == sorted(listing["tree"])
    assert prefixes == []


def test_start_after(client, listing):
    prefix = listing["root"] + "many/"
    keys, _, _ = client.list_all(prefix=prefix, start_after=listing["many"][100], max_keys=50)
    assert keys == listing["many"][101:]
    # start-after need not exist
    keys, _, _ = client.list_all(prefix=prefix, start_after=listing["many"][200] + "!")
    assert keys == listing["many"][201:]
    keys, _, _ = client.list_all(prefix=prefix, start_after=listing["many"][-1])
    assert keys == []


def test_prefix_without_matches(client, listing):
    keys, prefixes, pages = client.list_all(prefix=listing["root"] + "nothing-here/")
    assert (keys, prefixes, len(pages)) == ([], [], 1)
    assert pages[0].is_truncated is False


ODD_NAMES = [
    "with space.txt",
    "plus+sign",
    "percent%20literal",
    "percent%zz",
    "tilde~",
    "star*",
    "a..b",
    "日志/ü.log",
    "a",
    "a/b",
    "dir/sub/deep.txt",
    "quote'\"<&>",
    "semi;colon,comma=eq&amp?q#hash",
    "trailing-space ",
]
OSS2_ONLY_NAMES = [
    # urllib3 (used by the v2 SDK) removes dot segments from the URL path, so these keys are
    # only reachable when '/' is sent as %2F, as oss2 does
    "dots/../x",
    "dots/./y",
]


@pytest.fixture(scope="module", params=FLAVORS)
def odd(request, server):
    flavor = request.param
    c = make_client(flavor, server.endpoint)
    root = f"odd-{flavor}-{uuid.uuid4().hex[:6]}/"
    names = ODD_NAMES + (OSS2_ONLY_NAMES if flavor.startswith("oss2") else [])
    for n in names:
        c.put(root + n, n.encode())
    return c, root, names


def _bsorted(keys):
    return sorted(keys, key=lambda k: k.encode())


def test_odd_keys_round_trip(odd):
    c, root, names = odd
    for n in names:
        g = c.get(root + n)
        assert g.body == n.encode(), f"key {n!r} read back the wrong object"
        assert c.head(root + n).content_length == len(n.encode())


def test_odd_keys_listing(odd):
    c, root, names = odd
    keys, prefixes, _ = c.list_all(prefix=root)
    assert keys == _bsorted(root + n for n in names)
    assert prefixes == []


def test_odd_keys_listing_with_delimiter(odd):
    c, root, names = odd
    keys, prefixes, _ = c.list_all(prefix=root, delimiter="/")
    assert keys == _bsorted(root + n for n in names if "/" not in n)
    assert prefixes == _bsorted({root + n.split("/")[0] + "/" for n in names if "/" in n})


@pytest.mark.parametrize("sub,expect", [
    ("日志/", ["日志/ü.log"]),
    ("plus+", ["plus+sign"]),
    ("percent%", ["percent%20literal", "percent%zz"]),
    ("with ", ["with space.txt"]),
    ("trailing-space ", ["trailing-space "]),
])
def test_odd_prefixes(odd, sub, expect):
    c, root, names = odd
    keys, _, _ = c.list_all(prefix=root + sub)
    assert keys == [root + e for e in expect]


def test_odd_start_after(odd):
    c, root, names = odd
    keys, _, _ = c.list_all(prefix=root, start_after=root + "plus+sign")
    assert keys == [k for k in _bsorted(root + n for n in names)
                    if k.encode() > (root + "plus+sign").encode()]
    keys, _, _ = c.list_all(prefix=root, start_after=root + "with space.txt")
    assert keys == [k for k in _bsorted(root + n for n in names)
                    if k.encode() > (root + "with space.txt").encode()]


def test_odd_keys_delete(odd):
    c, root, names = odd
    for n in names:
        assert c.delete(root + n).status == 204
        assert not c.exists(root + n)


def test_raw_listing_xml_encoding_type_url(server):
    """The XML itself: no namespace, KeyCount, url-encoding of keys ('+' as %2B, ' ' as %20)."""
    root = f"rawlist-{uuid.uuid4().hex[:6]}/"
    c = Oss2Client(server.endpoint)
    names = ["a b", "c+d", "e%f", "g/h", "ü"]
    for n in names:
        c.b.put_object(root + n, b"x")
    r = raw_request(server, "GET", None, params={
        "list-type": "2", "prefix": root, "delimiter": "/", "encoding-type": "url",
        "max-keys": "10"})
    assert r.status_code == 200, r.text
    assert r.headers.get("content-type", "").startswith("application/xml")
    x = ET.fromstring(r.content)
    assert x.tag == "ListBucketResult", "root element must be un-namespaced <ListBucketResult>"
    assert x.findtext("Name") == BUCKET
    assert x.findtext("EncodingType") == "url"
    assert x.findtext("IsTruncated") == "false"
    assert x.findtext("MaxKeys") == "10"
    raw_keys = [e.findtext("Key") for e in x.findall("Contents")]
    raw_prefixes = [e.findtext("Prefix") for e in x.findall("CommonPrefixes")]
    assert x.findtext("KeyCount") == str(len(raw_keys) + len(raw_prefixes))
    assert [urllib.parse.unquote(k) for k in raw_keys] == [root + n for n in ("a b", "c+d", "e%f", "ü")]
    assert [urllib.parse.unquote(p) for p in raw_prefixes] == [root + "g/"]
    for k in raw_keys + raw_prefixes + [x.findtext("Prefix")]:
        assert " " not in k and "+" not in k, f"not url-encoded: {k!r}"
        assert all(ord(ch) < 128 for ch in k), f"non-ASCII left unencoded: {k!r}"
        # Go's QueryUnescape and Python's unquote must agree on it
        assert urllib.parse.unquote_plus(k) == urllib.parse.unquote(k)
    for e in x.findall("Contents"):
        for tag in ("Key", "LastModified", "ETag", "Type", "Size", "StorageClass"):
            assert e.find(tag) is not None, f"<Contents> lacks <{tag}> (oss2 requires it)"
        assert OSS2_ISO8601_RE.match(e.findtext("LastModified")), \
            f"oss2 only parses LastModified like 2020-05-18T05:45:47.000Z: {e.findtext('LastModified')!r}"
        assert e.find("Owner") is None, "fetch-owner defaults to false"
    assert x.find("NextContinuationToken") is None


def test_query_plus_means_space(server):
    """oss2 passes list parameters to `requests`, which form-encodes them: a space in
    prefix / start-after / delimiter arrives as '+', a literal '+' as %2B."""
    root = f"plus-{uuid.uuid4().hex[:6]}/"
    c = Oss2Client(server.endpoint)
    for n in ("a b/1", "a+b/2", "a b c"):
        c.b.put_object(root + n, b"x")
    q = urllib.parse.urlencode({"list-type": "2", "prefix": root + "a b"})
    assert "+" in q
    import requests
    from support import http_date, v1_authorization
    hdrs = {"Date": http_date()}
    hdrs["Authorization"] = v1_authorization("GET", BUCKET, "", {}, hdrs)
    r = requests.get(f"{server.endpoint}/{BUCKET}/?{q}", headers=hdrs, timeout=10)
    assert r.status_code == 200, r.text
    keys = [e.findtext("Key") for e in ET.fromstring(r.content).findall("Contents")]
    assert keys == [root + "a b c", root + "a b/1"]
    q = urllib.parse.urlencode({"list-type": "2", "prefix": root + "a+b"})
    r = requests.get(f"{server.endpoint}/{BUCKET}/?{q}", headers=hdrs, timeout=10)
    keys = [e.findtext("Key") for e in ET.fromstring(r.content).findall("Contents")]
    assert keys == [root + "a+b/2"]


def test_raw_listing_without_encoding(server):
    root = f"rawlist2-{uuid.uuid4().hex[:6]}/"
    c = Oss2Client(server.endpoint)
    c.b.put_object(root + "a b+c", b"x")
    r = raw_request(server, "GET", None, params={"list-type": "2", "prefix": root})
    assert r.status_code == 200, r.text
    x = ET.fromstring(r.content)
    assert x.find("EncodingType") is None
    assert [e.findtext("Key") for e in x.findall("Contents")] == [root + "a b+c"]


def test_raw_listing_truncated_token(server, listing):
    r = raw_request(server, "GET", None, params={
        "list-type": "2", "prefix": listing["root"] + "many/", "max-keys": "5"})
    x = ET.fromstring(r.content)
    assert x.findtext("IsTruncated") == "true"
    tok = x.findtext("NextContinuationToken")
    assert tok
    assert x.findtext("KeyCount") == "5"
    r2 = raw_request(server, "GET", None, params={
        "list-type": "2", "prefix": listing["root"] + "many/", "max-keys": "5",
        "continuation-token": tok})
    x2 = ET.fromstring(r2.content)
    assert [e.findtext("Key") for e in x2.findall("Contents")] == listing["many"][5:10]
    assert x2.findtext("ContinuationToken") == tok


@pytest.mark.parametrize("max_keys", ["0", "1001", "-1", "abc"])
def test_invalid_max_keys(server, max_keys):
    r = raw_request(server, "GET", None, params={"list-type": "2", "max-keys": max_keys})
    assert r.status_code == 400, r.text
    assert b"<Code>InvalidArgument</Code>" in r.content


def test_empty_params_mean_absent(server, listing):
    """oss2 sends prefix=&delimiter=&continuation-token=&start-after= ."""
    r = raw_request(server, "GET", None, bare_params=False, params={
        "list-type": "2", "prefix": listing["root"] + "tree/", "delimiter": "",
        "continuation-token": "", "start-after": "", "max-keys": "100"})
    assert r.status_code == 200, r.text
    x = ET.fromstring(r.content)
    assert len(x.findall("Contents")) == len(listing["tree"])


def test_oss2_list_objects_v1(server, listing):
    """The original ListObjects (marker based) that oss2.ObjectIterator uses."""
    import oss2

    c = Oss2Client(server.endpoint)
    prefix = listing["root"] + "many/"
    keys = [o.key for o in oss2.ObjectIterator(c.b, prefix=prefix, max_keys=33)]
    assert keys == listing["many"]
    tree = listing["root"] + "tree/"
    entries = list(oss2.ObjectIterator(c.b, prefix=tree, delimiter="/"))
    assert [e.key for e in entries if not e.is_prefix()] == \
        [tree + k for k in ("a", "a-b", "a.b", "a0", "z")]
    assert [e.key for e in entries if e.is_prefix()] == [tree + p for p in ("a/", "d1/", "d2/", "zz/")]
    r = c.b.list_objects(prefix=prefix, marker=listing["many"][200], max_keys=10)
    assert [o.key for o in r.object_list] == listing["many"][201:211]
    assert r.is_truncated and r.next_marker == listing["many"][210]
