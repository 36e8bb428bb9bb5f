//! Reads never lie, without a kernel: the core over the in-memory fake store and over stores
//! and servers that lie (an overstated size, a listing entry from another directory, a server
//! that ignores `Range` or sends an endless body). Every read returns bytes the object holds,
//! or an error; never zeros, never bytes of an object that was replaced.

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use appendfs::client::{
    AppendOutcome, Client, ClientConfig, ClientError, CreateOptions, Credentials, ListEntry,
    ListPage, RangeData, WriteOutcome,
};
use appendfs::fs::namespace::ROOT;
use appendfs::fs::store::fake::FakeStore;
use appendfs::fs::store::Store;
use appendfs::fs::{Core, FsConfig, OpenMode};
use appendfs::oss::ObjectMeta;
use async_trait::async_trait;
use bytes::Bytes;

const RO: OpenMode = OpenMode {
    read: true,
    write: false,
};

fn core(store: Arc<dyn Store>, prefix: &str, dir: &std::path::Path) -> Arc<Core> {
    core_with_cache(store, prefix, dir, 8 << 20)
}

fn core_with_cache(
    store: Arc<dyn Store>,
    prefix: &str,
    dir: &std::path::Path,
    cache_size: u64,
) -> Arc<Core> {
    Core::new(
        store,
        FsConfig {
            prefix: prefix.to_string(),
            metadata_ttl: Duration::from_millis(100),
            cache_size,
            ..common::fs_config(
                dir.join("rescue"),
                1 << 20,
                Duration::from_millis(10),
                Duration::from_secs(5),
            )
        },
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Finding 3: an Appendable object replaced and regrown past its old length between two HEADs
/// is caught by the CRC of the new bytes: the old handle gets ESTALE, the name a new inode.
#[test]
fn a_replaced_object_that_grew_past_the_old_length_is_noticed() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        store.foreign_append("r.log", b"aaaa\n");
        let c = core(Arc::new(store.clone()), "", dir.path());
        let a = c.lookup(ROOT, "r.log").await.unwrap();
        let fh = c.open(a.ino, RO).await.unwrap();
        assert_eq!(c.read(fh, 0, 4096).await.unwrap().as_ref(), b"aaaa\n");
        store.foreign_replace("r.log", b"bbbbbbbbbbbbbbbbbbbb\n");
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The HEAD shows growth only: the same object as far as it can tell.
        assert_eq!(c.getattr(a.ino).await.unwrap().size, 21);
        // `tail -f` reads from where it was: the new bytes do not extend the old ones.
        let err = c.read(fh, 5, 4096).await.unwrap_err();
        assert_eq!(err.errno(), libc::ESTALE, "{err}");
        let again = c.lookup(ROOT, "r.log").await.unwrap();
        assert_ne!(again.ino, a.ino);
        let fh2 = c.open(again.ino, RO).await.unwrap();
        assert_eq!(
            c.read(fh2, 0, 4096).await.unwrap().as_ref(),
            b"bbbbbbbbbbbbbbbbbbbb\n"
        );
    });
}

/// Growth that does extend the old bytes is the same object: same inode, only new bytes.
#[test]
fn an_object_that_grew_is_the_same_object() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        store.foreign_append("g.log", b"one\n");
        let c = core(Arc::new(store.clone()), "", dir.path());
        let a = c.lookup(ROOT, "g.log").await.unwrap();
        let fh = c.open(a.ino, RO).await.unwrap();
        assert_eq!(c.read(fh, 0, 4096).await.unwrap().as_ref(), b"one\n");
        for line in ["two\n", "three\n"] {
            store.foreign_append("g.log", line.as_bytes());
            tokio::time::sleep(Duration::from_millis(150)).await;
            let size = c.getattr(a.ino).await.unwrap().size;
            let got = c.read(fh, size - line.len() as u64, 4096).await.unwrap();
            assert_eq!(got.as_ref(), line.as_bytes());
        }
        assert_eq!(c.lookup(ROOT, "g.log").await.unwrap().ino, a.ino);
    });
}

/// A store that overstates every object's size on HEAD and in listings, as a broken gateway
/// might; GETs are honest.
struct Overstating(FakeStore);

