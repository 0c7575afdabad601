//! Logging (tracing; JSON in production, pretty on a terminal) and the
//! Prometheus registry every binary exposes on its ops port.
//!
//! Logs go to stdout. Pretty logs are coloured only when stdout is a
//! terminal (and `NO_COLOR` is unset): redirected to a file or a pipe, as
//! `scripts/dev-up` does, they stay plain text that `grep` and `less` read.
//!
//! Metric names are `<stage>_<noun>_<unit>`: each binary registers its
//! metrics under a registry prefixed with its stage name. Labels are bounded
//! sets (provider, outcome, error type); never ids, subjects or error text.

use std::io::IsTerminal;

use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Installs the global tracing subscriber. `RUST_LOG` filters (default
/// `info`). Safe to call more than once (tests): later calls do nothing.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_ansi(colour_wanted()),
            )
            .try_init(),
    };
}

/// Colour codes only for a person at a terminal: a log file full of escape
/// sequences is unreadable (<https://no-color.org>: a non-empty `NO_COLOR`
/// turns colour off).
fn colour_wanted() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    !no_color && std::io::stdout().is_terminal()
}

/// A fresh registry whose metric names start with `<stage>_`.
pub fn registry(stage: &str) -> Registry {
    // A metric name takes no `-`: the `status-sync` stage's metrics are
    // `status_sync_*`.
    Registry::with_prefix(stage.replace('-', "_"))
}

/// Prometheus text exposition of `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// Buckets for durations from 100 µs to about 100 s.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 21)
}
