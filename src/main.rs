//! The `appendfs` command: `mount` mounts a bucket, `serve` runs the local OSS-compatible
//! server. README.md documents the command-line contract.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use appendfs::oss::Credentials;
use appendfs::server::{self, CopyAppendable, FaultPlan, ServerConfig, Storage};

#[derive(Parser)]
#[command(
    name = "appendfs",
    version = env!("APPENDFS_VERSION"),
    about = "Mount an OSS bucket; `echo >>` becomes AppendObject"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount oss://BUCKET[/PREFIX] on MOUNTPOINT.
    #[command(after_help = MOUNT_AFTER_HELP)]
    Mount(Box<MountArgs>),
    /// Run the local OSS-compatible server.
    Serve(ServeArgs),
}

const MOUNT_AFTER_HELP: &str = "\
Credentials, first found wins: OSS_ACCESS_KEY_ID/OSS_ACCESS_KEY_SECRET[/OSS_SESSION_TOKEN], then
ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET[/ALIBABA_CLOUD_SECURITY_TOKEN]; --passwd-file FILE, else
/etc/passwd-ossfs and ~/.passwd-ossfs; ~/.ossutilconfig; --credential-process; the ECS RAM role
(only with --ram-role=NAME, or --ram-role for the role attached to the instance).

As a mount helper: mount -t fuse.appendfs oss://BUCKET[/PREFIX] DIR -o endpoint=URL,allow_other
or the fstab line
  oss://BUCKET /mnt/logs fuse.appendfs _netdev,endpoint=https://oss-cn-hangzhou.aliyuncs.com 0 0";

