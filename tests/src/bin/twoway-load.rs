//! twoway-load: opens many concurrent mutual-TLS sessions against a twoway
//! server without TUN devices, or measures the handshake rate; prints one
//! JSON report on stdout. See twoway_tests::load and scripts/load.sh.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use twoway_tests::load::{self, mint, Client, HandshakesOptions, SessionsOptions};

/// Load generator for a twoway server (sessions held, handshakes per second).
///
/// By default opens --sessions sessions (at most --concurrency handshakes at
/// once), holds them --idle seconds with keepalives only, then --hold seconds
/// with one ICMP echo request per session every --echo-interval-ms to the
/// server's tunnel address, then closes them with a Bye. With --handshakes M
/// it instead does M complete handshakes (TCP, TLS 1.3 with a client
/// certificate, hello, assignment, Bye, close) and reports handshakes/s.
///
/// Clients are the --config files given, plus --identities N identities minted
/// from the CA in --pki DIR (needs --server and --server-name). Session or
/// handshake i uses client i modulo the number of clients. The server's
/// per-source limits (limits.* in server.toml) apply to the generator's one
/// source address.
#[derive(Debug, Parser)]
#[command(name = "twoway-load", version)]
struct Args {
    /// Client configs (IDENTITY.toml as `pki issue` writes them).
    #[arg(long = "config", num_args = 1..)]
    configs: Vec<PathBuf>,
    /// PKI folder (with ca.pem and ca.key) to mint --identities from.
    #[arg(long, requires_all = ["identities", "server", "server_name"])]
    pki: Option<PathBuf>,
    /// Identities to mint (load-0, load-1, ...), each with its own certificate.
    #[arg(long, requires = "pki")]
    identities: Option<usize>,
    /// Name the server certificate carries (for minted identities).
    #[arg(long)]
    server_name: Option<String>,
    /// Server address (host:port), overriding the one in the configs; several,
    /// separated by commas, spread the sessions over the nodes of a cluster.
    #[arg(long)]
    server: Option<String>,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seconds to hold the sessions idle after the ramp-up.
    #[arg(long, default_value_t = 5)]
    idle: u64,
    /// Seconds to then hold them with echo traffic.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// Milliseconds between echo requests of one session.
    #[arg(long, default_value_t = 1000)]
    echo_interval_ms: u64,
    /// File to write the phase into (idle, active, done) as each begins.
    #[arg(long)]
    phase_file: Option<PathBuf>,
    /// Instead of holding sessions: do this many complete handshakes.
    #[arg(long)]
    handshakes: Option<usize>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

const MAX_SESSIONS: usize = 100_000;
const MAX_SECONDS: u64 = 3600;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.sessions == 0 || args.sessions > MAX_SESSIONS {
        bail!("--sessions must be between 1 and {MAX_SESSIONS}");
    }
    if args
        .handshakes
        .is_some_and(|m| m == 0 || m > 10 * MAX_SESSIONS)
    {
        bail!("--handshakes must be between 1 and {}", 10 * MAX_SESSIONS);
    }
    if args.idle + args.hold > MAX_SECONDS {
        bail!("--idle plus --hold must be at most {MAX_SECONDS} seconds");
    }
    if args.echo_interval_ms == 0 {
        bail!("--echo-interval-ms must be at least 1");
    }
    let minted = tempfile::tempdir()?;
    let mut configs = args.configs.clone();
    if let (Some(pki), Some(n), Some(server), Some(server_name)) =
        (&args.pki, args.identities, &args.server, &args.server_name)
    {
        if n == 0 || n > MAX_SESSIONS {
            bail!("--identities must be between 1 and {MAX_SESSIONS}");
        }
        let target = mint::Target {
            server: server.clone(),
            server_name: server_name.clone(),
        };
        configs.extend(mint::mint(pki, "load", n, &target, minted.path())?);
    }
    if configs.is_empty() {
        bail!("no clients: give --config files or --pki with --identities");
    }
    let clients = configs
        .iter()
        .map(|p| Client::load(p, args.server.as_deref()).with_context(|| p.display().to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.enable_all().build()?;
    let report = runtime.block_on(async {
        match args.handshakes {
            Some(m) => {
                load::handshakes(
                    &clients,
                    &HandshakesOptions {
                        handshakes: m,
                        concurrency: args.concurrency,
                    },
                )
                .await
            }
            None => {
                load::sessions(
                    &clients,
                    &SessionsOptions {
                        sessions: args.sessions,
                        concurrency: args.concurrency,
                        idle: Duration::from_secs(args.idle),
                        hold: Duration::from_secs(args.hold),
                        echo_interval: Duration::from_millis(args.echo_interval_ms),
                        phase_file: args.phase_file.clone(),
                    },
                )
                .await
            }
        }
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