#[async_trait]
impl Store for Overstating {
    async fn head(&self, key: &str) -> Result<ObjectMeta, ClientError> {
        let mut m = self.0.head(key).await?;
        m.size += 3 << 20;
        m.next_append_position = m.next_append_position.map(|p| p + (3 << 20));
        m.crc64 = None;
        Ok(m)
    }
    async fn get_range(&self, key: &str, a: u64, b: u64) -> Result<RangeData, ClientError> {
        self.0.get_range(key, a, b).await
    }
    async fn append(
        &self,
        key: &str,
        p: u64,
        d: Bytes,
        o: &CreateOptions,
    ) -> Result<AppendOutcome, ClientError> {
        self.0.append(key, p, d, o).await
    }
    async fn put(
        &self,
        key: &str,
        d: Bytes,
        o: &CreateOptions,
    ) -> Result<WriteOutcome, ClientError> {
        self.0.put(key, d, o).await
    }
    async fn delete(&self, key: &str) -> Result<(), ClientError> {
        self.0.delete(key).await
    }
    async fn copy(&self, s: &str, d: &str) -> Result<WriteOutcome, ClientError> {
        self.0.copy(s, d).await
    }
    async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        token: Option<&str>,
        max: u32,
    ) -> Result<ListPage, ClientError> {
        let mut page = self.0.list_page(prefix, delimiter, token, max).await?;
        // Entries from somewhere else, and one cut inside a multi-byte character.
        page.contents.push(ListEntry {
            key: "elsewhere/x.log".into(),
            last_modified: chrono::Utc::now(),
            etag: "\"E\"".into(),
            object_type: appendfs::oss::ObjectType::Appendable,
            size: 1,
            storage_class: "Standard".into(),
        });
        page.common_prefixes.push("lo/".into());
        page.common_prefixes.push("logé/".into());
        Ok(page)
    }
}

/// Finding 1 in the small: a size that HEAD overstates is never padded with zeros: the read
/// fails (EIO) rather than guess.
#[test]
fn an_overstated_size_is_an_error_not_zeros() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        store.foreign_append("logs/s.log", b"9 bytes\n\n");
        let c = core(Arc::new(Overstating(store)), "logs", dir.path());
        let a = c.lookup(ROOT, "s.log").await.unwrap();
        assert!(a.size > 9);
        let fh = c.open(a.ino, RO).await.unwrap();
        match c.read(fh, 0, 1 << 20).await {
            Ok(data) => {
                assert!(!data.contains(&0), "zeros served");
                assert_eq!(data.as_ref(), b"9 bytes\n\n");
            }
            Err(e) => assert_eq!(e.errno(), libc::EIO, "{e}"),
        }
        let past = c.read(fh, 1 << 20, 1 << 20).await;
        assert!(
            past.as_ref().map_or(true, |d| d.is_empty()),
            "bytes past the object's end: {past:?}"
        );
    });
}

/// Finding 5: listing entries outside the directory (or cut inside a character) are skipped
/// with a warning; nothing panics.
#[test]
fn listing_entries_from_elsewhere_are_skipped() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        store.foreign_append("logs/a.log", b"a\n");
        let c = core(Arc::new(Overstating(store)), "logs", dir.path());
        let fh = c.opendir(ROOT).unwrap();
        let entries = c.readdir(fh, 0).await.unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [".", "..", "a.log"]);
    });
}

/// A raw HTTP server on loopback that answers every request with `head` and then `body`
/// written forever (or once), to test the client's bounds.
fn lying_server(head: &'static str, chunk: &'static [u8], endless: bool) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(head.as_bytes());
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                loop {
                    let framed =
                        [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
                    if conn.write_all(&framed).is_err() || !endless {
                        break;
                    }
                    if std::time::Instant::now() > deadline {
                        break;
                    }
                }
                let _ = conn.write_all(b"0\r\n\r\n");
            });
        }
    });
    format!("http://{addr}")
}

fn client(endpoint: &str) -> Client {
    let mut cfg = ClientConfig::new(endpoint, "bkt").unwrap();
    cfg.request_timeout = Duration::from_secs(10);
    cfg.retry = appendfs::client::RetryPolicy::none();
    Client::with_credentials(cfg, Credentials::new("AK", "SK")).unwrap()
}

