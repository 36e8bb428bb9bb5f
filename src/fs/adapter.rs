//! The FUSE adapter: a thin `fuser::Filesystem` that hands each request to a tokio task calling
//! [`Core`], and turns the result (or its errno) into the reply. Nothing here blocks a fuser
//! thread on the network, so a slow GET never holds up `ls` or `stat`.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};
use tracing::Instrument;

use super::core::{Attr, Core, OpenMode};
use super::error::FsError;
use super::namespace::Kind;
use super::reader::BLOCK;

pub struct Adapter {
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    /// Kernel cache time for directory attributes and for names (file attributes: zero, so
    /// every fstat reaches us and `tail -f` sees growth).
    ttl: Duration,
}

fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

fn to_attr(a: &Attr) -> FileAttr {
    let (kind, nlink, blksize) = match a.kind {
        Kind::Dir => (FileType::Directory, 2, 4096),
        // 1 MiB: `cat` and friends then read in 1 MiB requests.
        Kind::File => (FileType::RegularFile, 1, BLOCK as u32),
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm: a.mode,
        nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize,
        flags: 0,
    }
}

fn name_str(name: &OsStr) -> Result<&str, Errno> {
    // OSS keys are UTF-8.
    name.to_str().ok_or(Errno::EINVAL)
}

impl Adapter {
    pub fn new(core: Arc<Core>, rt: tokio::runtime::Handle, ttl: Duration) -> Self {
        Adapter { core, rt, ttl }
    }

    /// Runs `f` on the runtime inside a span named after the operation.
    fn spawn<F>(&self, op: &'static str, ino: u64, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let span = tracing::debug_span!("fuse", op, ino);
        self.rt.spawn(f.instrument(span));
    }
}

fn open_mode(flags: i32) -> OpenMode {
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => OpenMode {
            write: true,
            read: false,
        },
        libc::O_RDWR => OpenMode {
            write: true,
            read: true,
        },
        _ => OpenMode {
            write: false,
            read: true,
        },
    }
}

