//! The filesystem core without a kernel, against the local server over HTTP: the read path
//! (block cache, prefetch runs, read-your-writes) and what each operation costs in requests.

mod common;

use std::sync::Arc;
use std::time::Duration;

use appendfs::client::{Client, ClientConfig, CreateOptions};
use appendfs::fs::namespace::ROOT;
use appendfs::fs::{Core, FsConfig, OpenMode};
use appendfs::oss::Credentials;
use appendfs::server::{self, RunningServer, ServerConfig};
use bytes::Bytes;

const MIB: u64 = 1024 * 1024;

async fn setup(cache_size: u64) -> (RunningServer, Client, Arc<Core>) {
    let creds = Credentials::new("AKIDCORE", "core-secret");
    let srv = server::start(
        ServerConfig {
            credentials: Some(creds.clone()),
            buckets: vec!["bkt".into()],
            ..ServerConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let client =
        Client::with_credentials(ClientConfig::new(&srv.endpoint(), "bkt").unwrap(), creds)
            .unwrap();
    let core = Core::new(
        Arc::new(client.clone()),
        FsConfig {
            cache_size,
            max_dirty: 64 * MIB,
            ..common::fs_config(
                std::env::temp_dir().join(format!("appendfs-core-rescue-{}", std::process::id())),
                8 * MIB,
                Duration::from_millis(50),
                Duration::from_secs(30),
            )
        },
    );
    (srv, client, core)
}

fn pattern(len: u64) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn gets(srv: &RunningServer) -> u64 {
    srv.stats().get("GetObject").copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_prefetch_in_large_gets() {
    let (srv, client, core) = setup(256 * MIB).await;
    let data = pattern(24 * MIB + 123);
    client
        .put_object(
            "big.bin",
            Bytes::from(data.clone()),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    let attr = core.lookup(ROOT, "big.bin").await.unwrap();
    assert_eq!(attr.size, data.len() as u64);
    let fh = core
        .open(
            attr.ino,
            OpenMode {
                read: true,
                write: false,
            },
        )
        .await
        .unwrap();
    let before = gets(&srv);
    let mut got = Vec::new();
    let mut off = 0u64;
    loop {
        let chunk = core.read(fh, off, MIB as u32).await.unwrap();
        if chunk.is_empty() {
            break;
        }
        off += chunk.len() as u64;
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "sequential read returned other bytes");
    let used = gets(&srv) - before;
    eprintln!("25 blocks read sequentially with {used} GETs");
    assert!(
        used <= 8,
        "prefetch should fetch runs of blocks, used {used} GETs for 25 blocks"
    );
    // Read again: all from the block cache.
    let again = core.read(fh, 5 * MIB + 7, 3 * MIB as u32).await.unwrap();
    assert_eq!(
        again.as_ref(),
        &data[(5 * MIB + 7) as usize..(8 * MIB + 7) as usize]
    );
    assert_eq!(gets(&srv) - before, used, "cached blocks cost no request");
    core.release(fh).await.unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_reads_are_exact_with_a_tiny_cache() {
    // A 2 MiB cache for a 9 MiB object: blocks are evicted and fetched again.
    let (srv, client, core) = setup(2 * MIB).await;
    let data = pattern(9 * MIB + 5);
    client
        .put_object(
            "r.bin",
            Bytes::from(data.clone()),
            &CreateOptions::default(),
        )
        .await
        .unwrap();
    let attr = core.lookup(ROOT, "r.bin").await.unwrap();
    let fh = core
        .open(
            attr.ino,
            OpenMode {
                read: true,
                write: false,
            },
        )
        .await
        .unwrap();
    let mut x = 12345u64;
    for _ in 0..60 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let off = (x >> 20) % data.len() as u64;
        let len = ((x >> 8) % (3 * MIB)) as u32 + 1;
        let got = core.read(fh, off, len).await.unwrap();
        let end = (off + len as u64).min(data.len() as u64) as usize;
        assert_eq!(
            got.as_ref(),
            &data[off as usize..end],
            "read at {off} of {len}"
        );
    }
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_and_the_cost_of_an_append() {
    let (srv, client, core) = setup(64 * MIB).await;
    let (attr, fh) = core
        .create(
            ROOT,
            "log.txt",
            false,
            OpenMode {
                read: true,
                write: true,
            },
        )
        .await
        .unwrap();
    let after_create = srv.stats();
    // Buffered bytes are visible on this mount before they are on OSS.
    core.write(fh, 0, Bytes::from_static(b"one\n"), true)
        .await
        .unwrap();
    core.write(fh, 4, Bytes::from_static(b"two\n"), true)
        .await
        .unwrap();
    assert_eq!(core.getattr(attr.ino).await.unwrap().size, 8);
    assert_eq!(core.read(fh, 0, 100).await.unwrap().as_ref(), b"one\ntwo\n");
    core.flush(fh).await.unwrap();
    let delta =
        |a: &std::collections::BTreeMap<String, u64>,
         b: &std::collections::BTreeMap<String, u64>,
         k: &str| { b.get(k).copied().unwrap_or(0) - a.get(k).copied().unwrap_or(0) };
    let after_flush = srv.stats();
    assert_eq!(
        delta(&after_create, &after_flush, "AppendObject"),
        1,
        "two writes, one flush: one AppendObject"
    );
    assert_eq!(
        delta(&after_create, &after_flush, "HeadObject"),
        0,
        "create told us the position"
    );
    assert_eq!(
        client
            .get_object_bytes("log.txt", None)
            .await
            .unwrap()
            .data
            .as_ref(),
        b"one\ntwo\n"
    );
    core.release(fh).await.unwrap();
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_be_names_are_skipped() {
    let (srv, client, core) = setup(8 * MIB).await;
    let long = "n".repeat(300);
    for key in ["ok.txt", "a//b", "a/fine", &long, "dir/./x", "dir/y"] {
        client
            .put_object(key, Bytes::from_static(b"x"), &CreateOptions::default())
            .await
            .unwrap();
    }
    let names = |entries: &[appendfs::fs::core::DirEntry]| {
        let mut v: Vec<String> = entries
            .iter()
            .map(|e| e.name.clone())
            .filter(|n| n != "." && n != "..")
            .collect();
        v.sort();
        v
    };
    let root = core.readdir_entries(ROOT).await.unwrap();
    assert_eq!(
        names(&root),
        ["a", "dir", "ok.txt"],
        "the 300-byte name is skipped"
    );
    let a = core.lookup(ROOT, "a").await.unwrap();
    assert_eq!(
        names(&core.readdir_entries(a.ino).await.unwrap()),
        ["fine"],
        "the empty segment of a//b is skipped"
    );
    let d = core.lookup(ROOT, "dir").await.unwrap();
    assert_eq!(
        names(&core.readdir_entries(d.ino).await.unwrap()),
        ["y"],
        "'.' is skipped"
    );
    assert_eq!(
        core.lookup(ROOT, &long).await.unwrap_err().errno(),
        libc::ENAMETOOLONG
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_handle_keeps_appending_after_rename() {
    // logrotate-style: the writer's handle follows the file to its new name.
    let (srv, client, core) = setup(8 * MIB).await;
    let rw = OpenMode {
        read: true,
        write: true,
    };
    let (_attr, fh) = core.create(ROOT, "app.log", false, rw).await.unwrap();
    core.write(fh, 0, Bytes::from_static(b"one\n"), true)
        .await
        .unwrap();
    core.flush(fh).await.unwrap();
    core.write(fh, 4, Bytes::from_static(b"two\n"), true)
        .await
        .unwrap(); // still buffered during the rename
    core.rename(ROOT, "app.log", ROOT, "app.log.1", false)
        .await
        .unwrap();
    core.write(fh, 8, Bytes::from_static(b"three\n"), true)
        .await
        .unwrap();
    core.flush(fh).await.unwrap();
    core.release(fh).await.unwrap();
    assert_eq!(
        client
            .get_object_bytes("app.log.1", None)
            .await
            .unwrap()
            .data
            .as_ref(),
        b"one\ntwo\nthree\n"
    );
    let meta = client.head_object("app.log.1").await.unwrap();
    assert_eq!(
        meta.object_type,
        Some(appendfs::oss::ObjectType::Appendable)
    );
    assert!(client
        .head_object("app.log")
        .await
        .unwrap_err()
        .is_no_such_key());
    // A new file under the old name is a new object.
    let (_a, fh2) = core.create(ROOT, "app.log", false, rw).await.unwrap();
    core.write(fh2, 0, Bytes::from_static(b"fresh\n"), true)
        .await
        .unwrap();
    core.release(fh2).await.unwrap();
    assert_eq!(
        client
            .get_object_bytes("app.log", None)
            .await
            .unwrap()
            .data
            .as_ref(),
        b"fresh\n"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_is_not_served_from_old_blocks() {
    let (srv, client, core) = setup(8 * MIB).await;
    let opts = CreateOptions::default();
    client
        .append_object("r.log", 0, Bytes::from_static(b"old contents\n"), &opts)
        .await
        .unwrap();
    let attr = core.lookup(ROOT, "r.log").await.unwrap();
    let fh = core
        .open(
            attr.ino,
            OpenMode {
                read: true,
                write: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        core.read(fh, 0, 100).await.unwrap().as_ref(),
        b"old contents\n"
    );
    // Replaced elsewhere by an appendable object of the same length.
    client.delete_object("r.log").await.unwrap();
    client
        .append_object("r.log", 0, Bytes::from_static(b"new contents\n"), &opts)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the metadata TTL
                                                           // The old inode keeps its attributes; its handle fails instead of serving old blocks.
    assert_eq!(core.getattr(attr.ino).await.unwrap().size, 13);
    let err = core.read(fh, 0, 100).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE, "{err}");
    // The name now leads to a new inode (so `tail -F` notices), which reads the new bytes.
    let again = core.lookup(ROOT, "r.log").await.unwrap();
    assert_ne!(
        again.ino, attr.ino,
        "a replaced object gets a new inode number"
    );
    let fh2 = core
        .open(
            again.ino,
            OpenMode {
                read: true,
                write: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        core.read(fh2, 0, 100).await.unwrap().as_ref(),
        b"new contents\n"
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_l_costs_listings_not_a_head_per_file() {
    let (srv, client, core) = setup(8 * MIB).await;
    for i in 0..20 {
        let key = format!("f{i:02}.log");
        client
            .append_object(
                &key,
                0,
                Bytes::from(vec![b'x'; i + 1]),
                &CreateOptions::default(),
            )
            .await
            .unwrap();
    }
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(1100)).await; // every cached attribute is stale
        }
        let before = srv.stats();
        let entries = core.readdir_entries(ROOT).await.unwrap();
        for e in entries.iter().filter(|e| e.name.starts_with('f')) {
            // As readdirplus hands it to the kernel, then as a later stat asks.
            let ino = core.entry_ref(e).ino;
            let a = core.getattr(ino).await.unwrap();
            assert_eq!(a.size, e.name[1..3].parse::<u64>().unwrap() + 1);
        }
        let after = srv.stats();
        let heads = after.get("HeadObject").copied().unwrap_or(0)
            - before.get("HeadObject").copied().unwrap_or(0);
        let lists = after.get("ListObjectsV2").copied().unwrap_or(0)
            - before.get("ListObjectsV2").copied().unwrap_or(0);
        assert_eq!(
            (lists, heads),
            (1, 0),
            "round {round}: one listing, no HEAD"
        );
    }
    srv.shutdown().await;
}

/// `tail -f` of a log growing 4 KiB at a time fetches the new bytes only, not the whole
/// partial last block each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_growing_file_fetches_only_new_bytes() {
    let (srv, client, core) = setup(64 * MIB).await;
    let opts = CreateOptions::default();
    let first = pattern(300 * 1024);
    client
        .append_object("t.log", 0, Bytes::from(first.clone()), &opts)
        .await
        .unwrap();
    let attr = core.lookup(ROOT, "t.log").await.unwrap();
    let fh = core
        .open(
            attr.ino,
            OpenMode {
                read: true,
                write: false,
            },
        )
        .await
        .unwrap();
    let got = core.read(fh, 0, MIB as u32).await.unwrap();
    assert_eq!(got.as_ref(), first.as_slice());
    let sent = |srv: &RunningServer| {
        srv.traffic()
            .operations
            .get("GetObject")
            .map_or(0, |t| t.bytes_sent)
    };
    let before = sent(&srv);
    let mut end = first.len() as u64;
    let mut appended = 0u64;
    for i in 0..5u8 {
        let chunk = vec![b'a' + i; 4096];
        client
            .append_object("t.log", end, Bytes::from(chunk.clone()), &opts)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1050)).await; // past the metadata TTL
        let size = core.getattr(attr.ino).await.unwrap().size;
        assert_eq!(size, end + 4096);
        let got = core.read(fh, end, MIB as u32).await.unwrap();
        assert_eq!(got.as_ref(), chunk.as_slice());
        end += 4096;
        appended += 4096;
    }
    let fetched = sent(&srv) - before;
    eprintln!("{appended} bytes appended, {fetched} bytes fetched to follow them");
    assert!(
        fetched * 10 <= appended * 11,
        "following fetched {fetched} bytes for {appended} appended"
    );
    srv.shutdown().await;
}
