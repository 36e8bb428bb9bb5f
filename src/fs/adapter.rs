//! The FUSE adapter: a thin `fuser::Filesystem` that hands each request to a tokio task calling
//! [`Core`], and turns the result (or its errno) into the reply. Nothing here blocks a fuser
//! thread on the network, so a slow GET never holds up `ls` or `stat`.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
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
    /// Read-only handles bypass the page cache too (the kernel allows mmap of such files).
    read_direct: bool,
    /// `user.oss.*` attributes answered (else getxattr and listxattr answer ENOSYS, after
    /// which the kernel stops asking: `ls -l` then costs no round trip per file).
    xattrs: bool,
}

/// Where a request failed: the operation, its inode (the parent for name operations) and the
/// name when the request carries one. Every error reply goes through [`Site::fail`] or
/// [`Site::refuse`], so each failure is logged exactly once, here.
#[derive(Clone)]
struct Site {
    op: &'static str,
    ino: u64,
    name: Option<String>,
}

impl Site {
    fn new(op: &'static str, ino: u64) -> Self {
        Site {
            op,
            ino,
            name: None,
        }
    }

    fn named(op: &'static str, ino: u64, name: &str) -> Self {
        Site {
            op,
            ino,
            name: Some(name.to_string()),
        }
    }

    /// Logs a failure of the core once and returns its errno for the reply.
    fn fail(&self, e: &FsError) -> Errno {
        self.log(e.errno(), e)
    }

    /// Logs a refusal decided here in the adapter and returns its errno.
    fn refuse(&self, errno: Errno, why: &str) -> Errno {
        self.log(errno.code(), &why)
    }

    fn log(&self, code: i32, error: &dyn std::fmt::Display) -> Errno {
        let (op, ino, name) = (self.op, self.ino, self.name.as_deref());
        // The errno's own words ("Permission denied") are what the user sees; log them too.
        let errno_text = std::io::Error::from_raw_os_error(code);
        let severity = severity(code);
        crate::metrics::global().fs_error(op, code, severity.label());
        match severity {
            Severity::Expected => {
                tracing::debug!(op, ino, name, errno = code, %errno_text, %error, "refused")
            }
            Severity::Refusal => {
                tracing::info!(op, ino, name, errno = code, %errno_text, %error, "refused")
            }
            Severity::Failure => {
                tracing::warn!(op, ino, name, errno = code, %errno_text, %error, "failed")
            }
        }
        Errno::from_i32(code)
    }
}

/// How loudly a failed operation is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// Part of normal traffic (a missing name probed on PATH, an xattr that is not there, the
    /// size probe of getxattr, `cp -a` trying setxattr): debug, or the log fills with them.
    Expected,
    /// A refusal by design (permissions, the object model, the caller's argument): info.
    Refusal,
    /// The server or the network failed, or something unexpected: warn.
    Failure,
}

impl Severity {
    /// The `class` label of the error metric.
    fn label(self) -> &'static str {
        match self {
            Severity::Expected => "expected",
            Severity::Refusal => "refusal",
            Severity::Failure => "failure",
        }
    }
}

fn severity(errno: i32) -> Severity {
    match errno {
        libc::ENOENT | libc::ENODATA | libc::ERANGE | libc::ENOTSUP => Severity::Expected,
        libc::EPERM
        | libc::EACCES
        | libc::EROFS
        | libc::EEXIST
        | libc::ENOTEMPTY
        | libc::EISDIR
        | libc::ENOTDIR
        | libc::EXDEV
        | libc::EFBIG
        | libc::ENAMETOOLONG
        | libc::EINVAL => Severity::Refusal,
        _ => Severity::Failure,
    }
}

