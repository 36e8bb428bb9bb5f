//! A mount from start to end: credentials and client, the checks that make a wrong key, a
//! missing bucket or an unusable mount point fail before anything is mounted, the FUSE
//! session, kernel readahead and invalidation, and the orderly end (SIGTERM, SIGINT or
//! `umount`: drain every stream under the shutdown grace, rescue what could not be sent,
//! unmount). The embedded server, when asked for, is started by the command line, which hands
//! its endpoint and keys in: the filesystem never imports the server.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::adapter::Adapter;
use super::append::StreamConfig;
use super::core::{Core, FsConfig};
use crate::client::{Client, ClientConfig, CreateOptions, CredentialOptions, CredentialsProvider};

/// Everything `appendfs mount` takes (the command-line contract).
#[derive(Clone)]
pub struct MountOptions {
    pub bucket: String,
    pub prefix: String,
    pub mountpoint: PathBuf,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub path_style: bool,
    pub read_only: bool,
    pub flush_interval: Duration,
    pub append_chunk: u64,
    pub metadata_ttl: Duration,
    pub cache_size: u64,
    pub max_dirty: u64,
    /// `--max-memory`: one bound for buffered writes, prefetch and the block cache.
    pub max_memory: Option<u64>,
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub allow_other: bool,
    /// Answer `user.oss.*` extended attributes (`--no-xattrs` turns them off).
    pub xattrs: bool,
    /// Keys to use instead of looking them up (the embedded server's).
    pub provider: Option<Arc<dyn CredentialsProvider>>,
    /// Creation settings for new objects (ACL, storage class, encryption).
    pub create: CreateOptions,
    /// Drain deadline at umount, SIGTERM and SIGINT.
    pub shutdown_grace: Duration,
    /// How long one chunk of appends is retried (outages included) before it is rescued.
    pub retry_budget: Duration,
    /// Where bytes that cannot be appended are saved.
    pub rescue_dir: PathBuf,
    /// Where the keys come from (`--passwd-file`, `--credential-process`, `--ram-role`, the
    /// default files); not used with `--embedded`.
    pub credentials: CredentialOptions,
}

/// Parses `oss://BUCKET[/PREFIX]`.
pub fn parse_bucket_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("oss://")
        .with_context(|| format!("{url:?} is not an oss://BUCKET[/PREFIX] URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if !crate::oss::valid_bucket_name(bucket) {
        bail!("invalid bucket name {bucket:?} (3-63 characters of a-z, 0-9 and -, not starting or ending with -)");
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// The default data directory of `--embedded`: `$XDG_DATA_HOME/appendfs/embedded`, else
/// `~/.local/share/appendfs/embedded`.
pub fn default_embedded_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("appendfs/embedded");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    home.join(".local/share/appendfs/embedded")
}

/// A live mount and what it needs to end cleanly.
pub struct Mounted {
    pub core: Arc<Core>,
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    grace: Duration,
}

/// Checks the bucket, mounts, and returns once the mount is live. Must run inside a tokio
/// runtime (the filesystem's tasks run on it).
pub async fn mount(opts: &MountOptions) -> anyhow::Result<Mounted> {
    check_mountpoint(&opts.mountpoint)?;
    let endpoint = opts
        .endpoint
        .clone()
        .context("no endpoint: pass --endpoint URL, set OSS_ENDPOINT, or use --embedded")?;
    let provider: Arc<dyn CredentialsProvider> = match &opts.provider {
        Some(p) => p.clone(),
        None => crate::client::chain_for(&opts.credentials),
    };
    let mut ccfg = ClientConfig::new(&endpoint, &opts.bucket).context("client configuration")?;
    ccfg.region = opts.region.clone();
    ccfg.path_style = opts.path_style;
    let client = Client::new(ccfg, Some(provider)).context("client configuration")?;
    client.check_bucket(&opts.prefix).await.map_err(|e| {
        let prefix = opts.prefix.trim_end_matches('/');
        let sep = if prefix.is_empty() { "" } else { "/" };
        anyhow::anyhow!("cannot mount oss://{}{sep}{prefix}: {e}", opts.bucket)
    })?;

    let fs_cfg = FsConfig {
        prefix: opts.prefix.clone(),
        uid: opts.uid,
        gid: opts.gid,
        file_mode: opts.file_mode,
        dir_mode: opts.dir_mode,
        metadata_ttl: opts.metadata_ttl,
        cache_size: opts.cache_size,
        max_dirty: opts.max_dirty,
        max_memory: opts.max_memory,
        read_only: opts.read_only,
        stream: StreamConfig {
            chunk_size: opts.append_chunk,
            flush_interval: opts.flush_interval,
            create: opts.create.clone(),
            give_up_after: opts.retry_budget,
        },
        rescue_dir: opts.rescue_dir.clone(),
    };
    let core = Core::new(Arc::new(client), fs_cfg);
    let adapter = Adapter::new(
        core.clone(),
        tokio::runtime::Handle::current(),
        opts.metadata_ttl,
        opts.xattrs,
    );
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("appendfs:{}", opts.bucket)),
        fuser::MountOption::Subtype("appendfs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        // The kernel checks mode and owner against the attributes we report, so
        // `--allow-other` never lets another user past a 0600 file or into a 0700 directory.
        fuser::MountOption::DefaultPermissions,
        if opts.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    config.acl = if opts.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(2);
    let mountpoint = opts.mountpoint.clone();
    // Mounting waits for the kernel's INIT: off the async workers.
    let session =
        tokio::task::spawn_blocking(move || -> std::io::Result<fuser::BackgroundSession> {
            fuser::Session::new(adapter, &mountpoint, &config)?.spawn()
        })
        .await
        .context("mount task")?
        .map_err(|e| {
            // fuser mounts through fusermount3 when mount(2) is refused, but a user who
            // cannot open /dev/fuse at all (mode 0600) cannot mount FUSE, fusermount3 included.
            // SAFETY: geteuid cannot fail.
            let hint = if e.raw_os_error() == Some(libc::EACCES) && unsafe { libc::geteuid() } != 0
            {
                " (this user cannot open /dev/fuse: mounts by users other than root need it \
                 mode 0666, the usual udev rule, and then go through fusermount3; or mount as \
                 root)"
            } else {
                ""
            };
            anyhow::Error::new(e)
                .context(format!("mounting on {}{hint}", opts.mountpoint.display()))
        })?;
    raise_readahead(&opts.mountpoint);
    let notifier = session.notifier();
    core.set_invalidator(Box::new(move |ino| {
        // Size and cached pages of `ino` are stale; ENOENT (the kernel forgot it) is fine.
        let _ = notifier.inval_inode(fuser::INodeNo(ino), 0, 0);
    }));
    tracing::info!(bucket = %opts.bucket, prefix = %opts.prefix, mountpoint = %opts.mountpoint.display(), "mounted");
    Ok(Mounted {
        core,
        session: Some(session),
        mountpoint: opts.mountpoint.clone(),
        grace: opts.shutdown_grace,
    })
}

/// Refuses a mount point that is not a directory, that already holds a FUSE mount (mounts
/// would stack silently), or that is a dead FUSE mount (its daemon was killed).
pub fn check_mountpoint(mountpoint: &Path) -> anyhow::Result<()> {
    let shown = mountpoint.display();
    let dead = || {
        anyhow::anyhow!(
            "mount point {shown} is a dead FUSE mount (its daemon is gone: \"Transport endpoint is not connected\"); clear it with `umount -l {shown}` (or `fusermount3 -u {shown}`) and mount again"
        )
    };
    let md = match std::fs::metadata(mountpoint) {
        Ok(md) => md,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return Err(dead()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mount point {shown} does not exist (create it with mkdir)")
        }
        Err(e) => return Err(e).with_context(|| format!("mount point {shown}")),
    };
    if !md.is_dir() {
        bail!("mount point {shown} is not a directory");
    }
    let canonical = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    if let Some(fstype) = mounted_fuse_at(&canonical) {
        // The kernel may answer `stat` of a dead mount's root from its cache: ask something
        // only a live daemon answers (bounded: a stuck daemon must not hang this command).
        if fuse_mount_is_dead(&canonical) {
            return Err(dead());
        }
        bail!("{shown} already holds a FUSE mount ({fstype}); unmount it first (`umount {shown}`)");
    }
    Ok(())
}

/// Whether the FUSE mount at `path` has no daemon: `statfs` reaches the daemon (never a
/// cache) and fails with ENOTCONN then. Waits at most two seconds for an answer.
fn fuse_mount_is_dead(path: &Path) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
        let rc = unsafe {
            let mut buf: libc::statfs = std::mem::zeroed();
            libc::statfs(c.as_ptr(), &mut buf)
        };
        let errno = (rc != 0).then(|| std::io::Error::last_os_error().raw_os_error());
        let _ = tx.send(errno.flatten());
    });
    matches!(
        rx.recv_timeout(Duration::from_secs(2)),
        Ok(Some(libc::ENOTCONN))
    )
}

