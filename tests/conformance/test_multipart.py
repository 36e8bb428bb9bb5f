"""Multipart upload through the official SDKs: oss2's resumable_upload and the v2 uploader,
ListParts / ListMultipartUploads paging, abort, the completion rules (EntityTooSmall,
InvalidPart, InvalidPartOrder, forbid-overwrite, complete-all), UploadPartCopy with a range, and
parts surviving a SIGKILL of a --data-dir server."""
from __future__ import annotations

import io
import os

import oss2
import alibabacloud_oss_v2 as ossv2
from oss2.models import PartInfo

from support import BUCKET, Oss2Client, V2Client, expect_error, parse_error_xml, raw_request

MiB = 1024 * 1024
KiB = 1024


def oss2_crc(data: bytes) -> int:
    """The CRC-64 as oss2 computes it (crcmod), an outside reference for the server's."""
    c = oss2.utils.Crc64(0)
    c.update(data)
    return c.crc


def test_oss2_resumable_upload_24mib(oss2_v1, uniq, tmp_path):
    key = uniq + "big.bin"
    data = os.urandom(24 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    b = oss2_v1.b
    r = oss2.resumable_upload(b, key, str(src), store=oss2.ResumableStore(root=str(tmp_path)),
                              multipart_threshold=1 * MiB, part_size=1 * MiB, num_threads=4)
    want = oss2_crc(data)
    # oss2 itself compares the server's CRC with the one it combined from the parts
    assert r.crc == want
    h = b.head_object(key)
    assert h.object_type == "Multipart"
    assert h.content_length == len(data)
    assert h.server_crc == want
    assert h.etag.endswith("-24") and len(h.etag) == 32 + 3
    assert b.get_object(key).read() == data
    # the upload is gone once complete
    left = b.list_multipart_uploads(prefix=uniq)
    assert left.upload_list == []


def test_list_parts_list_uploads_and_abort(oss2_v1, uniq):
    b = oss2_v1.b
    k1, k2 = uniq + "a+b c", uniq + "z"
    u1 = b.init_multipart_upload(k1).upload_id
    u1b = b.init_multipart_upload(k1).upload_id
    u2 = b.init_multipart_upload(k2).upload_id
    assert len({u1, u1b, u2}) == 3
    bodies = {1: b"x" * (100 * KiB), 2: b"y" * (100 * KiB), 7: b"tail"}
    etags = {}
    for n, body in bodies.items():
        r = b.upload_part(k1, u1, n, body)
        assert r.crc == oss2_crc(body)
        etags[n] = r.etag
    import hashlib
    assert etags[7] == hashlib.md5(b"tail").hexdigest().upper()

    p1 = b.list_parts(k1, u1, max_parts=2)
    assert p1.is_truncated is True
    assert [(p.part_number, p.etag, p.size) for p in p1.parts] == \
        [(1, etags[1], 100 * KiB), (2, etags[2], 100 * KiB)]
    assert int(p1.next_marker) == 2
    p2 = b.list_parts(k1, u1, marker=p1.next_marker, max_parts=2)
    assert p2.is_truncated is False
    assert [(p.part_number, p.size) for p in p2.parts] == [(7, 4)]

    # page through the uploads one at a time: by key, then by initiation
    seen = []
    key_marker, id_marker = "", ""
    while True:
        page = b.list_multipart_uploads(prefix=uniq, key_marker=key_marker,
                                        upload_id_marker=id_marker, max_uploads=1)
        seen += [(u.key, u.upload_id) for u in page.upload_list]
        if not page.is_truncated:
            break
        key_marker, id_marker = page.next_key_marker, page.next_upload_id_marker
    assert seen == [(k1, u1), (k1, u1b), (k2, u2)]
    grouped = b.list_multipart_uploads(prefix="", delimiter="/")
    assert uniq in grouped.prefix_list

    b.abort_multipart_upload(k1, u1)
    for call in (lambda: b.list_parts(k1, u1),
                 lambda: b.upload_part(k1, u1, 1, b"again"),
                 lambda: b.complete_multipart_upload(k1, u1, [PartInfo(1, etags[1])]),
                 lambda: b.abort_multipart_upload(k1, u1)):
        expect_error(lambda: oss2_v1._call(call), 404, "NoSuchUpload")
    # an upload id is bound to its key
    expect_error(lambda: oss2_v1._call(lambda: b.list_parts(k2, u1b)), 404, "NoSuchUpload")
    left = b.list_multipart_uploads(prefix=uniq)
    assert [(u.key, u.upload_id) for u in left.upload_list] == [(k1, u1b), (k2, u2)]
    b.abort_multipart_upload(k1, u1b)
    b.abort_multipart_upload(k2, u2)
    assert b.list_multipart_uploads(prefix=uniq).upload_list == []
    assert not b.object_exists(k1)


def test_completion_rules(oss2_v4, server, uniq):
    b = oss2_v4.b
    key = uniq + "small"
    uid = b.init_multipart_upload(key).upload_id
    e1 = b.upload_part(key, uid, 1, b"a" * 10).etag
    e2 = b.upload_part(key, uid, 2, b"b" * 10).etag
    err = expect_error(lambda: oss2_v4._call(lambda: b.complete_multipart_upload(
        key, uid, [PartInfo(1, e1), PartInfo(2, e2)])), 400, "EntityTooSmall")
    assert err.ec == "0042-00000213"
    expect_error(lambda: oss2_v4._call(lambda: b.complete_multipart_upload(
        key, uid, [PartInfo(1, "0" * 32)])), 400, "InvalidPart")
    expect_error(lambda: oss2_v4._call(lambda: b.complete_multipart_upload(
        key, uid, [PartInfo(3, e1)])), 400, "InvalidPart")
    # oss2 sorts the list itself, so the wrong order goes out raw
    body = (f"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>\"{e2}\"</ETag></Part>"
            f"<Part><PartNumber>1</PartNumber><ETag>\"{e1}\"</ETag></Part>"
            f"</CompleteMultipartUpload>").encode()
    r = raw_request(server, "POST", key, params={"uploadId": uid}, body=body)
    assert r.status_code == 400, r.text
    assert parse_error_xml(r.content)["Code"] == "InvalidPartOrder"
    # part numbers outside 1..10000
    r = raw_request(server, "PUT", key, params={"uploadId": uid, "partNumber": "10001"}, body=b"x")
    assert r.status_code == 400 and parse_error_xml(r.content)["Code"] == "InvalidArgument"
    # nothing was created by the failed completions; one part alone is allowed to be small
    assert not b.object_exists(key)
    r = b.complete_multipart_upload(key, uid, [PartInfo(2, e2)])
    assert r.crc == oss2_crc(b"b" * 10)
    assert b.get_object(key).read() == b"b" * 10

    # forbid-overwrite is honoured at completion
    uid = b.init_multipart_upload(key).upload_id
    e = b.upload_part(key, uid, 1, b"new").etag
    expect_error(lambda: oss2_v4._call(lambda: b.complete_multipart_upload(
        key, uid, [PartInfo(1, e)], headers={"x-oss-forbid-overwrite": "true"})),
        409, "FileAlreadyExists")
    assert b.get_object(key).read() == b"b" * 10
    b.complete_multipart_upload(key, uid, [PartInfo(1, e)])
    assert b.get_object(key).read() == b"new"


def test_upload_part_copy_with_range(oss2_v1, uniq):
    b = oss2_v1.b
    src_key, key = uniq + "src", uniq + "dst"
    src = os.urandom(300 * KiB)
    b.put_object(src_key, src)
    uid = b.init_multipart_upload(key).upload_id
    first, last = 100, 100 + 150 * KiB - 1
    c = b.upload_part_copy(BUCKET, src_key, (first, last), key, uid, 1)
    piece = src[first:last + 1]
    assert c.etag == __import__("hashlib").md5(piece).hexdigest().upper()
    e2 = b.upload_part(key, uid, 2, b"end").etag
    whole = b.upload_part_copy(BUCKET, src_key, None, key, uid, 3)
    r = b.complete_multipart_upload(key, uid, [PartInfo(1, c.etag), PartInfo(2, e2)])
    want = piece + b"end"
    assert r.crc == oss2_crc(want)
    assert b.get_object(key).read() == want
    assert whole.etag == __import__("hashlib").md5(src).hexdigest().upper()
    # appendable sources cannot be copied into parts (UploadPartCopy page)
    b.append_object(uniq + "log", 0, b"appended")
    uid = b.init_multipart_upload(key).upload_id
    expect_error(lambda: oss2_v1._call(lambda: b.upload_part_copy(
        BUCKET, uniq + "log", None, key, uid, 1)), 400, "InvalidArgument")
    b.abort_multipart_upload(key, uid)


def test_v2_uploader_24mib(v2, uniq):
    key = uniq + "v2big.bin"
    data = os.urandom(24 * MiB)
    up = v2.c.uploader(part_size=1 * MiB, parallel_num=4)
    r = up.upload_from(ossv2.PutObjectRequest(bucket=BUCKET, key=key), io.BytesIO(data))
    want = oss2_crc(data)
    assert int(r.hash_crc64) == want
    h = v2.c.head_object(ossv2.HeadObjectRequest(bucket=BUCKET, key=key))
    assert (h.object_type, h.content_length, int(h.hash_crc64)) == ("Multipart", len(data), want)
    assert h.etag.strip('"').endswith("-24")
    g = v2.c.get_object(ossv2.GetObjectRequest(bucket=BUCKET, key=key))
    assert g.body.read() == data


def test_v2_complete_all_and_list_parts(v2, uniq):
    key = uniq + "all/é k"
    c = v2.c
    init = c.initiate_multipart_upload(ossv2.InitiateMultipartUploadRequest(bucket=BUCKET, key=key))
    assert init.key == key
    uid = init.upload_id
    parts = [b"1" * (100 * KiB), b"2" * 7]
    for n, body in enumerate(parts, start=1):
        c.upload_part(ossv2.UploadPartRequest(bucket=BUCKET, key=key, upload_id=uid,
                                              part_number=n, body=body))
    lp = c.list_parts(ossv2.ListPartsRequest(bucket=BUCKET, key=key, upload_id=uid))
    assert lp.key == key
    assert [(p.part_number, p.size, int(p.hash_crc64)) for p in lp.parts] == \
        [(1, 100 * KiB, oss2_crc(parts[0])), (2, 7, oss2_crc(parts[1]))]
    ups = c.list_multipart_uploads(ossv2.ListMultipartUploadsRequest(bucket=BUCKET, prefix=uniq))
    assert [(u.key, u.upload_id) for u in ups.uploads] == [(key, uid)]
    r = c.complete_multipart_upload(ossv2.CompleteMultipartUploadRequest(
        bucket=BUCKET, key=key, upload_id=uid, complete_all="yes"))
    assert r.key == key and r.etag.strip('"').endswith("-2")
    assert int(r.hash_crc64) == oss2_crc(b"".join(parts))
    g = c.get_object(ossv2.GetObjectRequest(bucket=BUCKET, key=key))
    assert g.body.read() == b"".join(parts)


def test_parts_survive_sigkill_on_data_dir(server_factory, tmp_path, uniq):
    data_dir = tmp_path / "mp-data"
    srv = server_factory.start(data_dir=data_dir, name="mp-durable")
    c = Oss2Client(srv.endpoint)
    key = uniq + "durable"
    uid = c.b.init_multipart_upload(key).upload_id
    p1 = os.urandom(200 * KiB)
    e1 = c.b.upload_part(key, uid, 1, p1).etag
    srv.kill9()
    srv = server_factory.start(data_dir=data_dir, name="mp-durable")
    c = Oss2Client(srv.endpoint)
    assert [(p.part_number, p.etag) for p in c.b.list_parts(key, uid).parts] == [(1, e1)]
    e2 = c.b.upload_part(key, uid, 2, b"more").etag
    c.b.complete_multipart_upload(key, uid, [PartInfo(1, e1), PartInfo(2, e2)])
    assert c.b.get_object(key).read() == p1 + b"more"
    # completion freed the parts: one data file (the object) besides the index
    files = [p for p in (data_dir / "data").rglob("*") if p.is_file()]
    assert len(files) == 1, files
