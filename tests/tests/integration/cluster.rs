//! A 3-node cluster from `nats/cluster.conf`: the streams come up
//! replicated (R3) from the hub config, and a worker keeps handling every
//! message while the stream's leader is SIGKILLed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use orderhub_tests::*;
use shared::worker::{Delivery, Outcome};

#[tokio::test]
async fn replicated_streams_survive_the_loss_of_their_leader() -> anyhow::Result<()> {
    let mut cluster = NatsCluster::start()?;
    let hub = hub_from(&format!(
        "{}\n[streams]\nreplicas = 3\n",
        worker_hub_toml(&["200ms"], 10, "2s")
    ));
    let urls: Vec<async_nats::ServerAddr> = cluster
        .url()
        .split(',')
        .map(|u| u.parse())
        .collect::<Result<_, _>>()?;
    let client = tokio::time::timeout(
        STEP,
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(urls.as_slice()),
    )
    .await??;
    // ensure_streams retries while the cluster elects its meta leader.
    tokio::time::timeout(Duration::from_secs(60), setup_streams(&client, &hub)).await??;
    let js = jetstream::new(client);
    let info = js.get_stream("WEBHOOKS").await?.info().await?.clone();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap_or_default();
    let replicas = info.cluster.map(|c| c.replicas.len()).unwrap_or(0);
    assert_eq!(replicas, 2, "a leader and two followers");

    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    let worker = InProcessWorker::start(
        &cluster.url(),
        &hub,
        FnHandler(move |d: Delivery| {
            s.lock().unwrap().push(d.stream_seq);
            async { Outcome::Ack }
        }),
        8,
    );
    // Providers retry until stored: so does this loop (same Nats-Msg-Id).
    let publish = |i: usize| {
        let js = js.clone();
        async move {
            eventually(Duration::from_secs(30), "a stored publish", || async {
                publish_raw(&js, &format!("wh-{i}"), "{}").await.ok()
            })
            .await
        }
    };
    for i in 0..100 {
        publish(i).await?;
    }
    let node = NatsCluster::index_of(&leader).expect("leader is n1..n3");
    cluster.kill(node);
    for i in 100..200 {
        publish(i).await?;
    }
    eventually(Duration::from_secs(60), "all 200 handled", || async {
        let distinct: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
        (distinct.len() == 200).then_some(())
    })
    .await?;
    let mut s = js.get_stream("WEBHOOKS").await?;
    let info = s.info().await?;
    assert_eq!(info.state.messages, 200, "each webhook stored once");
    assert_ne!(
        info.cluster.as_ref().and_then(|c| c.leader.clone()),
        Some(leader),
        "a new leader took over"
    );
    let handled = seen.lock().unwrap().len();
    println!("cluster: 200 messages, {handled} handler runs across the leader's loss");
    cluster.restart(node)?;
    worker.stop().await
}
