//! The fake provider API (`orderhub_tests::fake_provider`: Uber Eats, Wolt,
//! Talabat, Deliveroo, Just Eat) as a process, for `scripts/dev-up` and for
//! trying the hub's pull and status paths by hand: accepts the credentials
//! it is given, serves the orders found under `--orders`, takes status
//! calls, and is driven further through its `/_fake/` routes (orders,
//! credentials, faults, token expiry, stats, status calls). Prints one line
//! on stdout when it listens (`fake provider listening on http://...`; what
//! it loaded goes to stderr) and serves until SIGTERM or SIGINT. Secrets
//! are never printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use orderhub_tests::fake_provider::FakeProvider;

#[derive(Debug, Parser)]
#[command(
    about = "A fake Uber Eats, Wolt, Talabat, Deliveroo and Just Eat API for local runs and tests"
)]
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
    /// The Talabat middleware login's username to accept
    #[arg(long, env = "FAKE_TALABAT_USERNAME")]
    talabat_username: Option<String>,
    /// Its password
    #[arg(long, env = "FAKE_TALABAT_PASSWORD", hide_env_values = true)]
    talabat_password: Option<String>,
    /// The Deliveroo client id to accept
    #[arg(long, env = "FAKE_DELIVEROO_CLIENT_ID")]
    deliveroo_client_id: Option<String>,
    /// Its client secret
    #[arg(long, env = "FAKE_DELIVEROO_CLIENT_SECRET", hide_env_values = true)]
    deliveroo_client_secret: Option<String>,
    /// A Just Eat API key to accept (JET Connect and the partner API)
    #[arg(long, env = "FAKE_JUSTEAT_KEY", hide_env_values = true)]
    justeat_key: Option<String>,
    /// Lifetime of Uber tokens in seconds (Uber: 30 days)
    #[arg(long, env = "FAKE_UBER_EXPIRES_IN", default_value_t = 2_592_000)]
    uber_expires_in: u64,
    /// Lifetime of Wolt access tokens in seconds (Wolt: 1 hour)
    #[arg(long, env = "FAKE_WOLT_EXPIRES_IN", default_value_t = 3600)]
    wolt_expires_in: u64,
    /// Lifetime of Talabat tokens in seconds
    #[arg(long, env = "FAKE_TALABAT_EXPIRES_IN", default_value_t = 1800)]
    talabat_expires_in: u64,
    /// Lifetime of Deliveroo tokens in seconds (Deliveroo: 5 minutes)
    #[arg(long, env = "FAKE_DELIVEROO_EXPIRES_IN", default_value_t = 300)]
    deliveroo_expires_in: u64,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let fake = FakeProvider::start_on(args.addr).await?;
    fake.set_uber_expires_in(Duration::from_secs(args.uber_expires_in));
    fake.set_wolt_expires_in(Duration::from_secs(args.wolt_expires_in));
    fake.set_talabat_expires_in(Duration::from_secs(args.talabat_expires_in));
    fake.set_deliveroo_expires_in(Duration::from_secs(args.deliveroo_expires_in));
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
    match (&args.talabat_username, &args.talabat_password) {
        (Some(user), Some(password)) => {
            fake.add_talabat_user(user, password);
            eprintln!("fake provider: Talabat user {user:?} accepted");
        }
        (None, None) => {}
        _ => bail!("--talabat-username and --talabat-password go together"),
    }
    match (&args.deliveroo_client_id, &args.deliveroo_client_secret) {
        (Some(id), Some(secret)) => {
            fake.add_deliveroo_client(id, secret);
            eprintln!("fake provider: Deliveroo client {id:?} accepted");
        }
        (None, None) => {}
        _ => bail!("--deliveroo-client-id and --deliveroo-client-secret go together"),
    }
    if let Some(key) = &args.justeat_key {
        fake.add_justeat_key(key);
        eprintln!("fake provider: a Just Eat key accepted");
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
