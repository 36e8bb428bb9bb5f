//! The namespace: the inode ↔ key table, each file's cached HEAD result and each directory's
//! cached listing. Inode numbers are never reused; a node lives while the kernel holds lookups
//! on it or handles are open. A regular file's path is its object key; a directory's path is its
//! key prefix, ending in `/` (the mount root's is the mount prefix, possibly empty).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::oss::{ObjectMeta, ObjectType};

pub const ROOT: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// What a file looks like on OSS, from a HEAD or a listing.
#[derive(Debug, Clone)]
pub struct FileMeta {
    pub size: u64,
    pub mtime: SystemTime,
    pub object_type: ObjectType,
    pub etag: String,
    /// Absent when it came from a listing.
    pub crc64: Option<u64>,
    pub storage_class: Option<String>,
    pub user_meta: BTreeMap<String, String>,
    /// Whether this came from a HEAD (complete) or a listing.
    pub from_head: bool,
}

impl FileMeta {
    pub fn from_head(m: &ObjectMeta) -> Self {
        FileMeta {
            size: m.next_append_position.unwrap_or(m.size).max(m.size),
            mtime: m
                .last_modified
                .map(SystemTime::from)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            object_type: m.object_type.unwrap_or(ObjectType::Normal),
            etag: m.etag.clone(),
            crc64: m.crc64,
            storage_class: m.storage_class.clone(),
            user_meta: m.user_meta.clone(),
            from_head: true,
        }
    }
}

/// Mode, owner and modification time the ossfs way, in user metadata (names without the
/// `x-oss-meta-` prefix): `mode` is the whole `st_mode` in decimal, file-type bits included
/// (`33188` for a 0644 file); `uid` and `gid` are decimal; `mtime` is epoch seconds, with
/// `.` and nine digits of nanoseconds when those are not zero. A field that is absent or
/// unreadable is `None` (the mount's default is shown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PosixMeta {
    /// Permission bits only (`& 0o7777`): the key decides whether it is a file.
    pub mode: Option<u16>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
}

/// `S_IFREG`: ossfs stores the file-type bits with the permissions.
const S_IFREG: u32 = 0o100000;

impl PosixMeta {
    pub fn from_user_meta(m: &BTreeMap<String, String>) -> Self {
        PosixMeta {
            mode: m
                .get("mode")
                .and_then(|v| parse_c_integer(v))
                .and_then(|v| u32::try_from(v).ok())
                .map(|v| (v & 0o7777) as u16),
            uid: m.get("uid").and_then(|v| v.trim().parse().ok()),
            gid: m.get("gid").and_then(|v| v.trim().parse().ok()),
            mtime: m.get("mtime").and_then(|v| parse_mtime(v)),
        }
    }

    /// Writes the fields that are set into `m`, in the format above.
    pub fn write_to(&self, m: &mut BTreeMap<String, String>) {
        if let Some(mode) = self.mode {
            m.insert("mode".into(), (S_IFREG | u32::from(mode)).to_string());
        }
        if let Some(uid) = self.uid {
            m.insert("uid".into(), uid.to_string());
        }
        if let Some(gid) = self.gid {
            m.insert("gid".into(), gid.to_string());
        }
        if let Some(t) = self.mtime {
            m.insert("mtime".into(), format_mtime(t));
        }
    }

