//! Stream setup against a real server: idempotent, updates what can change,
//! refuses what cannot, and only checks when it does not manage.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use orderhub_tests::*;
use shared::config::{StreamOverride, StreamSettings};
use shared::streams::{Applied, Definitions, SetupError, ensure_stream};

fn settings(o: StreamOverride) -> StreamSettings {
    let mut s = StreamSettings::default();
    s.overrides.insert("WEBHOOKS".into(), o);
    s
}

#[tokio::test]
async fn setup_creates_then_leaves_alone_then_updates_in_place() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = jetstream::new(nats.client().await?);
    let defs = Definitions::load(&StreamSettings::default());
    let def = defs.stream("WEBHOOKS");
    assert_eq!(ensure_stream(&js, def, true).await?, Applied::Created);
    assert_eq!(ensure_stream(&js, def, true).await?, Applied::Unchanged);

    let longer = Definitions::load(&settings(StreamOverride {
        max_age: Some(Duration::from_secs(14 * 86400)),
        ..Default::default()
    }));
    assert_eq!(
        ensure_stream(&js, longer.stream("WEBHOOKS"), true).await?,
        Applied::Updated
    );
    let info = js.get_stream("WEBHOOKS").await?.info().await?.clone();
    assert_eq!(info.config.max_age, Duration::from_secs(14 * 86400));
    assert_eq!(info.config.discard, stream::DiscardPolicy::New);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(3600));
    Ok(())
}

#[tokio::test]
async fn an_incompatible_existing_stream_is_refused_by_name_and_field() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = jetstream::new(nats.client().await?);
    let memory = Definitions::load(&settings(StreamOverride {
        storage: Some("memory".into()),
        ..Default::default()
    }));
    ensure_stream(&js, memory.stream("WEBHOOKS"), true).await?;
    let defs = Definitions::load(&StreamSettings::default());
    let err = ensure_stream(&js, defs.stream("WEBHOOKS"), true)
        .await
        .unwrap_err();
    assert!(err.is_permanent());
    assert_eq!(
        err.to_string(),
        "stream WEBHOOKS exists with storage memory, the definition wants file: JetStream cannot change it in place; migrate the stream or change the definition"
    );
    // Nothing was changed.
    let info = js.get_stream("WEBHOOKS").await?.info().await?.clone();
    assert_eq!(info.config.storage, stream::StorageType::Memory);
    Ok(())
}

#[tokio::test]
async fn without_management_streams_are_only_checked() -> anyhow::Result<()> {
    let nats = NatsServer::start()?;
    let js = jetstream::new(nats.client().await?);
    let defs = Definitions::load(&StreamSettings::default());
    let err = ensure_stream(&js, defs.stream("ORDERS"), false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SetupError::Missing(ref s) if s == "ORDERS"),
        "{err}"
    );
    assert!(
        js.get_stream("ORDERS").await.is_err(),
        "nothing was created"
    );
    ensure_stream(&js, defs.stream("ORDERS"), true).await?;
    assert_eq!(
        ensure_stream(&js, defs.stream("ORDERS"), false).await?,
        Applied::Checked
    );
    Ok(())
}