/// The type of a FUSE filesystem mounted exactly at `path`, from /proc/self/mountinfo.
fn mounted_fuse_at(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy().replace(' ', "\\040");
    info.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let target = fields.nth(4)?;
        let rest: Vec<&str> = line.split(" - ").nth(1)?.split(' ').collect();
        let fstype = rest.first()?;
        (target == want && fstype.starts_with("fuse")).then(|| fstype.to_string())
    })
}

/// fuser can only lower the kernel's 128 KiB readahead; sysfs raises it to 4 MiB, which with
/// 1 MiB requests reads markedly faster (design.md). Best effort.
fn raise_readahead(mountpoint: &Path) {
    let Ok(md) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = md.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    if let Err(e) = std::fs::write(&path, "4096") {
        tracing::debug!(path, error = %e, "could not raise readahead");
    }
}

impl Mounted {
    /// Whether the kernel side is gone (someone ran `umount`).
    pub fn ended(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Drains every stream (in parallel, within the shutdown grace), then unmounts. Returns
    /// the rescue file when acknowledged bytes had to be saved to it during the mount's life.
    pub async fn shutdown(mut self) -> Option<PathBuf> {
        let deadline = std::time::Instant::now() + self.grace;
        let rescued = self.core.drain(deadline).await;
        if let Some(session) = self.session.take() {
            let mp = self.mountpoint.clone();
            // After an external `umount` the kernel side is already gone: only join.
            let external = session.guard.is_finished();
            let res = tokio::task::spawn_blocking(move || {
                if external {
                    session.join()
                } else {
                    session.umount_and_join()
                }
            })
            .await;
            match res {
                Ok(Ok(())) => {}
                other => {
                    // Busy (a writer keeps a file open): nothing it writes from now on is
                    // acknowledged (the mount stopped taking writes), so detaching loses nothing.
                    tracing::info!(result = ?other.map(|r| r.err()), "mount busy; detaching lazily");
                    lazy_unmount(&mp);
                }
            }
        }
        (rescued > 0).then(|| self.core.rescue().path()).flatten()
    }
}

/// `umount -l`: detaches a mount even while files are open on it.
pub fn lazy_unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2 reads a NUL-terminated path and touches nothing else of ours.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc != 0 {
        tracing::warn!(mountpoint = %mountpoint.display(), error = %std::io::Error::last_os_error(), "lazy unmount failed");
    }
}