    /// These values, with each field `other` sets taking its place.
    pub fn overlay(self, other: PosixMeta) -> PosixMeta {
        PosixMeta {
            mode: other.mode.or(self.mode),
            uid: other.uid.or(self.uid),
            gid: other.gid.or(self.gid),
            mtime: other.mtime.or(self.mtime),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == PosixMeta::default()
    }
}

/// An integer as C's `strtoll(s, NULL, 0)` reads it (ossfs parses `mode` so): decimal, or
/// octal with a leading `0`, or hex with `0x`.
fn parse_c_integer(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

/// `SECONDS[.NANOS]` (rclone writes fractions too; shorter fractions count as decimals).
fn parse_mtime(s: &str) -> Option<SystemTime> {
    let (secs, frac) = match s.trim().split_once('.') {
        Some((a, b)) => (a, b),
        None => (s.trim(), ""),
    };
    let secs: u64 = secs.parse().ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        format!("{digits:0<9}").parse::<u32>().ok()?
    };
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn format_mtime(t: SystemTime) -> String {
    // Times before 1970 cannot be written in this format: stored as 0.
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    match d.subsec_nanos() {
        0 => d.as_secs().to_string(),
        n => format!("{}.{n:09}", d.as_secs()),
    }
}

#[derive(Debug, Clone)]
pub struct Cached<T> {
    pub value: T,
    pub at: Instant,
}

/// One directory level as ListObjectsV2 with delimiter `/` shows it, in name order: each
/// name with what the listing said of it (`None` for a directory).
#[derive(Debug, Default)]
pub struct Listing {
    entries: Vec<(String, Option<FileMeta>)>,
}

impl Listing {
    /// The listing of these entries (any order; a name given twice counts once).
    pub fn new(mut entries: Vec<(String, Option<FileMeta>)>) -> Self {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries.dedup_by(|a, b| a.0 == b.0);
        entries.shrink_to_fit();
        Listing { entries }
    }

    /// `Some(None)` for a directory, `Some(Some(meta))` for a file.
    pub fn get(&self, name: &str) -> Option<&Option<FileMeta>> {
        let i = self
            .entries
            .binary_search_by(|e| e.0.as_str().cmp(name))
            .ok()?;
        Some(&self.entries[i].1)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[(String, Option<FileMeta>)] {
        &self.entries
    }
}

#[derive(Debug)]
pub struct Node {
    pub ino: u64,
    pub path: String,
    pub kind: Kind,
    pub lookups: u64,
    pub open_handles: u64,
    pub meta: Option<Cached<FileMeta>>,
    /// Bumped when the object is found replaced, so cached blocks of the old one go unused.
    pub generation: u64,
    pub listing: Option<Cached<Arc<Listing>>>,
    /// Bumped whenever this directory changes through the mount: a listing begun before
    /// is not remembered.
    pub listing_generation: u64,
    /// Single-flight: concurrent attribute refreshes share one HEAD.
    pub refresh: Arc<tokio::sync::Mutex<()>>,
    /// Deleted, renamed away or replaced: no longer reachable by path.
    pub detached: bool,
    /// The object this node stood for was replaced behind the mount (another object now has
    /// its key and a new inode): reads of its handles get ESTALE, its attributes stay as
    /// last seen.
    pub replaced: bool,
    /// Length and CRC-64 of the prefix of the object this node stands for, as verified: growth
    /// counts as the same object only if it extends this prefix.
    pub verified: Option<(u64, u64)>,
    /// Mode, owner and mtime from this object's last HEAD, shown while the cached metadata
    /// comes from a listing (which has no user metadata).
    pub seen: Option<PosixMeta>,
    /// Changes to a non-empty Appendable object that OSS cannot store in place: shown by
    /// stat and written when a rename copies the object. Kept in memory only.
    pub pending: PosixMeta,
    /// This mount created the object with `O_EXCL`, as temp files are made (`mkstemp`,
    /// rsync): only such files, meant to be renamed into place, take pending changes.
    pub created_exclusive: bool,
}

#[derive(Debug)]
pub struct Nodes {
    /// Boxed: a table sized for 100,000 nodes has tens of thousands of empty slots, each as
    /// large as its value.
    pub by_ino: HashMap<u64, Box<Node>>,
    pub by_path: HashMap<String, u64>,
    next_ino: u64,
    /// Paths recently found absent, with when.
    pub negative: HashMap<String, Instant>,
    /// How many of them were still fresh when they were last pruned.
    pub negative_kept: usize,
    /// Remembered listings, oldest first: (directory, when listed, entries + 1).
    remembered: VecDeque<(u64, Instant, usize)>,
    /// The sum of the counts in `remembered`.
    remembered_entries: usize,
}

impl Nodes {
    pub fn new(root_path: &str) -> Self {
        let mut n = Nodes {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next_ino: ROOT + 1,
            negative: HashMap::new(),
            negative_kept: 0,
            remembered: VecDeque::new(),
            remembered_entries: 0,
        };
        n.by_ino.insert(
            ROOT,
            Box::new(Node::new(ROOT, root_path.to_string(), Kind::Dir)),
        );
        n.by_path.insert(root_path.to_string(), ROOT);
        n
    }

    /// The node for `path`, created if needed.
    pub fn get_or_insert(&mut self, path: &str, kind: Kind) -> &mut Node {
        let ino = match self.by_path.get(path) {
            Some(&ino) if self.by_ino.get(&ino).is_some_and(|n| n.kind == kind) => ino,
            _ => {
                let ino = self.next_ino;
                self.next_ino += 1;
                self.by_ino
                    .insert(ino, Box::new(Node::new(ino, path.to_string(), kind)));
                if let Some(old) = self.by_path.insert(path.to_string(), ino) {
                    if let Some(n) = self.by_ino.get_mut(&old) {
                        n.detached = true;
                    }
                }
                ino
            }
        };
        self.negative.remove(path);
        // Negative entries are keyed by the name without the `/` (lookup tries the name as a
        // directory and as a file at once). `mkdir` first looks the name up, which records it
        // absent; without this, the new directory stayed "absent" for the next lookup of it
        // (`rename` of it: ENOENT instead of EXDEV, so `mv dir other` failed) for a whole TTL.
        if let Some(name) = path.strip_suffix('/') {
            self.negative.remove(name);
        }
        self.by_ino.get_mut(&ino).expect("inserted above")
    }

    /// Unmaps `path` (deleted); its node stays for open handles until forgotten.
    pub fn detach(&mut self, path: &str) -> Option<u64> {
        let ino = self.by_path.remove(path)?;
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.detached = true;
            n.meta = None;
        }
        Some(ino)
    }

    /// Moves `ino` to `new_path`, detaching whatever was there.
    pub fn rename(&mut self, ino: u64, new_path: &str) {
        let old_path = match self.by_ino.get(&ino) {
            Some(n) => n.path.clone(),
            None => return,
        };
        if self.by_path.get(&old_path) == Some(&ino) {
            self.by_path.remove(&old_path);
        }
        self.detach(new_path);
        self.by_path.insert(new_path.to_string(), ino);
        self.negative.remove(new_path);
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.path = new_path.to_string();
            n.detached = false;
        }
    }

    /// Drops `nlookup` kernel references; removes the node when nothing refers to it.
    pub fn forget(&mut self, ino: u64, nlookup: u64) -> bool {
        if ino == ROOT {
            return false;
        }
        let Some(n) = self.by_ino.get_mut(&ino) else {
            return false;
        };
        n.lookups = n.lookups.saturating_sub(nlookup);
        if n.lookups == 0 && n.open_handles == 0 {
            let path = n.path.clone();
            self.by_ino.remove(&ino);
            if self.by_path.get(&path) == Some(&ino) {
                self.by_path.remove(&path);
            }
            return true;
        }
        false
    }

    /// The object at `ino`'s path was replaced: the old node is detached and kept for its
    /// handles; the path gets a new node (a new inode number, so `tail -F` notices) that
    /// inherits the kernel's lookup count (the kernel resolves the name to the new number at
    /// its next lookup and then forgets the old one). Returns the new inode.
    pub fn replace(&mut self, ino: u64) -> Option<u64> {
        let old = self.by_ino.get_mut(&ino)?;
        if old.replaced || old.detached {
            return None;
        }
        old.replaced = true;
        old.detached = true;
        let (path, kind) = (old.path.clone(), old.kind);
        if self.by_path.get(&path) == Some(&ino) {
            self.by_path.remove(&path);
        }
        Some(self.get_or_insert(&path, kind).ino)
    }

    pub fn invalidate_listing(&mut self, dir_path: &str) {
        if let Some(ino) = self.by_path.get(dir_path) {
            if let Some(n) = self.by_ino.get_mut(ino) {
                n.listing = None;
                n.listing_generation += 1;
            }
        }
    }

    /// Keeps `listing` of directory `ino`, begun when the directory's listing generation was
    /// `generation` (not if it changed since, or a newer listing is kept). Listings are
    /// dropped once `keep_for` old, and the oldest first while all of them together hold
    /// more than `max_entries` entries.
    pub fn remember(
        &mut self,
        ino: u64,
        listing: Cached<Arc<Listing>>,
        generation: u64,
        keep_for: Duration,
        max_entries: usize,
    ) {
        let Some(n) = self.by_ino.get_mut(&ino) else {
            return;
        };
        if n.kind != Kind::Dir
            || n.listing_generation != generation
            || n.listing.as_ref().is_some_and(|l| l.at >= listing.at)
        {
            return;
        }
        let count = listing.value.len() + 1;
        self.remembered.push_back((ino, listing.at, count));
        self.remembered_entries += count;
        n.listing = Some(listing);
        while let Some(&(old, at, count)) = self.remembered.front() {
            if self.remembered_entries <= max_entries && at.elapsed() < keep_for {
                break;
            }
            self.remembered.pop_front();
            self.remembered_entries -= count;
            if let Some(n) = self.by_ino.get_mut(&old) {
                if n.listing.as_ref().is_some_and(|l| l.at == at) {
                    n.listing = None;
                }
            }
        }
    }
}

impl Node {
    fn new(ino: u64, path: String, kind: Kind) -> Self {
        Node {
            ino,
            path,
            kind,
            lookups: 0,
            open_handles: 0,
            meta: None,
            generation: 0,
            listing: None,
            listing_generation: 0,
            refresh: Arc::new(tokio::sync::Mutex::new(())),
            detached: false,
            replaced: false,
            verified: None,
            seen: None,
            pending: PosixMeta::default(),
            created_exclusive: false,
        }
    }
}

/// The parent directory path of a file or directory path (`a/b/c` → `a/b/`, `a/b/` → `a/`).
pub fn parent_path(path: &str) -> &str {
    let trimmed = path.strip_suffix('/').unwrap_or(path);
    match trimmed.rfind('/') {
        Some(i) => &path[..=i],
        None => "",
    }
}

/// Whether a listing entry can be shown as a file name: not empty, not `.`/`..`, at most 255
/// bytes, no `/` (a key segment never has one; a double `//` gives an empty one).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parent_path("a/b/c"), "a/b/");
        assert_eq!(parent_path("a/b/"), "a/");
        assert_eq!(parent_path("a"), "");
        assert!(valid_name("x.log"));
        for bad in ["", ".", "..", "a/b", &"n".repeat(256)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn posix_meta_formats() {
        let mut m = BTreeMap::new();
        m.insert("mode".to_string(), "33188".to_string());
        m.insert("uid".to_string(), "33".to_string());
        m.insert("gid".to_string(), "4".to_string());
        m.insert("mtime".to_string(), "1700000000".to_string());
        let p = PosixMeta::from_user_meta(&m);
        assert_eq!(p.mode, Some(0o644));
        assert_eq!((p.uid, p.gid), (Some(33), Some(4)));
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(p.mtime, Some(t));
        let mut out = BTreeMap::new();
        p.write_to(&mut out);
        assert_eq!(out, m, "written back exactly as ossfs writes it");
        // Nanoseconds: ossfs 1.91 and rclone write a fraction; octal modes parse as strtoll.
        let t2 = t + Duration::from_nanos(5);
        let mut out = BTreeMap::new();
        PosixMeta {
            mtime: Some(t2),
            ..Default::default()
        }
        .write_to(&mut out);
        assert_eq!(out["mtime"], "1700000000.000000005");
        assert_eq!(
            parse_mtime("1700000000.5"),
            Some(t + Duration::from_millis(500))
        );
        assert_eq!(parse_c_integer("0640"), Some(0o640));
        assert_eq!(parse_c_integer("0x1a4"), Some(0o644));
        m.insert("mode".to_string(), "rw-r--r--".to_string());
        m.insert("mtime".to_string(), "soon".to_string());
        let p = PosixMeta::from_user_meta(&m);
        assert_eq!(
            (p.mode, p.mtime),
            (None, None),
            "unreadable values fall back"
        );
    }

    #[test]
    fn inode_table() {
        let mut n = Nodes::new("pre/");
        let a = n.get_or_insert("pre/a", Kind::File).ino;
        assert_eq!(n.get_or_insert("pre/a", Kind::File).ino, a);
        n.by_ino.get_mut(&a).unwrap().lookups = 2;
        n.rename(a, "pre/b");
        assert_eq!(n.by_path.get("pre/b"), Some(&a));
        assert!(!n.by_path.contains_key("pre/a"));
        assert!(!n.forget(a, 1));
        assert!(n.forget(a, 1));
        assert!(!n.by_path.contains_key("pre/b"));
        let d = n.get_or_insert("pre/d/", Kind::Dir).ino;
        assert_ne!(d, a, "inode numbers are never reused");
        assert!(!n.forget(ROOT, 1));
    }
}
