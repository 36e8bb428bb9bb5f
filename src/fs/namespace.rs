//! The namespace: the inode ↔ key table, each file's cached HEAD result and each directory's
//! cached listing. Inode numbers are never reused; a node lives while the kernel holds lookups
//! on it or handles are open. A regular file's path is its object key; a directory's path is its
//! key prefix, ending in `/` (the mount root's is the mount prefix, possibly empty).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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

#[derive(Debug, Clone)]
pub struct Cached<T> {
    pub value: T,
    pub at: Instant,
}

/// One directory level as ListObjectsV2 with delimiter `/` shows it.
#[derive(Debug, Default)]
pub struct Listing {
    pub files: BTreeMap<String, FileMeta>,
    pub dirs: HashSet<String>,
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
}

#[derive(Debug)]
pub struct Nodes {
    pub by_ino: HashMap<u64, Node>,
    pub by_path: HashMap<String, u64>,
    next_ino: u64,
    /// Paths recently found absent, with when.
    pub negative: HashMap<String, Instant>,
}

impl Nodes {
    pub fn new(root_path: &str) -> Self {
        let mut n = Nodes {
            by_ino: HashMap::new(),
            by_path: HashMap::new(),
            next_ino: ROOT + 1,
            negative: HashMap::new(),
        };
        n.by_ino
            .insert(ROOT, Node::new(ROOT, root_path.to_string(), Kind::Dir));
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
                    .insert(ino, Node::new(ino, path.to_string(), kind));
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
            refresh: Arc::new(tokio::sync::Mutex::new(())),
            detached: false,
            replaced: false,
            verified: None,
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
