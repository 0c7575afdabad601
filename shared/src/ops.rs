//! The ops server every binary runs on `OPS_ADDR`: `/health` (the process
//! is alive), `/ready` (it can do its job: NATS connected, streams present,
//! its loops running) and `/metrics` (Prometheus text).
//!
//! Liveness never depends on NATS: a NATS rolling restart must not turn into
//! a restart storm of every worker. Readiness does.
//!
//! [`Readiness`] is always here; the server ([`routes`], [`serve`]) needs the
//! `ops-server` feature (warp), which a client such as the CLI leaves off.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[cfg(feature = "ops-server")]
use std::net::SocketAddr;

#[cfg(feature = "ops-server")]
use prometheus_client::registry::Registry;
#[cfg(feature = "ops-server")]
use tokio_util::sync::CancellationToken;
#[cfg(feature = "ops-server")]
use warp::Filter;
#[cfg(feature = "ops-server")]
use warp::http::StatusCode;

/// What a detail of `/ready` shows now.
type Detail = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Named readiness conditions; ready when NATS is connected and every
/// condition holds. Details (the config's reload state) are shown beside
/// them without deciding readiness.
#[derive(Clone, Default)]
pub struct Readiness {
    client: Arc<Mutex<Option<async_nats::Client>>>,
    checks: Arc<Mutex<BTreeMap<&'static str, Arc<AtomicBool>>>>,
    details: Arc<Mutex<BTreeMap<&'static str, Detail>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Readiness also requires this client to be connected.
    pub fn watch_client(&self, client: async_nats::Client) {
        *self.client.lock().expect("readiness lock") = Some(client);
    }

    /// A condition, initially false; the returned flag sets it.
    pub fn condition(&self, name: &'static str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.checks
            .lock()
            .expect("readiness lock")
            .insert(name, flag.clone());
        flag
    }

    /// Adds a condition owned elsewhere.
    pub fn add_condition(&self, name: &'static str, flag: Arc<AtomicBool>) {
        self.checks
            .lock()
            .expect("readiness lock")
            .insert(name, flag);
    }

    /// Shows `detail()` under `name` in the report; readiness ignores it.
    pub fn add_detail(
        &self,
        name: &'static str,
        detail: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) {
        self.details
            .lock()
            .expect("readiness lock")
            .insert(name, Arc::new(detail));
    }

    /// Whether ready, and the state of each condition and detail.
    pub fn report(&self) -> (bool, serde_json::Value) {
        let mut ok = true;
        let mut map = serde_json::Map::new();
        if let Some(c) = self.client.lock().expect("readiness lock").as_ref() {
            let connected = c.connection_state() == async_nats::connection::State::Connected;
            ok &= connected;
            map.insert("nats_connected".into(), connected.into());
        } else {
            ok = false;
            map.insert("nats_connected".into(), false.into());
        }
        for (name, flag) in self.checks.lock().expect("readiness lock").iter() {
            let v = flag.load(Ordering::Relaxed);
            ok &= v;
            map.insert((*name).into(), v.into());
        }
        for (name, detail) in self.details.lock().expect("readiness lock").iter() {
            map.insert((*name).into(), detail());
        }
        (ok, serde_json::Value::Object(map))
    }
}

/// `/health`, `/ready` and `/metrics` as a warp filter, for binaries that
/// also serve them on their main port (the ingress).
#[cfg(feature = "ops-server")]
pub fn routes(
    registry: Arc<Registry>,
    readiness: Readiness,
) -> impl Filter<Extract = (impl warp::Reply,), Error = warp::Rejection> + Clone + Send + Sync + 'static
{
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));
    let ready = warp::path!("ready").and(warp::get()).map(move || {
        let (ok, detail) = readiness.report();
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(
            warp::reply::json(&serde_json::json!({"ready": ok, "checks": detail})),
            status,
        )
    });
    let metrics = warp::path!("metrics").and(warp::get()).map(move || {
        warp::reply::with_header(
            crate::telemetry::encode(&registry),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    });
    health.or(ready).or(metrics)
}

/// Binds `addr` (port 0 picks one) and serves [`routes`] until `shutdown`;
/// returns the bound address and the server task.
#[cfg(feature = "ops-server")]
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let server = warp::serve(routes(registry, readiness))
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await });
    let task = tokio::spawn(async move { server.run().await });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detail_shows_beside_the_conditions_without_deciding_readiness() {
        let r = Readiness::new();
        r.condition("streams").store(true, Ordering::Relaxed);
        r.add_detail(
            "config",
            || serde_json::json!({"ok": false, "generation": 3}),
        );
        let (ok, detail) = r.report();
        // Not ready only because no NATS client is watched.
        assert!(!ok);
        assert_eq!(
            detail,
            serde_json::json!({
                "nats_connected": false,
                "streams": true,
                "config": {"ok": false, "generation": 3},
            })
        );
    }
}
