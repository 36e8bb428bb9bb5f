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
    version,
    about = "Mount an OSS bucket; `echo >>` becomes AppendObject"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount oss://BUCKET[/PREFIX] on MOUNTPOINT.
    Mount(MountArgs),
    /// Run the local OSS-compatible server.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct MountArgs {
    /// oss://BUCKET[/PREFIX]
    url: String,
    mountpoint: PathBuf,
    /// OSS endpoint, e.g. https://oss-cn-hangzhou.aliyuncs.com or http://127.0.0.1:9000.
    #[arg(long, env = "OSS_ENDPOINT")]
    endpoint: Option<String>,
    /// Region id for V4 signing; derived from oss-<region>[-internal].aliyuncs.com if omitted.
    #[arg(long, env = "OSS_REGION")]
    region: Option<String>,
    /// Force path-style addressing (automatic for IP and localhost endpoints).
    #[arg(long)]
    path_style: bool,
    /// Stay in the foreground; otherwise return once the mount is live.
    #[arg(short, long)]
    foreground: bool,
    #[arg(long)]
    read_only: bool,
    /// Send buffered appends once their oldest byte is this old.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    flush_interval: Duration,
    /// Send buffered appends once this many bytes are waiting (also the largest AppendObject).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    append_chunk: u64,
    /// How old a HEAD result or directory listing may be before it is asked again.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    metadata_ttl: Duration,
    /// Bound of the read block cache.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    cache_size: u64,
    /// Bound of bytes accepted but not yet appended; writers wait above it.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    max_dirty: u64,
    /// Owner shown for every file (default: the mounting user).
    #[arg(long)]
    uid: Option<u32>,
    #[arg(long)]
    gid: Option<u32>,
    /// Mode of files, octal.
    #[arg(long, default_value = "0644", value_parser = parse_mode)]
    file_mode: u16,
    /// Mode of directories, octal.
    #[arg(long, default_value = "0755", value_parser = parse_mode)]
    dir_mode: u16,
    /// Let other users access the mount.
    #[arg(long)]
    allow_other: bool,
    /// Start the built-in OSS-compatible server (data in DIR, default a per-user data directory)
    /// and mount through it.
    #[arg(long, value_name = "DIR", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    embedded: Option<String>,
    /// ACL of objects this mount creates (default, private, public-read, public-read-write).
    #[arg(long)]
    acl: Option<String>,
    /// Storage class of objects this mount creates (Standard, IA, Archive).
    #[arg(long)]
    storage_class: Option<String>,
    /// Server-side encryption of objects this mount creates (AES256, KMS, SM4).
    #[arg(long)]
    sse: Option<String>,
    /// Log here instead of stderr (appended). A background mount logs to
    /// ~/.local/state/appendfs/mount.log unless this is given.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Options in fstab form, e.g. -o ro,flush_interval=500ms,allow_other (expanded before parsing).
    #[arg(short = 'o', value_name = "OPT[,OPT]")]
    options: Vec<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (examples: 1s, 500ms, 2m)"))
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

fn parse_mode(s: &str) -> Result<u16, String> {
    u16::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0644"))
}

/// Standard mount options that mean nothing here (fstab, mount(8)).
const IGNORED_FSTAB: &[&str] = &[
    "rw", "defaults", "nofail", "_netdev", "auto", "noauto", "user", "users", "nouser", "exec",
    "noexec", "suid", "nosuid", "dev", "nodev", "async", "atime", "noatime", "relatime",
];

/// Turns `-o a=b,c` into `--a=b --c` so fstab-style options go through the same parser.
fn expand_fstab_options(args: Vec<String>) -> Vec<String> {
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
            if IGNORED_FSTAB.contains(&opt) {
                continue;
            }
            let (name, value) = opt
                .split_once('=')
                .map_or((opt, None), |(n, v)| (n, Some(v)));
            let name = if name == "ro" {
                "read-only".to_string()
            } else {
                name.replace('_', "-")
            };
            out.push(match value {
                Some(v) => format!("--{name}={v}"),
                None => format!("--{name}"),
            });
        }
    }
    out
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

/// Logs go to stderr, or to `log_file` (appended) when given; colour only on a terminal.
fn init_tracing(log_file: Option<&std::path::Path>) -> Result<(), String> {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match log_file {
        Some(path) => {
            let file = open_log(path)?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init();
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
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
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/log"))
                .join(".local/state")
        });
    base.join("appendfs/mount.log")
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(expand_fstab_options(std::env::args().collect()));
    if let Command::Mount(args) = &cli.command {
        if !args.foreground {
            return daemonize(args.log_file.clone(), default_log_file());
        }
    }
    let log_file = match &cli.command {
        Command::Mount(args) => args.log_file.clone(),
        Command::Serve(_) => None,
    };
    if let Err(e) = init_tracing(log_file.as_deref()) {
        eprintln!("appendfs: {e}");
        return ExitCode::FAILURE;
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
        Command::Mount(args) => runtime.block_on(mount(args)),
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

async fn mount(args: MountArgs) -> anyhow::Result<()> {
    use appendfs::client::CreateOptions;
    use appendfs::fs::mount::{self as m, MountOptions};

    let prepared = (|| -> anyhow::Result<MountOptions> {
        let (bucket, prefix) = m::parse_bucket_url(&args.url)?;
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(MountOptions {
            credentials: appendfs::client::CredentialOptions::for_bucket(&bucket),
            bucket,
            prefix,
            mountpoint: args.mountpoint.clone(),
            endpoint: args.endpoint.clone(),
            region: args.region.clone(),
            path_style: args.path_style,
            read_only: args.read_only,
            flush_interval: args.flush_interval,
            append_chunk: args.append_chunk,
            metadata_ttl: args.metadata_ttl,
            cache_size: args.cache_size,
            max_dirty: args.max_dirty,
            uid: args.uid.unwrap_or(uid),
            gid: args.gid.unwrap_or(gid),
            file_mode: args.file_mode,
            dir_mode: args.dir_mode,
            allow_other: args.allow_other,
            embedded: args
                .embedded
                .as_ref()
                .map(|d| (!d.is_empty()).then(|| PathBuf::from(d))),
            create: CreateOptions {
                acl: args.acl.clone(),
                storage_class: args.storage_class.clone(),
                server_side_encryption: args.sse.clone(),
                ..CreateOptions::default()
            },
        })
    })();
    let opts = match prepared {
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
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: flushing and unmounting"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: flushing and unmounting"); break; }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if mounted.ended() {
                        tracing::info!("unmounted");
                        break;
                    }
                }
            }
        }
    }
    let problems = mounted.shutdown().await;
    if problems.is_empty() {
        Ok(())
    } else {
        for p in &problems {
            tracing::error!("{p}");
        }
        anyhow::bail!(
            "{} buffered range(s) could not be appended:\n{}",
            problems.len(),
            problems.join("\n")
        )
    }
}