/// Finding 6: a server that ignores `Range` and sends an endless 200: the read takes its range
/// and drops the rest.
#[test]
fn an_endless_body_to_a_ranged_read_is_cut_at_the_range() {
    rt().block_on(async {
        let ep = lying_server(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            &[b'x'; 65536],
            true,
        );
        let c = client(&ep);
        let got = tokio::time::timeout(Duration::from_secs(10), c.get_range("k", 10, 109))
            .await
            .expect("the read must stop at its range")
            .expect("bytes");
        assert_eq!(got.data.len(), 100);
        assert!(got.data.iter().all(|&b| b == b'x'));
    });
}

/// A 206 that carries more than its Content-Range announced is an error, not more data.
#[test]
fn a_partial_answer_longer_than_announced_is_an_error() {
    rt().block_on(async {
        let ep = lying_server(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/1000\r\nTransfer-Encoding: chunked\r\n\r\n",
            &[b'y'; 4096],
            true,
        );
        let c = client(&ep);
        let r = tokio::time::timeout(Duration::from_secs(10), c.get_range("k", 0, 99))
            .await
            .expect("the read must stop");
        let e = r.expect_err("more bytes than announced");
        assert!(
            matches!(e, ClientError::InvalidResponse { .. }),
            "an answer that does not match its Content-Range is invalid: {e}"
        );
    });
}

// -------------------------------------------------------------------------------------------
// Reads against a model of the object's history

use proptest::prelude::*;

#[derive(Debug, Clone)]
enum ReadOp {
    /// Another host appends this many bytes.
    Append(usize),
    /// Another host deletes the object and creates it anew with this many bytes.
    Replace(usize),
    /// Another host truncates it to 0 (copytruncate) and appends this many bytes.
    Truncate(usize),
    /// This mount reads `len` bytes at `offset` (a fraction of the size it believes).
    Read { at: u8, len: usize },
    /// Time passes (past the metadata TTL, or not).
    Sleep(u64),
}

fn read_op() -> impl Strategy<Value = ReadOp> {
    prop_oneof![
        4 => (1usize..3000).prop_map(ReadOp::Append),
        1 => (0usize..5000).prop_map(ReadOp::Replace),
        1 => (0usize..3000).prop_map(ReadOp::Truncate),
        6 => (any::<u8>(), 1usize..200_000).prop_map(|(at, len)| ReadOp::Read { at, len }),
        2 => prop_oneof![Just(0u64), Just(30), Just(120)].prop_map(ReadOp::Sleep),
    ]
}

/// Bytes that are never zero and differ per incarnation and position.
fn bytes_for(incarnation: usize, from: usize, n: usize) -> Vec<u8> {
    (from..from + n)
        .map(|i| 1 + ((i * 31 + incarnation * 97) % 250) as u8)
        .collect()
}

