//! `mesh`: validate and explain Istio config, and run the proxy.
#![forbid(unsafe_code)]

/// A status line of `mesh run` (ready, reloads, warnings, errors): plain text on stderr, or
/// with `--log-format json` a JSON log event like every other log line. See [`say`].
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*))
    };
}

mod ca;
mod explain;
mod run;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mesh: Istio's traffic, security and observability policies, for Rust services.
#[derive(Debug, Parser)]
#[command(name = "mesh", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or JSON (one object per line). Levels and targets come from
    /// `RUST_LOG` (default: `info` for `mesh run`, `warn` otherwise), e.g.
    /// `RUST_LOG=mesh::authz=debug,info`.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    log_format: Format,
}

static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Prints a status line (the [`say!`] macro): as written on stderr for people, or as a JSON log
/// event at a level read from the text (`error`, `cannot`, `rejected`: error; `warning`: warn;
/// else info) when logs are JSON, so a log pipeline gets one format.
pub(crate) fn say(message: std::fmt::Arguments<'_>) {
    if !JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        eprintln!("{message}");
        return;
    }
    let text = message.to_string();
    let text = text.strip_prefix("mesh run: ").unwrap_or(&text);
    if text.contains("error") || text.contains("cannot") || text.contains("rejected") {
        tracing::error!(target: "mesh::run", "{text}");
    } else if text.contains("warning") {
        tracing::warn!(target: "mesh::run", "{text}");
    } else {
        tracing::info!(target: "mesh::run", "{text}");
    }
}

/// Structured logs on stderr (the proxy's policy decisions, reloads, certificate rotations).
/// Results a command prints for people stay on stdout.
fn init_logging(format: Format, default_level: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    JSON_LOGS.store(format == Format::Json, std::sync::atomic::Ordering::Relaxed);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Istio YAML files or folders as Istio would (admission) and as `istioctl analyze`
    /// would (warnings). Exit 0 when there is no error, 1 when there is one, 2 for usage or I/O
    /// errors.
    Validate(validate::Args),
    /// Show which VirtualService route a request takes, its destinations and endpoints, and the
    /// policies that apply.
    Route(explain::Args),
    /// A development CA for SPIFFE workload certificates: `init` creates it, `issue` signs a
    /// workload certificate into Istio's file names (cert-chain.pem, key.pem, root-cert.pem).
    Ca(ca::Args),
    /// Run the proxy: outbound (sidecar), inbound (mTLS per PeerAuthentication) and gateway
    /// listeners, and the admin server; the config is reloaded when its files change.
    Run(run::Args),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub(crate) enum Format {
    /// For people.
    #[default]
    Text,
    /// For machines.
    Json,
}

/// Where the config comes from, and how documents are read.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// Namespace of documents without `metadata.namespace`.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// Istio's root namespace (mesh-wide policies).
    #[arg(long, default_value = "istio-system")]
    root_namespace: String,
}

impl ConfigArgs {
    pub(crate) fn loader(&self) -> mesh_config::Loader {
        mesh_config::Loader::new()
            .namespace(self.namespace.clone())
            .root_namespace(self.root_namespace.clone())
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_format, default_level);
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Route(args) => explain::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Run(args) => run::run(args),
    }
}
