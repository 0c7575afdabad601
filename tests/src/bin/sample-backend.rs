//! A restaurant backend for trying orderhub locally: accepts the
//! forwarder's POSTs, checks `X-Auth` and the Standard Webhooks signature,
//! and prints one line per order. Not for production: a real backend
//! upserts by `Idempotency-Key`.

use std::net::SocketAddr;
use std::time::SystemTime;

use clap::Parser;
use secrecy::SecretString;
use shared::verify::{Verifier, VerifyOptions};
use warp::Filter;

#[derive(Debug, Parser)]
struct Args {
    /// Where to listen
    #[arg(long, env = "SAMPLE_BACKEND_ADDR", default_value = "127.0.0.1:3001")]
    addr: SocketAddr,
    /// The X-Auth key the hub must send
    #[arg(long, env = "ACME_BACKEND_KEY")]
    backend_key: Option<String>,
    /// The Standard Webhooks secret the hub signs with (whsec_...)
    #[arg(long, env = "ACME_SIGNING_SECRET")]
    signing_secret: Option<String>,
}

fn summary(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return format!("{} bytes (not JSON)", body.len());
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
    let total = v
        .pointer("/totals/total")
        .and_then(|t| t.as_i64())
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into());
    format!(
        "{} {} order {} for {}/{}: {} items, total {} {} (minor units)",
        s("event"),
        s("provider"),
        s("provider_order_id"),
        s("tenant"),
        v.get("branch")
            .and_then(|b| b.as_str())
            .unwrap_or("unmapped branch"),
        v.get("items")
            .and_then(|i| i.as_array())
            .map(|i| i.len())
            .unwrap_or(0),
        total,
        s("currency"),
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let key = args.backend_key.clone();
    let secret = args.signing_secret.clone().map(SecretString::from);
    let route = warp::post()
        .and(warp::path!("api" / "v1" / "orders"))
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |headers: warp::http::HeaderMap, body: bytes::Bytes| {
            let auth_ok = match &key {
                Some(k) => headers.get("x-auth").and_then(|v| v.to_str().ok()) == Some(k.as_str()),
                None => true,
            };
            let signature = match &secret {
                Some(s) => match shared::verify::direct::Direct.verify(
                    &headers,
                    &body,
                    std::slice::from_ref(s),
                    &VerifyOptions::default(),
                    SystemTime::now(),
                ) {
                    Ok(_) => "signature ok",
                    Err(_) => "SIGNATURE INVALID",
                },
                None => "signature not checked",
            };
            let idem = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            if !auth_ok {
                println!("REFUSED (bad X-Auth) {idem}");
                return warp::reply::with_status("bad key", warp::http::StatusCode::UNAUTHORIZED);
            }
            println!("{idem} {signature}: {}", summary(&body));
            warp::reply::with_status("ok", warp::http::StatusCode::OK)
        });
    println!("sample backend on http://{}/api/v1/orders", args.addr);
    warp::serve(route).run(args.addr).await;
}