#[derive(Args, Debug)]
// mount(8) and fstab can repeat an option (`-o ro` with `--read-only`): the last one counts.
#[command(args_override_self = true)]
struct MountArgs {
    /// oss://BUCKET[/PREFIX]
    url: String,
    mountpoint: PathBuf,
    /// OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com or http://127.0.0.1:9000.
    #[arg(long, env = "OSS_ENDPOINT", help_heading = "Where")]
    endpoint: Option<String>,
    /// Region id for V4 signing; derived from oss-<region>[-internal].aliyuncs.com if omitted.
    #[arg(long, env = "OSS_REGION", help_heading = "Where")]
    region: Option<String>,
    /// Force path-style addressing (automatic for IP and localhost endpoints).
    #[arg(long, help_heading = "Where")]
    path_style: bool,
    /// Start the built-in OSS-compatible server (data in DIR, default a per-user data directory)
    /// and mount through it.
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true, default_missing_value = "", help_heading = "Where")]
    embedded: Option<String>,
    /// ossfs password file (bucket:id:secret or id:secret lines, mode 600); replaces the
    /// defaults /etc/passwd-ossfs and ~/.passwd-ossfs.
    #[arg(long, value_name = "FILE", help_heading = "Credentials")]
    passwd_file: Option<PathBuf>,
    /// Command (run with sh -c) printing JSON {AccessKeyId, AccessKeySecret, SecurityToken,
    /// Expiration}; run again before Expiration.
    #[arg(long, value_name = "CMD", help_heading = "Credentials")]
    credential_process: Option<String>,
    /// Take keys from the ECS instance metadata service: the RAM role NAME, or without
    /// =NAME the role attached to the instance. Never used unless given.
    #[arg(long, value_name = "NAME", num_args = 0..=1, require_equals = true, default_missing_value = "", help_heading = "Credentials")]
    ram_role: Option<String>,
    /// Address of the instance metadata service (tests).
    #[arg(long, env = appendfs::client::ecs_role::METADATA_ENDPOINT_ENV, hide = true)]
    ecs_metadata_endpoint: Option<String>,
    /// Send buffered appends once their oldest byte is this old.
    #[arg(long, default_value = "1s", value_name = "DUR", value_parser = parse_flush_interval, help_heading = "Buffers and caches")]
    flush_interval: Duration,
    /// Send buffered appends once this many bytes are waiting (also the largest AppendObject).
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_append_chunk, help_heading = "Buffers and caches")]
    append_chunk: u64,
    /// How old a HEAD result or directory listing may be before it is asked again (0: always).
    #[arg(long, default_value = "1s", value_name = "DUR", value_parser = parse_metadata_ttl, help_heading = "Buffers and caches")]
    metadata_ttl: Duration,
    /// Bound of the read block cache.
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = parse_memory_size, help_heading = "Buffers and caches")]
    cache_size: u64,
    /// Bound of bytes accepted but not yet appended; writers wait above it.
    #[arg(long, default_value = "256MiB", value_name = "SIZE", value_parser = parse_memory_size, help_heading = "Buffers and caches")]
    max_dirty: u64,
    /// One bound shared by buffered writes, prefetch and the block cache: the cache gives way
    /// to buffered writes, prefetch shrinks, writers wait (never a loss). Default: none beyond
    /// --cache-size and --max-dirty.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_size, help_heading = "Buffers and caches")]
    max_memory: Option<u64>,
    /// Refuse every change (EROFS); `-o ro` says the same.
    #[arg(long, help_heading = "Files and permissions")]
    read_only: bool,
    /// Owner shown for every file (default: the mounting user).
    #[arg(long, help_heading = "Files and permissions")]
    uid: Option<u32>,
    /// Group shown for every file (default: the mounting user's group).
    #[arg(long, help_heading = "Files and permissions")]
    gid: Option<u32>,
    /// Mode of files, octal.
    #[arg(long, default_value = "0644", value_name = "MODE", value_parser = parse_mode, help_heading = "Files and permissions")]
    file_mode: u16,
    /// Mode of directories, octal.
    #[arg(long, default_value = "0755", value_name = "MODE", value_parser = parse_mode, help_heading = "Files and permissions")]
    dir_mode: u16,
    /// Let other users access the mount.
    #[arg(long, help_heading = "Files and permissions")]
    allow_other: bool,
    /// Answer no extended attributes (not even the read-only user.oss.*): the kernel then
    /// stops asking, which saves `ls -l` two round trips to the daemon per file
    /// (-o noxattr).
    #[arg(long, help_heading = "Files and permissions")]
    no_xattrs: bool,
    /// ACL of objects this mount creates (default, private, public-read, public-read-write).
    #[arg(long, help_heading = "New objects")]
    acl: Option<String>,
    /// Storage class of objects this mount creates (Standard, IA, Archive).
    #[arg(long, help_heading = "New objects")]
    storage_class: Option<String>,
    /// Server-side encryption of objects this mount creates (AES256, KMS, SM4).
    #[arg(long, help_heading = "New objects")]
    sse: Option<String>,
    /// Stay in the foreground; otherwise return once the mount is live.
    #[arg(short, long, help_heading = "Process")]
    foreground: bool,
    /// Log here instead of stderr (appended). A background mount logs to
    /// ~/.local/state/appendfs/mount.log unless this is given.
    #[arg(long, value_name = "PATH", help_heading = "Process")]
    log_file: Option<PathBuf>,
    /// Drain deadline at umount, SIGTERM and SIGINT; what is not appended by then is saved to
    /// the rescue file and the exit status is 1.
    #[arg(long, default_value = "30s", value_parser = parse_duration, help_heading = "Process")]
    shutdown_grace: Duration,
    /// How long appends are retried through errors and outages before the bytes are saved to
    /// the rescue file (and the next write or open of the file fails with EIO).
    #[arg(long, default_value = "5m", value_parser = parse_duration, help_heading = "Buffers and caches")]
    retry_budget: Duration,
    /// State directory: the rescue file goes under DIR/rescue (default
    /// $XDG_STATE_HOME/appendfs, else ~/.local/state/appendfs).
    #[arg(long, value_name = "DIR", help_heading = "Process")]
    state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (bound to that address only,
    /// e.g. 127.0.0.1:9100); `-o metrics_addr=HOST:PORT` says the same.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Monitoring")]
    metrics_addr: Option<String>,
    /// Warn when the oldest unsent byte is older than this (default: 10 × --flush-interval,
    /// at least 10s); for tests.
    #[arg(long, env = "APPENDFS_BACKLOG_WARN_AFTER", value_parser = parse_duration, hide = true)]
    backlog_warn_after: Option<Duration>,
    /// Options in fstab form, e.g. -o ro,flush_interval=500ms,allow_other: every option above
    /// as key=value (or key for a switch); mount(8)'s own (rw, dev, suid, _netdev, nofail,
    /// x-systemd.*, nonempty, ...) are accepted and ignored.
    #[arg(short = 'o', value_name = "OPT[,OPT]", help_heading = "Process")]
    options: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (examples: 1s, 500ms, 2m)"))
}