fn fopen_flags(mode: OpenMode) -> FopenFlags {
    // Writers bypass the page cache: appends go straight to the stream, and without it the
    // kernel would never send a write without O_APPEND semantics we can honour.
    if mode.write {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> std::io::Result<()> {
        // Deliberately no FUSE_WRITEBACK_CACHE (the kernel would rewrite pages without
        // O_APPEND) and no FUSE_EXPLICIT_INVAL_DATA (readers would see NULs where new data is).
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("lookup", parent.0, async move {
            let res = core.lookup(parent.0, &name).await;
            reply_entry(reply, res, ttl);
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("getattr", ino.0, async move {
            reply_attr(reply, core.getattr(ino.0).await, ttl);
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        // Only mtime is stored (atime is shown as mtime); the kernel's mode carries the
        // file-type bits, the core wants the permissions.
        let posix = super::namespace::PosixMeta {
            mode: mode.map(|m| (m & 0o7777) as u16),
            uid,
            gid,
            mtime: mtime.map(|t| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            }),
        };
        self.spawn("setattr", ino.0, async move {
            reply_attr(reply, core.setattr(ino.0, size, posix).await, ttl);
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("mkdir", parent.0, async move {
            let res = core.mkdir(parent.0, &name).await;
            reply_entry(reply, res, ttl);
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        self.spawn("unlink", parent.0, async move {
            reply_empty(reply, core.unlink(parent.0, &name).await);
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        self.spawn("rmdir", parent.0, async move {
            reply_empty(reply, core.rmdir(parent.0, &name).await);
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_str(name), name_str(newname)) {
            (Ok(a), Ok(b)) => (a.to_string(), b.to_string()),
            _ => return reply.error(Errno::EINVAL),
        };
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let core = self.core.clone();
        self.spawn("rename", parent.0, async move {
            let res = core
                .rename(parent.0, &name, newparent.0, &newname, no_replace)
                .await;
            reply_empty(reply, res);
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = open_mode(flags.0);
        let core = self.core.clone();
        self.spawn("open", ino.0, async move {
            match core.open(ino.0, mode).await {
                Ok(fh) => reply.opened(FileHandle(fh), fopen_flags(mode)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        self.spawn("read", ino.0, async move {
            match core.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's offset for O_APPEND comes from its cached size, stale when another host
        // appended: the stream appends at the real end instead.
        let append = flags.0 & libc::O_APPEND != 0;
        // The one copy of the written bytes: the stream keeps this buffer until it is sent.
        let data = bytes::Bytes::copy_from_slice(data);
        let core = self.core.clone();
        self.spawn("write", ino.0, async move {
            match core.write(fh.0, offset, data, append).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.spawn("flush", ino.0, async move {
            reply_empty(reply, core.flush(fh.0).await);
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.spawn("release", ino.0, async move {
            reply_empty(reply, core.release(fh.0).await);
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let core = self.core.clone();
        self.spawn("fsync", ino.0, async move {
            reply_empty(reply, core.flush(fh.0).await);
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let core = self.core.clone();
        self.spawn("readdir", ino.0, async move {
            let mut reply = reply;
            match core.readdir(fh.0, offset).await {
                Ok(entries) => {
                    for (i, e) in entries.iter().enumerate().skip(offset as usize) {
                        let kind = match e.kind {
                            Kind::Dir => FileType::Directory,
                            Kind::File => FileType::RegularFile,
                        };
                        if reply.add(INodeNo(e.ino), (i + 1) as u64, kind, &e.name) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (blocks, files) = self.core.statfs();
        reply.statfs(blocks, blocks, blocks, files, files, 4096, 255, 4096);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // ENOTSUP, not EPERM: `cp -a` and `mv` then skip copying attributes quietly.
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name
            .to_str()
            .filter(|n| n.starts_with("user.oss."))
            .map(str::to_string)
        else {
            // security.capability is asked before every write: answer at once, no task.
            return reply.error(Errno::from_i32(libc::ENODATA));
        };
        let core = self.core.clone();
        self.spawn("getxattr", ino.0, async move {
            match core.xattrs(ino.0).await {
                Ok(list) => match list.into_iter().find(|(n, _)| *n == name) {
                    Some((_, v)) => reply_xattr(reply, size, &v),
                    None => reply.error(Errno::from_i32(libc::ENODATA)),
                },
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let core = self.core.clone();
        self.spawn("listxattr", ino.0, async move {
            match core.xattrs(ino.0).await {
                Ok(list) => {
                    let mut buf = Vec::new();
                    for (n, _) in list {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    reply_xattr(reply, size, &buf)
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::from_i32(libc::ENOTSUP));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n.to_string(),
            Err(e) => return reply.error(e),
        };
        let mode = open_mode(flags);
        let exclusive = flags & libc::O_EXCL != 0;
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("create", parent.0, async move {
            match core.create(parent.0, &name, exclusive, mode).await {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &to_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    fopen_flags(mode),
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

/// Directories' attributes may be cached by the kernel for `dir_ttl`; files' never (TTL 0), so
/// every fstat reaches us and `tail -f` sees growth.
fn attr_ttl(a: &Attr, dir_ttl: Duration) -> Duration {
    match a.kind {
        Kind::Dir => dir_ttl,
        Kind::File => Duration::ZERO,
    }
}

fn reply_attr(reply: ReplyAttr, res: Result<Attr, FsError>, dir_ttl: Duration) {
    match res {
        Ok(a) => reply.attr(&attr_ttl(&a, dir_ttl), &to_attr(&a)),
        Err(e) => reply.error(errno(&e)),
    }
}

/// Names (entries) are cached for `ttl`, attributes per [`attr_ttl`].
fn reply_entry(reply: ReplyEntry, res: Result<Attr, FsError>, ttl: Duration) {
    match res {
        Ok(a) => reply.entry_with_ttls(&attr_ttl(&a, ttl), &ttl, &to_attr(&a), Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, res: Result<(), FsError>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}
