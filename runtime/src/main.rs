//! `crius`: the CRI daemon binary. Exit codes: 0 clean shutdown, 1 runtime failure, 2 bad
//! configuration or command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crius_runtime::config::{Config, LogFormat, Overrides};

#[derive(Parser)]
#[command(name = "crius", version, about = "crius: a Kubernetes CRI runtime")]
struct Cli {
    /// Configuration file (default /etc/crius/config.toml; a missing default file means defaults).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Persistent data directory (overrides `root`).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Volatile state directory (overrides `state`).
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRI unix socket path (overrides `listen`); a `unix://` prefix is accepted.
    #[arg(long)]
    listen: Option<String>,
    /// Tracing filter (overrides `log_level`), e.g. `debug` or `crius_runtime=debug,info`.
    #[arg(long)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration as TOML.
    Default,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    if let Some(Command::Config {
        what: ConfigCommand::Default,
    }) = cli.command
    {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let overrides = Overrides {
        root: cli.root,
        state: cli.state,
        listen: cli
            .listen
            .map(|l| PathBuf::from(l.strip_prefix("unix://").unwrap_or(&l))),
        log_level: cli.log_level,
    };
    let config = match Config::load(cli.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("crius: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing(&config) {
        eprintln!("crius: invalid log_level {:?}: {e}", config.log_level);
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("crius: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crius_runtime::daemon::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("crius: {e}");
            // Unusable registry TLS files are bad configuration, found when the store opens.
            match e {
                crius_runtime::daemon::DaemonError::Images(crius_image::StoreError::RegistryTls(_)) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn init_tracing(config: &Config) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::builder().parse(&config.log_level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// glibc gives each thread that allocates under contention an arena of its own, up to eight per
/// core, and memory freed into one arena is not reused by another: the blocking pool's threads,
/// each cloning records and reading stats now and then, left the daemon's RSS megabytes above
/// what it holds. Two arenas keep contention low on the few threads the daemon runs at once.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