/// A duration within `[min, max]`; the message names the bound that was crossed.
fn bounded_duration(s: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < min {
        if min == Duration::from_millis(1) {
            return Err(format!("{s:?}: must be more than 0"));
        }
        return Err(format!(
            "{s:?}: must be at least {}",
            humantime::format_duration(min)
        ));
    }
    if d > max {
        return Err(format!(
            "{s:?}: must be at most {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// Zero would mean a timer firing without pause; over an hour, bytes a writer saw accepted
/// wait too long to reach OSS.
fn parse_flush_interval(s: &str) -> Result<Duration, String> {
    bounded_duration(s, Duration::from_millis(1), Duration::from_secs(3600))
}

/// Zero is meaningful (ask OSS every time); a day is plenty for any cache of remote state.
fn parse_metadata_ttl(s: &str) -> Result<Duration, String> {
    bounded_duration(s, Duration::ZERO, Duration::from_secs(86_400))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let v: bytesize::ByteSize = s
        .parse()
        .map_err(|e| format!("{s:?}: {e} (examples: 8MiB, 256MiB, 1GiB)"))?;
    if v.as_u64() == 0 {
        return Err(format!("{s:?}: must be more than 0"));
    }
    Ok(v.as_u64())
}

/// A rate in bytes per second: a size, optionally followed by `/s` (`16MiB`, `16MiB/s`).
fn parse_rate(s: &str) -> Result<u64, String> {
    parse_size(s.strip_suffix("/s").unwrap_or(s))
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// OSS refuses an AppendObject body over 5 GiB (and an object over 5 GiB made by appends).
const MAX_APPEND_CHUNK: u64 = 5 * GIB;
const MIN_APPEND_CHUNK: u64 = KIB;
/// One read block: a smaller cache or buffer could not hold what a single request moves.
const MIN_MEMORY_BOUND: u64 = MIB;

fn parse_append_chunk(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v > MAX_APPEND_CHUNK {
        return Err(format!(
            "{s:?}: must be at most 5GiB, the largest AppendObject OSS accepts"
        ));
    }
    if v < MIN_APPEND_CHUNK {
        return Err(format!(
            "{s:?}: must be at least 1KiB (smaller chunks only multiply requests)"
        ));
    }
    Ok(v)
}

/// This machine's RAM, if it can be read.
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system configuration.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page > 0).then(|| (pages as u64).saturating_mul(page as u64))
}

/// A memory bound: at least 1 MiB, at most this machine's RAM (more could never be honoured).
fn parse_memory_size(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    if v < MIN_MEMORY_BOUND {
        return Err(format!("{s:?}: must be at least 1MiB"));
    }
    if let Some(ram) = physical_memory().filter(|ram| v > *ram) {
        return Err(format!(
            "{s:?}: must be at most this machine's memory ({})",
            bytesize::ByteSize::b(ram).display().iec()
        ));
    }
    Ok(v)
}

fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0644"))
}

/// Options mount(8), fstab and systemd add that mean nothing to appendfs (the kernel side is
/// always nodev,nosuid; `nonempty` is fuse2's permission to mount over files, which a
/// kernel mount never needed).
const IGNORED_MOUNT_OPTIONS: &[&str] = &[
    "rw",
    "defaults",
    "nofail",
    "_netdev",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "async",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nodiratime",
    "lazytime",
    "nonempty",
    "sync",
];

/// Ignored by prefix: `x-systemd.automount`, `x-mount.mkdir`, `comment=...` are for
/// userspace tools, never the filesystem.
fn ignored_mount_option(name: &str) -> bool {
    IGNORED_MOUNT_OPTIONS.contains(&name) || name.starts_with("x-") || name == "comment"
}

/// How `-o` options were written: long flag name (`append-chunk`) -> the user's own words
/// (`append_chunk=10GiB`), so that errors quote those and not the translation.
type OptionOrigins = std::collections::HashMap<String, String>;

/// How a long option of `appendfs mount` takes a value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Takes {
    Nothing,
    Value,
    /// `--embedded[=DIR]`, `--ram-role[=NAME]`.
    OptionalValue,
}

/// The long options of `appendfs mount` and how each takes a value.
fn mount_flags() -> Vec<(String, Takes)> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    cmd.find_subcommand("mount")
        .map(|m| {
            m.get_arguments()
                .filter_map(|a| {
                    let takes = if !a.get_action().takes_values() {
                        Takes::Nothing
                    } else if a.get_num_args().is_some_and(|n| n.min_values() == 0) {
                        Takes::OptionalValue
                    } else {
                        Takes::Value
                    };
                    a.get_long().map(|l| (l.to_string(), takes))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `appendfs SOURCE MOUNTPOINT [-o ...]`, the form mount(8) runs helpers in (through
/// mount.fuse3), means `appendfs mount ...`.
fn insert_mount_subcommand(mut args: Vec<String>) -> Vec<String> {
    if args.get(1).is_some_and(|a| a.starts_with("oss://")) {
        args.insert(1, "mount".into());
    }
    args
}

/// Turns `-o a=b,c` into `--a=b --c` so fstab-style options go through the same parser.
/// Unknown options and misuse are refused here, in the words the user wrote.
fn expand_fstab_options(args: Vec<String>) -> Result<(Vec<String>, OptionOrigins), String> {
    let flags = mount_flags();
    let mut origins = OptionOrigins::new();
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let opts = if a == "-o" {
            match it.next() {
                Some(v) => v,
                None => {
                    out.push(a);
                    continue;
                }
            }
        } else if a == "--" {
            // Everything after `--` is positional.
            out.push(a);
            out.extend(it.by_ref());
            continue;
        } else if let Some(v) = a
            .strip_prefix("-o")
            .filter(|v| !v.is_empty() && !a.starts_with("--"))
        {
            v.to_string()
        } else {
            out.push(a);
            continue;
        };
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (name, value) = opt
                .split_once('=')
                .map_or((opt, None), |(n, v)| (n, Some(v)));
            if ignored_mount_option(name) {
                continue;
            }
            let long = match name {
                "ro" => "read-only".to_string(),
                // The spelling of s3fs and ossfs.
                "noxattr" => "no-xattrs".to_string(),
                n => n.replace('_', "-"),
            };
            let Some((_, takes)) = flags.iter().find(|(l, _)| *l == long) else {
                return Err(format!("unknown mount option {name:?}"));
            };
            match (value, takes) {
                (Some(_), Takes::Nothing) => {
                    return Err(format!("mount option {name:?} takes no value"));
                }
                (None, Takes::Value) => {
                    return Err(format!("mount option {name:?} needs a value ({name}=...)"));
                }
                _ => {}
            }
            origins.insert(long.clone(), opt.to_string());
            out.push(match value {
                Some(v) => format!("--{long}={v}"),
                None => format!("--{long}"),
            });
        }
    }
    Ok((out, origins))
}

/// A clap error about an option that came from `-o`, restated in the user's words.
fn restate_option_error(e: &clap::Error, origins: &OptionOrigins) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let long = arg
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or("");
    let written = origins.get(long)?;
    let reason = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.kind().to_string());
    // The value parsers start with the value itself, which `written` already shows.
    let reason = written
        .split_once('=')
        .and_then(|(_, v)| reason.strip_prefix(&format!("{v:?}: ")))
        .map(str::to_string)
        .unwrap_or(reason);
    Some(format!("mount option {written:?}: {reason}"))
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("storage").required(true).args(["data_dir", "memory"])))]
struct ServeArgs {
    /// Keep objects durably in this directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep everything in RAM (tests, benchmarks).
    #[arg(long)]
    memory: bool,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Create this bucket at start (repeatable).
    #[arg(long = "bucket", value_name = "NAME")]
    buckets: Vec<String>,
    /// Fault injection, e.g. `error500:0.1,lost-response:0.05,reset:0.02,delay:200`.
    #[arg(long, value_name = "KIND:RATE[,KIND:RATE]")]
    fault: Option<String>,
    /// Seed of the fault RNG (random when omitted; logged either way).
    #[arg(long, value_name = "N")]
    fault_seed: Option<u64>,
    /// Network shaping: delay every answer's first byte by DUR (e.g. 5ms), like a round trip
    /// to OSS. Off by default.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    latency: Option<Duration>,
    /// Network shaping: pace each connection to RATE bytes per second in each direction
    /// (e.g. 16MiB), like one connection to OSS. Off by default.
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    bandwidth: Option<u64>,
    /// Accept unsigned requests.
    #[arg(long)]
    anonymous: bool,
    /// What CopyObject does with an Appendable source.
    #[arg(long, value_enum, default_value = "allow")]
    copy_appendable: CopyMode,
    /// Region reported in bucket info.
    #[arg(long, default_value = "cn-hangzhou")]
    region: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum CopyMode {
    Allow,
    Reject,
}

/// The log file, reopened on SIGHUP (after logrotate moved it away).
#[derive(Clone)]
struct LogFile {
    path: PathBuf,
    file: std::sync::Arc<std::sync::Mutex<std::fs::File>>,
}

impl LogFile {
    fn reopen(&self) {
        match open_log(&self.path) {
            Ok(f) => *self.file.lock().unwrap_or_else(|e| e.into_inner()) = f,
            Err(e) => tracing::error!("SIGHUP: {e}; still logging to the old file"),
        }
    }
}

impl std::io::Write for &LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = &'a LogFile;
    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

/// The tracing directive that silences fuser's mount-module warnings (see [`init_tracing`]).
const FUSER_MNT_QUIET: &str = "fuser::mnt=error";

/// Logs go to stderr, or to `log_file` (appended) when given; colour only on a terminal.
/// Returns the log file, for SIGHUP.
fn init_tracing(log_file: Option<&std::path::Path>) -> Result<Option<LogFile>, String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // fuser warns "Unmount failed: Invalid argument" on every clean external `umount` (its
    // session tries to unmount again); our own unmount failures are logged by us. Quiet it
    // unless RUST_LOG says something about fuser itself.
    let filter = if std::env::var("RUST_LOG").is_ok_and(|v| v.contains("fuser")) {
        filter
    } else {
        filter.add_directive(FUSER_MNT_QUIET.parse().map_err(|e| format!("{e}"))?)
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let log = LogFile {
                path: path.to_path_buf(),
                file: std::sync::Arc::new(std::sync::Mutex::new(open_log(path)?)),
            };
            builder.with_ansi(false).with_writer(log.clone()).init();
            Ok(Some(log))
        }
        None => {
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init();
            Ok(None)
        }
    }
}