async fn run_reads(ops: Vec<ReadOp>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FakeStore::new();
    // Every incarnation's bytes so far; a read must be a slice of one of them.
    let mut incarnations: Vec<Vec<u8>> = vec![bytes_for(0, 0, 1000)];
    store.foreign_append("h.log", &incarnations[0]);
    let c = core(Arc::new(store.clone()), "", dir.path());
    let mut fh = c
        .open(c.lookup(ROOT, "h.log").await.expect("lookup").ino, RO)
        .await
        .expect("open");
    let mut believed = 1000u64;
    for op in ops {
        match op {
            ReadOp::Append(n) => {
                let cur = incarnations.len() - 1;
                let from = incarnations[cur].len();
                let data = bytes_for(cur, from, n);
                store.foreign_append("h.log", &data);
                incarnations[cur].extend_from_slice(&data);
            }
            ReadOp::Replace(n) | ReadOp::Truncate(n) => {
                let inc = incarnations.len();
                let data = bytes_for(inc, 0, n);
                store.foreign_replace("h.log", &data);
                incarnations.push(data);
            }
            ReadOp::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            ReadOp::Read { at, len } => {
                let offset = believed * u64::from(at) / 255;
                match c.read(fh, offset, len as u32).await {
                    Ok(data) => {
                        let ok = data.is_empty()
                            || incarnations.iter().any(|inc| {
                                let o = offset as usize;
                                o + data.len() <= inc.len() && inc[o..o + data.len()] == data[..]
                            });
                        prop_assert!(
                            ok,
                            "read of {} bytes at {} matches no version of the object",
                            data.len(),
                            offset
                        );
                    }
                    Err(e) if e.errno() == libc::ESTALE => {
                        // The object was replaced: open the name again, as `tail -F` does.
                        let a = c.lookup(ROOT, "h.log").await.expect("lookup after ESTALE");
                        c.release(fh).await.ok();
                        fh = c.open(a.ino, RO).await.expect("reopen");
                    }
                    Err(e) => prop_assert!(false, "read failed: {e}"),
                }
                if let Ok(a) = c.lookup(ROOT, "h.log").await {
                    believed = a.size.max(1);
                    c.forget(a.ino, 1);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_read_is_a_slice_of_some_version(ops in prop::collection::vec(read_op(), 1..40)) {
        rt().block_on(run_reads(ops))?;
    }
}

/// `--max-memory`: the block cache gives way to buffered writes, and the two together stay
/// within the one bound.
#[test]
fn one_memory_bound_for_cache_and_buffered_writes() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        store.foreign_append("big.bin", &bytes_for(0, 0, 6 << 20));
        let mb: u64 = 1 << 20;
        let c = Core::new(
            Arc::new(store.clone()),
            FsConfig {
                metadata_ttl: Duration::from_secs(5),
                cache_size: 64 * mb,
                max_dirty: 64 * mb,
                max_memory: Some(4 * mb),
                ..common::fs_config(
                    dir.path().join("rescue"),
                    64 * mb,
                    Duration::from_secs(60),
                    Duration::from_secs(5),
                )
            },
        );
        let a = c.lookup(ROOT, "big.bin").await.unwrap();
        let fh = c.open(a.ino, RO).await.unwrap();
        let mut off = 0;
        while off < 6 * mb {
            off += c.read(fh, off, mb as u32).await.unwrap().len() as u64;
        }
        assert!(c.cached_bytes() <= 4 * mb, "cache {}", c.cached_bytes());
        let (_, w) = c
            .create(
                ROOT,
                "w.log",
                false,
                OpenMode {
                    read: false,
                    write: true,
                },
            )
            .await
            .unwrap();
        for _ in 0..3 {
            c.write(w, 0, Bytes::from(vec![b'x'; mb as usize]), true)
                .await
                .unwrap();
        }
        assert_eq!(c.dirty_bytes(), 3 * mb);
        assert!(
            c.cached_bytes() + c.dirty_bytes() <= 4 * mb,
            "cache {} + buffered {} over the 4 MiB bound",
            c.cached_bytes(),
            c.dirty_bytes()
        );
        c.release(w).await.unwrap();
        assert_eq!(store.content("w.log").unwrap().len() as u64, 3 * mb);
    });
}

/// A listing that takes long (a huge directory, a slow server) holds no lock that a `stat`
/// of a file in the same directory needs.
#[test]
fn a_slow_listing_does_not_stall_a_stat() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        store.foreign_append("d/a.log", b"a\n");
        store.foreign_append("d/b.log", b"b\n");
        let c = core(Arc::new(store.clone()), "", dir.path());
        let d = c.lookup(ROOT, "d").await.unwrap();
        store.script(
            appendfs::fs::store::fake::Call::List,
            [appendfs::fs::store::fake::Fault::DelayMs(3000)],
        );
        let fh = c.opendir(d.ino).unwrap();
        let listing = tokio::spawn({
            let c = c.clone();
            async move { c.readdir(fh, 0).await.map(|e| e.len()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = std::time::Instant::now();
        let a = c.lookup(d.ino, "a.log").await.unwrap();
        assert_eq!(c.getattr(a.ino).await.unwrap().size, 2);
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "stat waited {:?} for the listing",
            t.elapsed()
        );
        assert_eq!(listing.await.unwrap().unwrap(), 4);
    });
}

/// `ls -l` of a directory that takes longer than the metadata TTL: lookups of entries the
/// (now stale) listing named cost one relisting, not a HEAD and a LIST each.
#[test]
fn lookups_after_a_listing_went_stale_cost_one_relisting() {
    rt().block_on(async {
        use appendfs::fs::store::fake::Call;
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        for i in 0..300 {
            store.foreign_append(&format!("d/f{i:03}.log"), b"x\n");
        }
        let c = core(Arc::new(store.clone()), "", dir.path());
        let d = c.lookup(ROOT, "d").await.unwrap();
        let fh = c.opendir(d.ino).unwrap();
        assert_eq!(c.readdir(fh, 0).await.unwrap().len(), 302);
        tokio::time::sleep(Duration::from_millis(150)).await; // past the 100 ms TTL
        let (lists, heads) = (store.calls(Call::List), store.calls(Call::Head));
        for i in 0..300 {
            let a = c.lookup(d.ino, &format!("f{i:03}.log")).await.unwrap();
            assert_eq!(c.getattr(a.ino).await.unwrap().size, 2);
        }
        let (lists, heads) = (
            store.calls(Call::List) - lists,
            store.calls(Call::Head) - heads,
        );
        assert_eq!(heads, 0, "no HEAD per entry");
        assert!(lists <= 3, "{lists} listings for 300 lookups");
    });
}

/// A listing of many slow pages holds no lock that a `stat` needs, of a file in the same
/// directory (listed or not) or elsewhere: each answers in about the time of its own requests.
#[test]
fn a_long_paged_listing_does_not_stall_a_stat() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        for i in 0..3500 {
            store.foreign_put(&format!("d/f{i:04}.log"), b"x");
        }
        store.foreign_append("e/other.log", b"other\n");
        let c = core(Arc::new(store.clone()), "", dir.path());
        let d = c.lookup(ROOT, "d").await.unwrap();
        let e = c.lookup(ROOT, "e").await.unwrap();
        store.slow_list("d/", 400); // four pages: 1.6 s
        let listing = tokio::spawn({
            let c = c.clone();
            async move { c.readdir_entries(d.ino).await.map(|e| e.len()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (parent, name, size) in [(d.ino, "f3000.log", 1), (e.ino, "other.log", 6)] {
            let t = std::time::Instant::now();
            let a = c.lookup(parent, name).await.unwrap();
            assert_eq!(c.getattr(a.ino).await.unwrap().size, size);
            assert!(
                t.elapsed() < Duration::from_millis(300),
                "stat of {name} waited {:?} for the listing",
                t.elapsed()
            );
        }
        assert!(!listing.is_finished(), "the listing was meant to be slow");
        assert_eq!(listing.await.unwrap().unwrap(), 3502);
    });
}

/// A directory handle fetches a page when the kernel's offset reaches it, so the first
/// `readdir` answers after one ListObjectsV2 page, not all of them; offsets it gave out stay
/// valid (seekdir lists that page again and resumes at the same entry), and offset 0 starts
/// over.
#[test]
fn a_handle_holds_a_page_and_resumes_at_its_offsets() {
    rt().block_on(async {
        use appendfs::fs::store::fake::Call;
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        for i in 0..2500 {
            store.foreign_put(&format!("d/f{i:04}.log"), b"x");
        }
        let c = core(Arc::new(store.clone()), "", dir.path());
        let d = c.lookup(ROOT, "d").await.unwrap();
        let fh = c.opendir(d.ino).unwrap();
        let lists = store.calls(Call::List);
        let first = c.readdir(fh, 0).await.unwrap();
        assert_eq!(
            store.calls(Call::List) - lists,
            1,
            "one page for the first reply"
        );
        assert_eq!(
            (first.start, first.len()),
            (0, 1001),
            ". and .. and one page (its last file waits: the next page might hide it)"
        );
        // Read on as the kernel does, a few entries per call.
        let mut names: Vec<String> = first.iter().take(37).map(|e| e.name.clone()).collect();
        let mut offset = names.len() as u64;
        loop {
            let b = c.readdir(fh, offset).await.unwrap();
            let skip = (offset - b.start) as usize;
            let got: Vec<String> = b
                .iter()
                .skip(skip)
                .take(37)
                .map(|e| e.name.clone())
                .collect();
            if got.is_empty() {
                break;
            }
            offset += got.len() as u64;
            names.extend(got);
        }
        assert_eq!(names.len(), 2502);
        assert_eq!(
            store.calls(Call::List) - lists,
            3,
            "three pages, each fetched once"
        );
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 2502, "no name twice");
        // seekdir back to offsets the handle gave out: the entry there is the same.
        for off in [1500u64, 17, 2400, 1001, 1002] {
            let b = c.readdir(fh, off).await.unwrap();
            let e = &b[(off - b.start) as usize];
            assert_eq!(e.name, names[off as usize], "entry at offset {off}");
        }
        let b = c.readdir(fh, 2502).await.unwrap();
        assert!(b.get((2502 - b.start) as usize).is_none(), "the end");
        // rewinddir: the whole listing again.
        let b = c.readdir(fh, 0).await.unwrap();
        assert_eq!(
            (b.start, b[0].name.as_str(), b[2].name.as_str()),
            (0, ".", "f0000.log")
        );
        c.releasedir(fh);
    });
}

/// A file `x` and a directory `x/` whose prefix comes on the next page: the directory is
/// shown, once; and a file created through the mount while a listing runs is shown once.
#[test]
fn a_name_split_across_pages_and_a_create_during_a_listing() {
    rt().block_on(async {
        use appendfs::fs::core::DirEntry;
        use appendfs::fs::namespace::Kind;
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        for i in 0..999 {
            store.foreign_put(&format!("d/f{i:03}"), b"x");
        }
        store.foreign_put("d/x", b"file");
        store.foreign_put("d/x/inner", b"below");
        for i in 0..1500 {
            store.foreign_put(&format!("d/y{i:04}"), b"x");
        }
        let c = core(Arc::new(store.clone()), "", dir.path());
        let d = c.lookup(ROOT, "d").await.unwrap();
        let kinds = |entries: &[DirEntry], name: &str| -> Vec<Kind> {
            entries
                .iter()
                .filter(|e| e.name == name)
                .map(|e| e.kind)
                .collect()
        };
        let all = c.readdir_entries(d.ino).await.unwrap();
        assert_eq!(all.len(), 2 + 999 + 1 + 1500);
        assert_eq!(kinds(&all, "x"), [Kind::Dir]);
        tokio::time::sleep(Duration::from_millis(150)).await; // the remembered listing is stale
                                                              // A create between the first page and the rest: listed once, wherever its key falls.
        let fh = c.opendir(d.ino).unwrap();
        let first = c.readdir(fh, 0).await.unwrap();
        assert_eq!(
            first.len(),
            1001,
            "page one holds f000..f998; x waits for the next"
        );
        let rw = OpenMode {
            read: true,
            write: true,
        };
        let (_, wfh) = c.create(d.ino, "y0500-new", false, rw).await.unwrap();
        let (_, wfh2) = c.create(d.ino, "a-new", false, rw).await.unwrap();
        let mut entries: Vec<DirEntry> = first.to_vec();
        loop {
            let b = c.readdir(fh, entries.len() as u64).await.unwrap();
            let skip = entries.len() - b.start as usize;
            if b.len() <= skip {
                break;
            }
            entries.extend(b[skip..].iter().cloned());
        }
        assert_eq!(kinds(&entries, "x"), [Kind::Dir]);
        assert_eq!(
            kinds(&entries, "y0500-new"),
            [Kind::File],
            "listed by a later page"
        );
        assert_eq!(
            kinds(&entries, "a-new"),
            Vec::<Kind>::new(),
            "created before the cursor, after this handle began"
        );
        c.release(wfh).await.unwrap();
        c.release(wfh2).await.unwrap();
        c.releasedir(fh);
        let again = c.readdir_entries(d.ino).await.unwrap();
        assert_eq!(kinds(&again, "a-new"), [Kind::File]);
        assert_eq!(again.len(), all.len() + 2);
    });
}

/// A listing read whole, of up to 20,000 entries, is remembered for the metadata TTL: the
/// next listing and lookups of its names send no request. A larger directory is not held
/// whole: its next listing asks OSS again.
#[test]
fn small_listings_are_remembered_for_the_ttl_large_ones_are_not() {
    let run = |files: usize| {
        rt().block_on(async move {
            use appendfs::fs::store::fake::Call;
            let dir = tempfile::tempdir().unwrap();
            let store = FakeStore::new();
            for i in 0..files {
                store.foreign_put(&format!("d/f{i:05}"), b"x");
            }
            let c = Core::new(
                Arc::new(store.clone()),
                FsConfig {
                    metadata_ttl: Duration::from_secs(30),
                    ..core(Arc::new(FakeStore::new()), "", dir.path())
                        .config()
                        .clone()
                },
            );
            let d = c.lookup(ROOT, "d").await.unwrap();
            assert_eq!(c.readdir_entries(d.ino).await.unwrap().len(), files + 2);
            let before = (store.calls(Call::List), store.calls(Call::Head));
            assert_eq!(c.readdir_entries(d.ino).await.unwrap().len(), files + 2);
            let a = c.lookup(d.ino, "f00007").await.unwrap();
            assert_eq!(c.getattr(a.ino).await.unwrap().size, 1);
            let missing = c.lookup(d.ino, "nothing").await;
            assert!(missing.is_err());
            (
                store.calls(Call::List) - before.0,
                store.calls(Call::Head) - before.1,
            )
        })
    };
    assert_eq!(run(3000), (0, 0), "remembered: no request");
    let (lists, _) = run(20_500);
    assert!(lists >= 21, "not remembered: listed again ({lists} pages)");
}

const MIB: u64 = 1 << 20;

/// A read that does not continue the handle's previous reads fetches the pieces it touches
/// (32 KiB), not the 1 MiB blocks around it; read again, it costs nothing.
#[test]
fn a_random_read_fetches_a_small_range() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        let data = bytes_for(0, 0, (32 * MIB) as usize);
        store.foreign_append("r.bin", &data);
        let c = core_with_cache(Arc::new(store.clone()), "", dir.path(), 256 * MIB);
        let fh = c
            .open(c.lookup(ROOT, "r.bin").await.unwrap().ino, RO)
            .await
            .unwrap();
        // (A handle's first read near the start counts as the start of a sequential read.)
        for &at in &[
            20 * MIB + 12_345,
            12 * MIB + 40_000,
            30 * MIB - 100,
            20 * MIB + 12_345,
        ] {
            let got = c.read(fh, at, 4096).await.unwrap();
            assert_eq!(got.as_ref(), &data[at as usize..at as usize + 4096]);
        }
        let ranges = store.get_ranges();
        assert_eq!(ranges.len(), 3, "the repeated read is cached: {ranges:?}");
        for (_, first, last) in &ranges {
            assert!(
                last - first < 64 * 1024,
                "a 4 KiB random read fetched {} bytes",
                last - first + 1
            );
        }
        c.release(fh).await.unwrap();
    });
}

