//! The `appendfs` command: `serve` runs the local OSS-compatible server. See README.md for the
//! command-line contract.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Run the local OSS-compatible server.
    Serve(ServeArgs),
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appendfs: {e:#}");
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