fn open_log(path: &std::path::Path) -> Result<std::fs::File, String> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))
}

/// Where a background mount logs unless `--log-file` says otherwise:
/// `$XDG_STATE_HOME/appendfs/mount.log`, else `~/.local/state/appendfs/mount.log`.
fn default_log_file() -> PathBuf {
    default_state_dir().join("mount.log")
}

/// `$XDG_STATE_HOME/appendfs`, else `~/.local/state/appendfs`.
fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
                Some(home) => PathBuf::from(home).join(".local/state"),
                // A boot-time mount may have no HOME at all.
                None => PathBuf::from("/var/log"),
            }
        });
    base.join("appendfs")
}

/// Exit status of a command line that cannot work (clap uses the same).
const USAGE_ERROR: u8 = 2;

/// Parses the command line, helper form and `-o` included; exits on a bad one.
fn parse_command_line() -> Result<Cli, ExitCode> {
    let args = insert_mount_subcommand(std::env::args().collect());
    let (args, origins) = match expand_fstab_options(args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("appendfs: {e}");
            return Err(ExitCode::from(USAGE_ERROR));
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            if let Some(msg) = restate_option_error(&e, &origins) {
                eprintln!("appendfs: {msg}");
                return Err(ExitCode::from(USAGE_ERROR));
            }
            e.exit()
        }
    };
    if let Command::Mount(args) = &cli.command {
        if let Err(e) = check_mount_args(args) {
            eprintln!("appendfs: {e}");
            return Err(ExitCode::from(USAGE_ERROR));
        }
        // Checked again when mounting; here so that the error reaches the terminal before a
        // background daemon starts.
        if let Err(e) = appendfs::fs::mount::check_mountpoint(&args.mountpoint) {
            eprintln!("appendfs: {e:#}");
            return Err(ExitCode::FAILURE);
        }
    }
    Ok(cli)
}

