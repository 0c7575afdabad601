//! The fake Uber Eats and Wolt API (`orderhub_tests::fake_provider`) as a
//! process, for `scripts/dev-up` and for trying the hub's pull path by
//! hand: accepts the credentials it is given, serves the orders found under
//! `--orders`, and is driven further through its `/_fake/` routes (orders,
//! faults, token expiry, stats). Prints one line on stdout when it listens
//! (`fake provider listening on http://...`; what it loaded goes to stderr)
//! and serves until SIGTERM or SIGINT. Secrets are never printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use orderhub_tests::fake_provider::FakeProvider;

#[derive(Debug, Parser)]
#[command(about = "A fake Uber Eats and Wolt API for local runs and tests")]
struct Args {
    /// Where to listen
    #[arg(long, env = "FAKE_PROVIDER_ADDR", default_value = "127.0.0.1:8099")]
    addr: SocketAddr,
    /// A fixtures directory: serves every <dir>/<provider>/fetched/*.json
    #[arg(long, env = "FAKE_PROVIDER_ORDERS")]
    orders: Option<PathBuf>,
    /// The Uber client id to accept
    #[arg(long, env = "FAKE_UBER_CLIENT_ID")]
    uber_client_id: Option<String>,
    /// Its client secret
    #[arg(long, env = "FAKE_UBER_CLIENT_SECRET", hide_env_values = true)]
    uber_client_secret: Option<String>,
    /// The Wolt venue's client id to accept
    #[arg(long, env = "FAKE_WOLT_CLIENT_ID")]
    wolt_client_id: Option<String>,
    /// Its client secret
    #[arg(long, env = "FAKE_WOLT_CLIENT_SECRET", hide_env_values = true)]
    wolt_client_secret: Option<String>,
    /// The venue's first refresh token (single-use, as Wolt's)
    #[arg(long, env = "FAKE_WOLT_REFRESH_TOKEN", hide_env_values = true)]
    wolt_refresh_token: Option<String>,
    /// Lifetime of Uber tokens in seconds (Uber: 30 days)
    #[arg(long, env = "FAKE_UBER_EXPIRES_IN", default_value_t = 2_592_000)]
    uber_expires_in: u64,
    /// Lifetime of Wolt access tokens in seconds (Wolt: 1 hour)
    #[arg(long, env = "FAKE_WOLT_EXPIRES_IN", default_value_t = 3600)]
    wolt_expires_in: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let fake = FakeProvider::start_on(args.addr).await?;
    fake.set_uber_expires_in(Duration::from_secs(args.uber_expires_in));
    fake.set_wolt_expires_in(Duration::from_secs(args.wolt_expires_in));
    match (&args.uber_client_id, &args.uber_client_secret) {
        (Some(id), Some(secret)) => {
            fake.add_uber_client(id, secret);
            eprintln!("fake provider: Uber client {id:?} accepted");
        }
        (None, None) => {}
        _ => bail!("--uber-client-id and --uber-client-secret go together"),
    }
    match (
        &args.wolt_client_id,
        &args.wolt_client_secret,
        &args.wolt_refresh_token,
    ) {
        (Some(id), Some(secret), Some(refresh)) => {
            fake.add_wolt_venue(id, secret, refresh);
            eprintln!("fake provider: Wolt venue client {id:?} accepted");
        }
        (None, None, None) => {}
        _ => bail!("--wolt-client-id, --wolt-client-secret and --wolt-refresh-token go together"),
    }
    if let Some(dir) = &args.orders {
        let n = fake
            .load_orders(dir)
            .with_context(|| format!("--orders {}", dir.display()))?;
        eprintln!("fake provider: {n} orders from {}", dir.display());
    }
    println!("fake provider listening on {}", fake.url());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let mut fake = fake;
    fake.down().await;
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("fake-provider: {e:#}");
        std::process::exit(1);
    }
}
