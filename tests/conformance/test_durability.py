"""`serve --data-dir`: acknowledged appends survive SIGKILL; a truncated append changes nothing."""
from __future__ import annotations

import socket
import time

import oss2

from support import Oss2Client, V2Client, crc64, signed_v1_head_block


def _assert_object(srv, key, content):
    c = Oss2Client(srv.endpoint)
    h = c.b.head_object(key)
    assert h.object_type == "Appendable"
    assert h.content_length == len(content)
    assert int(h.headers["x-oss-next-append-position"]) == len(content)
    assert h.server_crc == crc64(content)
    g = c.b.get_object(key)
    assert g.read() == content
    assert g.client_crc == g.server_crc == crc64(content)
    v = V2Client(srv.endpoint).get(key)
    assert v.body == content


def test_acknowledged_appends_survive_sigkill(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    srv = server_factory.start(data_dir=data_dir, name="durable")
    c = Oss2Client(srv.endpoint)
    key, key2 = "logs/app.log", "logs/other.log"
    content, crc = b"", 0
    for i in range(12):
        chunk = (f"line {i} " * (i + 1) + "\n").encode()
        r = c.b.append_object(key, len(content), chunk, init_crc=crc)
        content += chunk
        crc = r.crc
        assert (r.next_position, r.crc) == (len(content), crc64(content))
    c.b.put_object(key2, b"normal object")
    c.b.append_object("logs/empty.log", 0, b"")
    srv.kill9()
    assert srv.proc.returncode == -9

    srv2 = server_factory.start(data_dir=data_dir, name="durable-restart")
    assert srv2.port != 0
    _assert_object(srv2, key, content)
    c2 = Oss2Client(srv2.endpoint)
    assert c2.b.get_object(key2).read() == b"normal object"
    assert c2.b.head_object(key2).object_type == "Normal"
    h = c2.b.head_object("logs/empty.log")
    assert (h.object_type, h.content_length) == ("Appendable", 0)
    keys = [o.key for o in oss2.ObjectIteratorV2(c2.b, prefix="logs/")]
    assert keys == ["logs/app.log", "logs/empty.log", "logs/other.log"]
    # appending continues at the recovered position, CRC chain intact
    r = c2.b.append_object(key, len(content), b"after restart\n", init_crc=crc)
    content += b"after restart\n"
    assert (r.next_position, r.crc) == (len(content), crc64(content))
    srv2.kill9()
    srv3 = server_factory.start(data_dir=data_dir, name="durable-restart2")
    _assert_object(srv3, key, content)
    srv3.kill()


def _start_truncated_append(srv, key, position, total_len, sent):
    """Open a socket, send a V1-signed AppendObject announcing `total_len` bytes, send only
    `sent` of them, and return the still-open socket."""
    head = signed_v1_head_block(srv, "POST", key, {"append": "", "position": str(position)},
                                total_len)
    s = socket.create_connection((srv.host, srv.port), timeout=10)
    s.sendall(head + sent)
    return s


def test_truncated_append_then_sigkill(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    srv = server_factory.start(data_dir=data_dir, name="truncated")
    c = Oss2Client(srv.endpoint)
    key = "cut/app.log"
    base = b"committed data\n" * 10
    c.b.append_object(key, 0, base)
    body = bytes(range(256)) * 64  # 16 KiB
    s = _start_truncated_append(srv, key, len(base), len(body), body[: len(body) // 2])
    time.sleep(0.7)  # let the server read (and possibly buffer or write) the first half
    # while the request is in flight, the object must still look unchanged
    h = c.b.head_object(key)
    assert (h.content_length, h.server_crc) == (len(base), crc64(base)), \
        "a half-received append is already visible"
    srv.kill9()
    s.close()
    srv2 = server_factory.start(data_dir=data_dir, name="truncated-restart")
    _assert_object(srv2, key, base)
    # and the object is still appendable at the old position
    c2 = Oss2Client(srv2.endpoint)
    r = c2.b.append_object(key, len(base), b"next", init_crc=crc64(base))
    assert (r.next_position, r.crc) == (len(base) + 4, crc64(base + b"next"))
    srv2.kill()


def test_truncated_append_client_disconnect(server_factory):
    """The client goes away mid-body (no crash): nothing of the partial body may be committed."""
    srv = server_factory.start(name="disconnect")
    c = Oss2Client(srv.endpoint)
    key = "cut/disconnect.log"
    base = b"0123456789"
    c.b.append_object(key, 0, base)
    s = _start_truncated_append(srv, key, len(base), 1000, b"x" * 500)
    time.sleep(0.3)
    s.shutdown(socket.SHUT_RDWR)
    s.close()
    time.sleep(0.5)
    h = c.b.head_object(key)
    assert (h.content_length, h.server_crc) == (len(base), crc64(base))
    assert c.b.get_object(key).read() == base
    r = c.b.append_object(key, len(base), b"ok", init_crc=crc64(base))
    assert r.next_position == len(base) + 2
    # a new object cut off mid-body is not created either
    s = _start_truncated_append(srv, "cut/new.log", 0, 100, b"y" * 10)
    time.sleep(0.3)
    s.close()
    time.sleep(0.5)
    assert c.b.object_exists("cut/new.log") is False
    srv.kill()


def test_truncated_put_then_sigkill(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    srv = server_factory.start(data_dir=data_dir, name="truncated-put")
    c = Oss2Client(srv.endpoint)
    c.b.put_object("p/obj", b"old content")
    head = signed_v1_head_block(srv, "PUT", "p/obj", {}, 4096)
    s = socket.create_connection((srv.host, srv.port), timeout=10)
    s.sendall(head + b"n" * 2048)
    time.sleep(0.5)
    srv.kill9()
    s.close()
    srv2 = server_factory.start(data_dir=data_dir, name="truncated-put-restart")
    c2 = Oss2Client(srv2.endpoint)
    assert c2.b.get_object("p/obj").read() == b"old content"
    srv2.kill()


def test_data_dir_bucket_persists(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    srv = server_factory.start(data_dir=data_dir, name="bucket-persist")
    b = oss2.Bucket(Oss2Client(srv.endpoint).auth, srv.endpoint, "created-later")
    b.create_bucket()
    b.append_object("k", 0, b"v")
    srv.kill9()
    srv2 = server_factory.start(data_dir=data_dir, name="bucket-persist-restart")
    b2 = oss2.Bucket(Oss2Client(srv2.endpoint).auth, srv2.endpoint, "created-later")
    assert b2.get_object("k").read() == b"v"
    srv2.kill()


def test_sigkill_during_append_stream_is_consistent(server_factory, tmp_path):
    """Appends stream in while the server is SIGKILLed at an arbitrary moment.  After restart
    the object is a prefix of the sent chunks that contains every acknowledged chunk, and HEAD's
    CRC matches the content (no torn or half-written chunk)."""
    import threading

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    srv = server_factory.start(data_dir=data_dir, name="stream-kill")
    c = Oss2Client(srv.endpoint)
    key = "stream/app.log"
    chunks = [(f"{i:06d} " + "x" * (i % 97) + "\n").encode() * (1 + i % 5) for i in range(5000)]
    acked = []
    stop = threading.Event()

    def writer():
        pos = 0
        for ch in chunks:
            if stop.is_set():
                return
            try:
                r = c.b.append_object(key, pos, ch)
            except Exception:
                return
            pos = r.next_position
            acked.append(pos)

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 5
    while len(acked) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.kill9()
    stop.set()
    t.join(20)
    assert len(acked) >= 50, "writer made too little progress before the kill"

    srv2 = server_factory.start(data_dir=data_dir, name="stream-kill-restart")
    c2 = Oss2Client(srv2.endpoint)
    data = c2.b.get_object(key).read()
    h = c2.b.head_object(key)
    assert h.content_length == len(data)
    assert h.server_crc == crc64(data), "HEAD CRC does not match the recovered content"
    assert len(data) >= acked[-1], "acknowledged appends were lost"
    # the content is exactly chunks[0..k] for some k
    expect, k = b"", 0
    while len(expect) < len(data):
        expect += chunks[k]
        k += 1
    assert data == expect, "recovered content is not a whole-chunk prefix of what was sent"
    # the writer is sequential: at most the one in-flight (unacknowledged) chunk may be extra
    assert k in (len(acked), len(acked) + 1), (k, len(acked))
    srv2.kill()