/// What no single option's parser can see: options against each other, the URL, the endpoint.
fn check_mount_args(args: &MountArgs) -> Result<(), String> {
    let (_, prefix) =
        appendfs::fs::mount::parse_bucket_url(&args.url).map_err(|e| format!("{e:#}"))?;
    check_prefix(&prefix)?;
    if args.max_dirty < args.append_chunk {
        return Err(format!(
            "--max-dirty ({}) must be at least --append-chunk ({}): a full chunk has to fit",
            bytesize::ByteSize::b(args.max_dirty).display().iec(),
            bytesize::ByteSize::b(args.append_chunk).display().iec()
        ));
    }
    if args.embedded.is_none() {
        if let Some(ep) = &args.endpoint {
            // Refused here, before a background process starts; the message never shows a
            // password written into the URL.
            appendfs::client::Endpoint::parse(ep).map_err(|e| e.to_string())?;
        }
    }
    if let Some(p) = &args.passwd_file {
        if p.as_os_str().is_empty() {
            return Err("--passwd-file needs a file name".into());
        }
    }
    if args
        .credential_process
        .as_deref()
        .is_some_and(|c| c.trim().is_empty())
    {
        return Err("--credential-process needs a command".into());
    }
    if let Some(role) = &args.ram_role {
        if role.contains('/') || role.contains(char::is_whitespace) {
            return Err(format!("--ram-role {role:?} is not a RAM role name"));
        }
    }
    Ok(())
}

/// The prefix as `parse_bucket_url` gives it (`a/b/` or empty). OSS keys are literal, so
/// `.`, `..` and empty segments would name objects the mount can never show as files
/// (and `..` would not mean "up" to OSS): refused rather than guessed at. Leading and
/// trailing slashes are dropped by `parse_bucket_url`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let body = prefix.strip_suffix('/').unwrap_or(prefix);
    if body.is_empty() {
        return Ok(());
    }
    for seg in body.split('/') {
        let what = match seg {
            "" => "an empty segment (//)",
            "." => "a \".\" segment",
            ".." => "a \"..\" segment",
            s if s.len() > 255 => "a segment longer than 255 bytes",
            _ => continue,
        };
        return Err(format!(
            "prefix {body:?} has {what}: give the prefix as plain names, e.g. oss://bucket/logs/app"
        ));
    }
    Ok(())
}