/// A sequential reader's prefetch ramps up from one block and then asks for 8 MiB per GET:
/// all but the first few requests (and the one at the end of the object) are 8 MiB, and
/// nothing is fetched twice.
#[test]
fn sequential_reads_reach_8_mib_requests() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        let len = 100 * MIB + 4321;
        let data = bytes_for(0, 0, len as usize);
        store.foreign_append("s.bin", &data);
        let c = core_with_cache(Arc::new(store.clone()), "", dir.path(), 256 * MIB);
        let fh = c
            .open(c.lookup(ROOT, "s.bin").await.unwrap().ino, RO)
            .await
            .unwrap();
        let mut off = 0u64;
        while off < len {
            let got = c.read(fh, off, 128 * 1024).await.unwrap();
            assert!(!got.is_empty());
            assert!(got[..] == data[off as usize..off as usize + got.len()]);
            off += got.len() as u64;
        }
        let ranges = store.get_ranges();
        let sizes: Vec<u64> = ranges.iter().map(|(_, a, b)| b - a + 1).collect();
        let fetched: u64 = sizes.iter().sum();
        assert_eq!(fetched, len, "every byte fetched once: {sizes:?}");
        let small = sizes[..sizes.len() - 1]
            .iter()
            .filter(|&&n| n < 8 * MIB)
            .count();
        assert!(
            small <= 5,
            "more than the ramp's requests are under 8 MiB: {sizes:?}"
        );
        assert!(
            ranges.len() as u64 <= len / (8 * MIB) + 6,
            "{} GETs for {len} bytes: {sizes:?}",
            ranges.len()
        );
        c.release(fh).await.unwrap();
    });
}

/// A program that reads a small header at the start of a large file costs one block, no
/// prefetch.
#[test]
fn a_header_read_costs_one_block() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = FakeStore::new();
        let data = bytes_for(0, 0, (32 * MIB) as usize);
        store.foreign_append("h.bin", &data);
        let c = core_with_cache(Arc::new(store.clone()), "", dir.path(), 256 * MIB);
        let fh = c
            .open(c.lookup(ROOT, "h.bin").await.unwrap().ino, RO)
            .await
            .unwrap();
        let got = c.read(fh, 0, 4096).await.unwrap();
        assert_eq!(got.as_ref(), &data[..4096]);
        let got = c.read(fh, 4096, 4096).await.unwrap();
        assert_eq!(got.as_ref(), &data[4096..8192]);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let ranges = store.get_ranges();
        assert_eq!(
            ranges,
            vec![("h.bin".to_string(), 0, MIB - 1)],
            "one block, nothing prefetched"
        );
        c.release(fh).await.unwrap();
    });
}
