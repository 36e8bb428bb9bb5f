//! A mount from start to end: credentials and client, the bucket check that makes a wrong key
//! or missing bucket fail before anything is mounted, the optional embedded server, the FUSE
//! session, kernel readahead, readiness for the parent process, and the orderly end (SIGTERM,
//! SIGINT or `umount`: flush every buffer, report what could not be sent, unmount, exit).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use super::adapter::Adapter;
use super::append::StreamConfig;
use super::core::{Core, FsConfig};
use crate::client::{
    Client, ClientConfig, CreateOptions, CredentialOptions, CredentialsProvider, StaticProvider,
};
use crate::oss::Credentials;
use crate::server::{self, ServerConfig, Storage};

/// Everything `appendfs mount` takes (the command-line contract).
#[derive(Debug, Clone)]
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
    pub uid: u32,
    pub gid: u32,
    pub file_mode: u16,
    pub dir_mode: u16,
    pub allow_other: bool,
    /// `--embedded[=DIR]`: `Some(None)` for the default data directory.
    pub embedded: Option<Option<PathBuf>>,
    /// Creation settings for new objects (ACL, storage class, encryption).
    pub create: CreateOptions,
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
    /// Kept alive for `--embedded`.
    _server: Option<server::RunningServer>,
}

/// Checks the bucket, mounts, and returns once the mount is live. Must run inside a tokio
/// runtime (the filesystem's tasks run on it).
pub async fn mount(opts: &MountOptions) -> anyhow::Result<Mounted> {
    let md = std::fs::metadata(&opts.mountpoint)
        .with_context(|| format!("mount point {}", opts.mountpoint.display()))?;
    if !md.is_dir() {
        bail!(
            "mount point {} is not a directory",
            opts.mountpoint.display()
        );
    }
    let (endpoint, provider, srv): (String, Arc<dyn CredentialsProvider>, _) = match &opts.embedded
    {
        Some(dir) => {
            let dir = dir.clone().unwrap_or_else(default_embedded_dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("embedded data directory {}", dir.display()))?;
            // Fresh random keys each run: the server is only reachable through this process.
            let creds = Credentials::new(
                format!("EMB{:016X}", rand::random::<u64>()),
                format!("{:032x}", rand::random::<u128>()),
            );
            let cfg = ServerConfig {
                storage: Storage::Dir(dir.clone()),
                credentials: Some(creds.clone()),
                buckets: vec![opts.bucket.clone()],
                ..ServerConfig::default()
            };
            let srv = server::start(cfg, "127.0.0.1:0".parse().expect("literal address"))
                .await
                .with_context(|| format!("starting the embedded server on {}", dir.display()))?;
            tracing::info!(endpoint = %srv.endpoint(), data_dir = %dir.display(), "embedded OSS-compatible server started");
            (
                srv.endpoint(),
                Arc::new(StaticProvider::new(creds)),
                Some(srv),
            )
        }
        None => {
            let endpoint = opts
                .endpoint
                .clone()
                .context("no endpoint: pass --endpoint URL, set OSS_ENDPOINT, or use --embedded")?;
            (endpoint, crate::client::chain_for(&opts.credentials), None)
        }
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
        read_only: opts.read_only,
        stream: StreamConfig {
            chunk_size: opts.append_chunk,
            flush_interval: opts.flush_interval,
            create: opts.create.clone(),
            give_up_after: Duration::from_secs(120),
        },
    };
    let core = Core::new(client, fs_cfg);
    let adapter = Adapter::new(
        core.clone(),
        tokio::runtime::Handle::current(),
        opts.metadata_ttl,
    );
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName(format!("appendfs:{}", opts.bucket)),
        fuser::MountOption::Subtype("appendfs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
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
        .with_context(|| format!("mounting on {}", opts.mountpoint.display()))?;
    raise_readahead(&opts.mountpoint);
    tracing::info!(bucket = %opts.bucket, prefix = %opts.prefix, mountpoint = %opts.mountpoint.display(), "mounted");
    Ok(Mounted {
        core,
        session: Some(session),
        mountpoint: opts.mountpoint.clone(),
        _server: srv,
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

    /// Flushes every buffer, then unmounts. Returns the byte ranges that could not be sent.
    pub async fn shutdown(mut self) -> Vec<String> {
        let problems = self.core.flush_all().await;
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
                    tracing::warn!(result = ?other.map(|r| r.err()), "unmount failed; detaching lazily");
                    lazy_unmount(&mp);
                }
            }
        }
        problems
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