/// A mount runs for months: glibc's malloc otherwise raises its mmap threshold each time a
/// large buffer (a listing page's body) is freed, after which such buffers come from the heap
/// and what they leave behind is not given back, so every `ls -l` of a large directory added
/// megabytes to the resident set. Fixed thresholds keep large buffers mapped and return the
/// heap's free top (`scripts/memory.sh` shows the difference).
fn steady_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    let cli = match parse_command_line() {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Command::Mount(args) = &cli.command {
        if !args.foreground {
            return daemonize(args.log_file.clone(), default_log_file());
        }
    }
    let log_file = match &cli.command {
        Command::Mount(args) => args.log_file.clone(),
        Command::Serve(_) => None,
    };
    let log = match init_tracing(log_file.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("appendfs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if matches!(cli.command, Command::Mount(_)) {
        steady_malloc();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("appendfs: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::Mount(args) => runtime.block_on(mount(*args, log)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A background mount's parent prints the error it was sent (report_ready); printing
            // it here too showed it twice on the same terminal, the two copies interleaved.
            if !ERROR_REPORTED.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("appendfs: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let faults = match &args.fault {
        Some(spec) => FaultPlan::parse(spec)?,
        None => FaultPlan::none(),
    };
    let fault_seed = args.fault_seed.unwrap_or_else(rand::random);
    if !faults.is_empty() {
        tracing::info!(?faults, fault_seed, "fault injection on");
    }
    let config = ServerConfig {
        storage: match args.data_dir {
            Some(dir) => Storage::Dir(dir),
            None => Storage::Memory,
        },
        credentials: Credentials::from_env(),
        anonymous: args.anonymous,
        buckets: args.buckets,
        faults,
        fault_seed,
        copy_appendable: match args.copy_appendable {
            CopyMode::Allow => CopyAppendable::Allow,
            CopyMode::Reject => CopyAppendable::Reject,
        },
        region: args.region,
        latency: args.latency,
        bandwidth: args.bandwidth,
    };
    let running = server::start(config, args.listen).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", running.endpoint())?;
    out.flush()?;
    drop(out);
    wait_for_signal().await?;
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Environment variable naming the pipe through which a background mount reports readiness.
const READY_FD_ENV: &str = "APPENDFS_READY_FD";

/// Set once this process has sent its failure to a waiting parent, which then prints it.
static ERROR_REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Without `--foreground`: runs the same command in the foreground as a detached child that logs
/// to `log_file` (not to the caller's stderr, which `$(appendfs mount ...)` would otherwise wait
/// on until unmount), and returns once the child reports the mount live (exit 0) or failed
/// (exit 1, with its message).
fn daemonize(given_log_file: Option<PathBuf>, default: PathBuf) -> ExitCode {
    let log_file = given_log_file.clone().unwrap_or(default);
    use std::io::Read;
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;

    let mut fds = [0i32; 2];
    // SAFETY: pipe() fills two descriptors we then own.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        eprintln!(
            "appendfs: cannot create a pipe: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::FAILURE;
    }
    // SAFETY: both descriptors were just created and are owned here alone.
    let (mut reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    // The read end must not leak into the child.
    // SAFETY: plain fcntl on a descriptor we own.
    unsafe { libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC) };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("appendfs: cannot find own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let log = match open_log(&log_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("appendfs: {e} (choose another with --log-file)");
            return ExitCode::FAILURE;
        }
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.push("--foreground".into());
    if given_log_file.is_none() {
        args.push(format!("--log-file={}", log_file.display()));
    }
    let child = std::process::Command::new(exe)
        .args(&args)
        .env(READY_FD_ENV, fds[1].to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Panics and anything else written to stderr end up beside the log.
        .stderr(log)
        .process_group(0)
        .spawn();
    drop(writer);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("appendfs: cannot start the mount process: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut msg = String::new();
    let _ = reader.read_to_string(&mut msg);
    if msg.trim() == "ok" {
        ExitCode::SUCCESS
    } else {
        // The child is ending: let it finish (briefly bounded), so that when this command
        // reports the failure no mount process of it is left running and its last log lines
        // are out.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let msg = msg.trim();
        let line = if msg.is_empty() {
            "appendfs: the mount process exited before the mount was live\n".to_string()
        } else {
            format!("appendfs: {msg}\n")
        };
        // One write, so the line is not cut up by what the ending child still logs.
        let _ = std::io::stderr().write_all(line.as_bytes());
        ExitCode::FAILURE
    }
}

/// Tells a waiting parent (if any) how the mount went.
fn report_ready(outcome: &Result<(), String>) {
    use std::io::Write as _;
    use std::os::fd::FromRawFd;
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the parent passed us this descriptor for this one message; we take it once.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let sent = match outcome {
        Ok(()) => f.write_all(b"ok\n"),
        Err(e) => f.write_all(e.as_bytes()),
    };
    if outcome.is_err() && sent.is_ok() {
        ERROR_REPORTED.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    std::env::remove_var(READY_FD_ENV);
}

/// How long `--embedded` waits for another process to let go of its data directory.
const EMBEDDED_WAIT: Duration = Duration::from_secs(30);

/// `--embedded[=DIR]`: starts the built-in server on a loopback port with fresh random keys
/// (it is reachable only through this process) and returns it with its endpoint and keys.
async fn start_embedded(
    dir: Option<PathBuf>,
    bucket: &str,
) -> anyhow::Result<(server::RunningServer, String, Credentials)> {
    use anyhow::Context;
    let dir = dir.unwrap_or_else(appendfs::fs::mount::default_embedded_dir);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("embedded data directory {}", dir.display()))?;
    let creds = Credentials::new(
        format!("EMB{:016X}", rand::random::<u64>()),
        format!("{:032x}", rand::random::<u128>()),
    );
    let cfg = ServerConfig {
        storage: Storage::Dir(dir.clone()),
        credentials: Some(creds.clone()),
        buckets: vec![bucket.to_string()],
        ..ServerConfig::default()
    };
    // `umount` returns before the unmounted daemon has drained and let go of the directory:
    // a mount right after it waits for that rather than failing.
    let deadline = std::time::Instant::now() + EMBEDDED_WAIT;
    let mut told = false;
    let srv = loop {
        match server::start(cfg.clone(), "127.0.0.1:0".parse().expect("literal address")).await {
            Err(server::ServerError::Storage {
                source: server::StoreError::InUse,
                ..
            }) if std::time::Instant::now() < deadline => {
                if !told {
                    tracing::info!(data_dir = %dir.display(), "the data directory is in use (a mount still draining?); waiting for it");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => {
                break other.with_context(|| {
                    format!("starting the embedded server on {}", dir.display())
                })?
            }
        }
    };
    let endpoint = srv.endpoint();
    tracing::info!(endpoint = %endpoint, data_dir = %dir.display(), "embedded OSS-compatible server started");
    Ok((srv, endpoint, creds))
}

/// The `endpoint` of `~/.ossutilconfig`, used when neither `--endpoint` nor `OSS_ENDPOINT` is
/// given, so an ossutil user needs no new configuration. Unreadable: none (the credential
/// chain reports a broken file).
fn ossutil_endpoint() -> Option<String> {
    use appendfs::client::ossutil_config;
    let path = ossutil_config::default_path()?;
    let endpoint = ossutil_config::load(&path).ok()??.endpoint?;
    tracing::info!(%endpoint, file = %path.display(), "endpoint from ossutil's config");
    Some(endpoint)
}

async fn mount(args: MountArgs, log: Option<LogFile>) -> anyhow::Result<()> {
    use appendfs::client::{CreateOptions, StaticProvider};
    use appendfs::fs::mount::{self as m, MountOptions};

    let prepared = async {
        let (bucket, prefix) = m::parse_bucket_url(&args.url)?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let embedded = match &args.embedded {
            Some(d) => {
                Some(start_embedded((!d.is_empty()).then(|| PathBuf::from(d)), &bucket).await?)
            }
            None => None,
        };
        let (endpoint, provider) = match &embedded {
            Some((_, endpoint, creds)) => (
                Some(endpoint.clone()),
                Some(std::sync::Arc::new(StaticProvider::new(creds.clone()))
                    as std::sync::Arc<dyn appendfs::client::CredentialsProvider>),
            ),
            None => (args.endpoint.clone().or_else(ossutil_endpoint), None),
        };
        let opts = MountOptions {
            credentials: appendfs::client::CredentialOptions {
                passwd_file: args.passwd_file.clone(),
                credential_process: args.credential_process.clone(),
                ram_role: args
                    .ram_role
                    .as_ref()
                    .map(|r| (!r.is_empty()).then(|| r.clone())),
                metadata_endpoint: args.ecs_metadata_endpoint.clone(),
                ..appendfs::client::CredentialOptions::for_bucket(&bucket)
            },
            provider,
            bucket,
            prefix,
            mountpoint: args.mountpoint.clone(),
            endpoint,
            region: args.region.clone(),
            path_style: args.path_style,
            read_only: args.read_only,
            flush_interval: args.flush_interval,
            append_chunk: args.append_chunk,
            metadata_ttl: args.metadata_ttl,
            cache_size: args.cache_size,
            max_dirty: args.max_dirty,
            max_memory: args.max_memory,
            uid: args.uid.unwrap_or(uid),
            gid: args.gid.unwrap_or(gid),
            file_mode: args.file_mode,
            dir_mode: args.dir_mode,
            allow_other: args.allow_other,
            xattrs: !args.no_xattrs,
            create: CreateOptions {
                acl: args.acl.clone(),
                storage_class: args.storage_class.clone(),
                server_side_encryption: args.sse.clone(),
                ..CreateOptions::default()
            },
            shutdown_grace: args.shutdown_grace,
            retry_budget: args.retry_budget,
            rescue_dir: args
                .state_dir
                .clone()
                .unwrap_or_else(default_state_dir)
                .join("rescue"),
        };
        anyhow::Ok((opts, embedded.map(|(srv, _, _)| srv)))
    }
    .await;
    let prepared = match prepared {
        Ok(p) => match &args.metrics_addr {
            Some(addr) => appendfs::metrics::Endpoint::bind(addr)
                .await
                .map(|e| (p, Some(e)))
                .map_err(anyhow::Error::from),
            None => Ok((p, None)),
        },
        Err(e) => Err(e),
    };
    let ((opts, _server), metrics_endpoint) = match prepared {
        Ok(o) => o,
        Err(e) => {
            report_ready(&Err(format!("{e:#}")));
            return Err(e);
        }
    };
    let mounted = match m::mount(&opts).await {
        Ok(x) => x,
        Err(e) => {
            report_ready(&Err(format!("{e:#}")));
            return Err(e);
        }
    };
    report_ready(&Ok(()));
    let _metrics = start_monitoring(&mounted, metrics_endpoint, &args);
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining and unmounting"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: draining and unmounting"); break; }
                _ = hup.recv() => {
                    match &log {
                        Some(l) => { l.reopen(); tracing::info!("SIGHUP: log file reopened"); }
                        None => tracing::info!("SIGHUP: logging to stderr, nothing to reopen"),
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if mounted.ended() {
                        tracing::info!("unmounted; draining");
                        break;
                    }
                }
            }
        }
    }
    let result = mounted.shutdown().await;
    // After the drain, so the summary counts its requests too.
    tracing::info!(
        summary = %appendfs::metrics::global().summary(),
        "counters at unmount"
    );
    match result {
        None => {
            tracing::info!("all data appended; exiting");
            Ok(())
        }
        Some(path) => anyhow::bail!(
            "some acknowledged bytes could not be appended; they are saved in {} (see the log for each key and byte range)",
            path.display()
        ),
    }
}

/// Tasks that end when dropped (the metrics endpoint and the backlog watch).
struct Monitoring(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Monitoring {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Starts the metrics endpoint (when asked for) and the backlog watch, which warns, once per
/// threshold while it lasts, when the oldest byte a writer handed over has waited longer than
/// the threshold (a stalled or unreachable OSS), and says when the backlog has cleared.
fn start_monitoring(
    mounted: &appendfs::fs::mount::Mounted,
    endpoint: Option<appendfs::metrics::Endpoint>,
    args: &MountArgs,
) -> Monitoring {
    use std::sync::Arc;
    let core = mounted.core.clone();
    let sample: appendfs::metrics::Sampler = Arc::new(move || {
        let age = core.oldest_unsent().map(|t| t.elapsed());
        appendfs::metrics::global().set_backlog(core.dirty_bytes(), age);
    });
    let mut tasks = Vec::new();
    if let Some(endpoint) = endpoint {
        if let Some(addr) = endpoint.local_addr() {
            tracing::info!(%addr, "serving metrics at http://{addr}/metrics");
        }
        tasks.push(tokio::spawn(endpoint.serve(sample.clone())));
    }
    let threshold = args
        .backlog_warn_after
        .unwrap_or_else(|| (args.flush_interval * 10).max(Duration::from_secs(10)));
    let core = mounted.core.clone();
    tasks.push(tokio::spawn(async move {
        let mut last_warned: Option<std::time::Instant> = None;
        // Checked a few times per threshold, so a backlog is seen soon after it crosses it.
        let mut tick = tokio::time::interval((threshold / 4).max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            sample();
            let age = core.oldest_unsent().map(|t| t.elapsed());
            match age {
                Some(age) if age >= threshold => {
                    if last_warned.is_none_or(|t| t.elapsed() >= threshold) {
                        tracing::warn!(
                            oldest_unsent_secs = age.as_secs(),
                            buffered_bytes = core.dirty_bytes(),
                            threshold = %humantime::format_duration(threshold),
                            "writer backlog: bytes have waited longer than the threshold to reach OSS (is OSS reachable?)"
                        );
                        last_warned = Some(std::time::Instant::now());
                    }
                }
                _ => {
                    if last_warned.take().is_some() {
                        tracing::info!("writer backlog cleared");
                    }
                }
            }
        }
    }));
    Monitoring(tasks)
}