/// Whether a caller `uid`/`gid` may do `mask` to a file with these attributes: the owner's,
/// the group's or the others' bits, the first class that matches; root may read and write
/// anything and execute what has any x bit (directories: always searchable). Only the
/// caller's primary group is known here (FUSE does not pass supplementary groups); the kernel
/// check under `default_permissions` sees them all and is the one that normally decides.
fn access_allowed(a: &Attr, uid: u32, gid: u32, mask: AccessFlags) -> bool {
    let mode = u32::from(a.mode);
    if uid == 0 {
        return !mask.contains(AccessFlags::X_OK) || a.kind == Kind::Dir || mode & 0o111 != 0;
    }
    let bits = if uid == a.uid {
        mode >> 6
    } else if gid == a.gid {
        mode >> 3
    } else {
        mode
    } & 0o7;
    let want = [
        (AccessFlags::R_OK, 0o4),
        (AccessFlags::W_OK, 0o2),
        (AccessFlags::X_OK, 0o1),
    ];
    want.iter()
        .all(|(flag, bit)| !mask.contains(*flag) || bits & bit != 0)
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

/// The name as a `String`, or EINVAL (logged) when it is not UTF-8, as OSS keys must be.
fn name_str(op: &'static str, parent: u64, name: &OsStr) -> Result<String, Errno> {
    match name.to_str() {
        Some(n) => Ok(n.to_string()),
        None => Err(Site::new(op, parent).refuse(
            Errno::EINVAL,
            &format!("name {name:?} is not UTF-8; OSS keys are UTF-8"),
        )),
    }
}

impl Adapter {
    pub fn new(core: Arc<Core>, rt: tokio::runtime::Handle, ttl: Duration, xattrs: bool) -> Self {
        Adapter {
            core,
            rt,
            ttl,
            read_direct: false,
            xattrs,
        }
    }

    /// Runs `f` inside a span named after the operation: first on this FUSE thread, and on the
    /// runtime only if it has to wait. Most answers are ready at once (attributes within their
    /// TTL, a write into the stream's buffer, a flush with nothing pending, a cached block), and
    /// answering them here saves the two thread wake-ups of a hand-over, which is most of the
    /// cost of an `echo >>` or an `ls -l` entry. A future left pending re-registers its waker
    /// when the runtime polls it again, as every future must.
    fn spawn<F>(&self, op: &'static str, ino: u64, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let span = tracing::debug_span!("fuse", op, ino);
        let mut fut = Box::pin(f.instrument(span));
        let _runtime = self.rt.enter();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if std::future::Future::poll(fut.as_mut(), &mut cx).is_pending() {
            self.rt.spawn(fut);
        }
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

fn fopen_flags(mode: OpenMode, read_direct: bool) -> FopenFlags {
    // Writers bypass the page cache: appends go straight to the stream, and without it the
    // kernel would never send a write without O_APPEND semantics we can honour. Readers do
    // when `read_direct` (see `init`).
    if mode.write || read_direct {
        FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::empty()
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Deliberately no FUSE_WRITEBACK_CACHE (the kernel would rewrite pages without
        // O_APPEND) and no FUSE_EXPLICIT_INVAL_DATA (readers would see NULs where new data is).
        // READDIRPLUS: a listing hands the kernel every entry with its attributes, so `ls -l`
        // costs no lookup per entry, and the kernel holds a reference on each entry (freed by
        // `forget`), which bounds the mount's inode table by what the kernel keeps.
        // Readers bypass the page cache too where the kernel still allows mmap of such files
        // (Linux 6.6 and later): a large read is then one copy from our block into the
        // reader's buffer instead of two through the page cache, and the block cache (which
        // serves re-reads) is the one cache. Older kernels keep the page cache for readers.
        if config
            .add_capabilities(fuser::InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok()
        {
            self.read_direct = true;
        } else {
            tracing::debug!("the kernel cannot mmap direct-I/O files; readers use the page cache");
        }
        if config
            .add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS)
            .is_err()
        {
            tracing::debug!("the kernel offers no READDIRPLUS; plain readdir it is");
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str("lookup", parent.0, name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("lookup", parent.0, async move {
            let res = core.lookup(parent.0, &name).await;
            reply_entry(reply, res, ttl, &Site::named("lookup", parent.0, &name));
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("getattr", ino.0, async move {
            let res = core.getattr(ino.0).await;
            reply_attr(reply, res, ttl, &Site::new("getattr", ino.0));
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
            let res = core.setattr(ino.0, size, posix).await;
            reply_attr(reply, res, ttl, &Site::new("setattr", ino.0));
        });
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let site = Site::named("mknod", parent.0, &name.to_string_lossy());
        reply.error(site.refuse(Errno::EPERM, "special files cannot be stored on OSS"));
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
        let name = match name_str("mkdir", parent.0, name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("mkdir", parent.0, async move {
            let res = core.mkdir(parent.0, &name).await;
            reply_entry(reply, res, ttl, &Site::named("mkdir", parent.0, &name));
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str("unlink", parent.0, name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        self.spawn("unlink", parent.0, async move {
            let res = core.unlink(parent.0, &name).await;
            reply_empty(reply, res, &Site::named("unlink", parent.0, &name));
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_str("rmdir", parent.0, name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let core = self.core.clone();
        self.spawn("rmdir", parent.0, async move {
            let res = core.rmdir(parent.0, &name).await;
            reply_empty(reply, res, &Site::named("rmdir", parent.0, &name));
        });
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let site = Site::named("symlink", parent.0, &link_name.to_string_lossy());
        reply.error(site.refuse(Errno::EPERM, "symbolic links are not supported"));
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
        let name = match name_str("rename", parent.0, name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let newname = match name_str("rename", newparent.0, newname) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let site = Site::named("rename", parent.0, &format!("{name} -> {newname}"));
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(site.refuse(
                Errno::EINVAL,
                "RENAME_EXCHANGE and RENAME_WHITEOUT are not supported",
            ));
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        let core = self.core.clone();
        self.spawn("rename", parent.0, async move {
            let res = core
                .rename(parent.0, &name, newparent.0, &newname, no_replace)
                .await;
            reply_empty(reply, res, &site);
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let site = Site::named("link", ino.0, &newname.to_string_lossy());
        reply.error(site.refuse(Errno::EPERM, "hard links are not supported"));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mode = open_mode(flags.0);
        let core = self.core.clone();
        let direct = self.read_direct;
        self.spawn("open", ino.0, async move {
            match core.open(ino.0, mode).await {
                Ok(fh) => reply.opened(FileHandle(fh), fopen_flags(mode, direct)),
                Err(e) => reply.error(Site::new("open", ino.0).fail(&e)),
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
                Err(e) => reply.error(Site::new("read", ino.0).fail(&e)),
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
                Err(e) => reply.error(Site::new("write", ino.0).fail(&e)),
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
            let res = core.flush(fh.0).await;
            reply_empty(reply, res, &Site::new("flush", ino.0));
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
            let res = core.release(fh.0).await;
            reply_empty(reply, res, &Site::new("release", ino.0));
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
            let res = core.flush(fh.0).await;
            reply_empty(reply, res, &Site::new("fsync", ino.0));
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(Site::new("opendir", ino.0).fail(&e)),
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
                Ok(batch) => {
                    let skip = offset.saturating_sub(batch.start) as usize;
                    for (i, e) in batch.iter().enumerate().skip(skip) {
                        let ino = core.entry_ino(e);
                        let next = batch.start + i as u64 + 1;
                        if reply.add(INodeNo(ino), next, file_type(e.kind), &e.name) {
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(Site::new("readdir", ino.0).fail(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let core = self.core.clone();
        let ttl = self.ttl;
        self.spawn("readdirplus", ino.0, async move {
            let mut reply = reply;
            match core.readdir(fh.0, offset).await {
                Ok(batch) => {
                    let skip = offset.saturating_sub(batch.start) as usize;
                    for (i, e) in batch.iter().enumerate().skip(skip) {
                        let a = core.entry_ref(e);
                        // One TTL for name and attributes here: the listing's attributes are
                        // as fresh as a HEAD for the metadata TTL from when it was asked for.
                        let ttl = ttl.saturating_sub(e.at.elapsed());
                        if reply.add(
                            INodeNo(a.ino),
                            batch.start + i as u64 + 1,
                            &e.name,
                            &ttl,
                            &to_attr(&a),
                            Generation(0),
                        ) {
                            // Not handed over: the kernel took no reference.
                            if e.name != "." && e.name != ".." {
                                core.forget(a.ino, 1);
                            }
                            break;
                        }
                    }
                    reply.ok()
                }
                Err(e) => reply.error(Site::new("readdirplus", ino.0).fail(&e)),
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
        ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        // ENOTSUP, not EPERM: `cp -a` and `mv` then skip copying attributes quietly.
        let site = Site::named("setxattr", ino.0, &name.to_string_lossy());
        reply.error(site.refuse(Errno::ENOTSUP, "extended attributes are read-only"));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            // `--no-xattrs`: the kernel remembers ENOSYS and asks no more (by design: no log).
            return reply.error(Errno::ENOSYS);
        }
        let Some(name) = name
            .to_str()
            .filter(|n| n.starts_with("user.oss."))
            .map(str::to_string)
        else {
            // security.capability is asked before every write: answer at once, no task.
            let site = Site::named("getxattr", ino.0, &name.to_string_lossy());
            return reply.error(site.refuse(Errno::ENODATA, "no such attribute"));
        };
        let core = self.core.clone();
        self.spawn("getxattr", ino.0, async move {
            let site = Site::named("getxattr", ino.0, &name);
            match core.xattrs(ino.0).await {
                Ok(list) => match list.into_iter().find(|(n, _)| *n == name) {
                    Some((_, v)) => reply_xattr(reply, size, &v, &site),
                    None => reply.error(site.refuse(Errno::ENODATA, "no such attribute")),
                },
                Err(e) => reply.error(site.fail(&e)),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if !self.xattrs {
            return reply.error(Errno::ENOSYS);
        }
        let core = self.core.clone();
        self.spawn("listxattr", ino.0, async move {
            let site = Site::new("listxattr", ino.0);
            match core.xattrs(ino.0).await {
                Ok(list) => {
                    let mut buf = Vec::new();
                    for (n, _) in list {
                        buf.extend_from_slice(n.as_bytes());
                        buf.push(0);
                    }
                    reply_xattr(reply, size, &buf, &site)
                }
                Err(e) => reply.error(site.fail(&e)),
            }
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let site = Site::named("removexattr", ino.0, &name.to_string_lossy());
        reply.error(site.refuse(Errno::ENOTSUP, "extended attributes are read-only"));
    }

    /// Answers from the same attributes `stat` shows. The mount always uses
    /// `default_permissions`, so the kernel checks modes itself and seldom asks; this answer
    /// must agree with it for the cases it does.
    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let (uid, gid) = (req.uid(), req.gid());
        let core = self.core.clone();
        self.spawn("access", ino.0, async move {
            let site = Site::new("access", ino.0);
            match core.getattr(ino.0).await {
                Ok(a) if access_allowed(&a, uid, gid, mask) => reply.ok(),
                Ok(a) => reply.error(site.refuse(
                    Errno::EACCES,
                    &format!(
                        "uid {uid} gid {gid} asked for access {mask:?} to mode {:o} owned by {}:{}",
                        a.mode, a.uid, a.gid
                    ),
                )),
                Err(e) => reply.error(site.fail(&e)),
            }
        });
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
        let name = match name_str("create", parent.0, name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        let mode = open_mode(flags);
        let exclusive = flags & libc::O_EXCL != 0;
        let core = self.core.clone();
        let ttl = self.ttl;
        let direct = self.read_direct;
        self.spawn("create", parent.0, async move {
            match core.create(parent.0, &name, exclusive, mode).await {
                Ok((a, fh)) => reply.created(
                    &ttl,
                    &to_attr(&a),
                    Generation(0),
                    FileHandle(fh),
                    fopen_flags(mode, direct),
                ),
                Err(e) => reply.error(Site::named("create", parent.0, &name).fail(&e)),
            }
        });
    }

    /// Every `isatty()` of a writer asks TCGETS: ENOTTY at once and without a log line (fuser's
    /// default logs a warning for each).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8], site: &Site) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(site.refuse(Errno::ERANGE, "attribute buffer too small"));
    } else {
        reply.data(value);
    }
}

fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
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

fn reply_attr(reply: ReplyAttr, res: Result<Attr, FsError>, dir_ttl: Duration, site: &Site) {
    match res {
        Ok(a) => reply.attr(&attr_ttl(&a, dir_ttl), &to_attr(&a)),
        Err(e) => reply.error(site.fail(&e)),
    }
}

/// Names (entries) are cached for `ttl`, attributes per [`attr_ttl`].
fn reply_entry(reply: ReplyEntry, res: Result<Attr, FsError>, ttl: Duration, site: &Site) {
    match res {
        Ok(a) => reply.entry_with_ttls(&attr_ttl(&a, ttl), &ttl, &to_attr(&a), Generation(0)),
        Err(e) => reply.error(site.fail(&e)),
    }
}

fn reply_empty(reply: ReplyEmpty, res: Result<(), FsError>, site: &Site) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(site.fail(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: Kind, mode: u16, uid: u32, gid: u32) -> Attr {
        Attr {
            ino: 2,
            kind,
            size: 0,
            mtime: SystemTime::UNIX_EPOCH,
            mode,
            uid,
            gid,
        }
    }

    #[test]
    fn access_follows_owner_group_other_bits() {
        let r = AccessFlags::R_OK;
        let w = AccessFlags::W_OK;
        let x = AccessFlags::X_OK;
        let rw = r | w;
        let f = attr(Kind::File, 0o640, 1000, 100);
        assert!(access_allowed(&f, 1000, 5, rw), "owner reads and writes");
        assert!(!access_allowed(&f, 1000, 5, x), "no x bit for the owner");
        assert!(access_allowed(&f, 7, 100, r), "group reads");
        assert!(!access_allowed(&f, 7, 100, w), "group cannot write");
        assert!(!access_allowed(&f, 7, 8, r), "others cannot read");
        assert!(
            access_allowed(&f, 7, 8, AccessFlags::F_OK),
            "existence is free"
        );
        // The owner's class decides even when the group's bits would allow more.
        let g = attr(Kind::File, 0o070, 1000, 100);
        assert!(!access_allowed(&g, 1000, 100, r));
        // Root reads and writes anything, executes only with some x bit; directories are
        // always searchable for root.
        let none = attr(Kind::File, 0o000, 1000, 100);
        assert!(access_allowed(&none, 0, 0, rw));
        assert!(!access_allowed(&none, 0, 0, x));
        assert!(access_allowed(&attr(Kind::File, 0o001, 1000, 100), 0, 0, x));
        assert!(access_allowed(&attr(Kind::Dir, 0o700, 1000, 100), 0, 0, x));
        let d = attr(Kind::Dir, 0o755, 0, 0);
        assert!(access_allowed(&d, 65534, 65534, r | x));
        assert!(!access_allowed(&d, 65534, 65534, w));
    }

    #[test]
    fn severity_fits_the_cause() {
        for e in [libc::ENOENT, libc::ENODATA, libc::ERANGE, libc::ENOTSUP] {
            assert_eq!(severity(e), Severity::Expected, "errno {e}");
        }
        for e in [
            libc::EPERM,
            libc::EACCES,
            libc::EROFS,
            libc::EEXIST,
            libc::ENOTEMPTY,
            libc::EISDIR,
            libc::ENOTDIR,
            libc::EXDEV,
            libc::EFBIG,
        ] {
            assert_eq!(severity(e), Severity::Refusal, "errno {e}");
        }
        for e in [
            libc::EIO,
            libc::ESTALE,
            libc::EBADF,
            libc::ETIMEDOUT,
            libc::ENOSPC,
        ] {
            assert_eq!(severity(e), Severity::Failure, "errno {e}");
        }
    }
}
