//! A pull kept open on a work consumer, sized by the worker's free handler
//! slots: the worker asks for exactly as many messages as it can start, on
//! one inbox for its whole life, instead of a new pull request (and a new
//! inbox subscription) after each batch.
//!
//! Contract:
//! - [`OpenPull::top_up`] asks for more only while what was asked for and
//!   not yet delivered (`outstanding`) is below the free slots, so every
//!   message that arrives has a slot waiting and none sits in a client
//!   buffer while its `ack_wait` runs. It asks when nothing is outstanding,
//!   or when the gap reaches a quarter of the slots (fewer, larger requests).
//! - Requests expire after `expires`; the server then says how many it did
//!   not deliver (`408`, `Nats-Pending-Messages`), and they are no longer
//!   outstanding. While a request waits the server sends idle heartbeats;
//!   silence for two of them means the requests are gone (a reconnect), so
//!   nothing counts as outstanding any more and the worker asks again.
//! - [`OpenPull::close`] unsubscribes with a drain and returns the messages
//!   the server sent before it saw the unsubscribe, so the worker handles
//!   them instead of leaving them to come back after `ack_wait`. The server
//!   drops a waiting request once its inbox has no interest. (async-nats
//!   ends the drain when its unsubscribe is written, not when the server
//!   confirms it: a message already on the wire at that instant is lost to
//!   this process and redelivered after `ack_wait`, never lost.)

use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull::BatchConfig};
use async_nats::{StatusCode, Subject, Subscriber};
use futures::StreamExt;
use tokio::time::Instant;

/// The server's count of a finished request's undelivered messages.
const PENDING_MESSAGES: &str = "Nats-Pending-Messages";

/// Why the pull could not go on as it was.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("cannot subscribe the pull inbox: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    #[error("pull request not sent: {0}")]
    Request(#[source] jetstream::consumer::pull::BatchRequestError),
    #[error("no message or heartbeat for {0:?}; asking again")]
    Silent(Duration),
    #[error("consumer answered {status}: {description}")]
    Status { status: u16, description: String },
    #[error("the pull inbox was closed")]
    Closed,
}

/// One inbox, topped-up pull requests on it.
pub struct OpenPull {
    consumer: PullConsumer,
    js: jetstream::Context,
    inbox: Subject,
    sub: Subscriber,
    /// Messages asked for that neither arrived nor were given up by the server.
    outstanding: usize,
    /// Ask again only for at least this many, unless nothing is outstanding.
    min_request: usize,
    expires: Duration,
    heartbeat: Duration,
    last_heard: Instant,
}

impl OpenPull {
    /// Subscribes the inbox; asks for nothing yet. `slots` is the worker's
    /// number of handlers, `expires` how long one request waits.
    pub async fn open(
        client: &async_nats::Client,
        js: &jetstream::Context,
        consumer: PullConsumer,
        slots: usize,
        expires: Duration,
    ) -> Result<OpenPull, PullError> {
        let inbox = Subject::from(client.new_inbox());
        let sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(PullError::Subscribe)?;
        // The server wants the heartbeat well inside the expiry.
        let heartbeat = (expires / 2).min(Duration::from_secs(5));
        Ok(OpenPull {
            consumer,
            js: js.clone(),
            inbox,
            sub,
            outstanding: 0,
            min_request: (slots / 4).max(1),
            expires,
            heartbeat,
            last_heard: Instant::now(),
        })
    }

    /// Asks for messages up to `free` slots (see the module contract).
    pub async fn top_up(&mut self, free: usize) -> Result<(), PullError> {
        let gap = free.saturating_sub(self.outstanding);
        if gap == 0 || (self.outstanding > 0 && gap < self.min_request) {
            return Ok(());
        }
        let request = BatchConfig {
            batch: gap,
            expires: Some(self.expires),
            idle_heartbeat: self.heartbeat,
            ..Default::default()
        };
        self.consumer
            .request_batch(request, self.inbox.clone())
            .await
            .map_err(PullError::Request)?;
        if self.outstanding == 0 {
            // The silence clock starts with the first request waiting.
            self.last_heard = Instant::now();
        }
        self.outstanding += gap;
        Ok(())
    }

    /// The next message, or `None` when a request ended without it (then
    /// the caller tops up again). Cancel-safe: nothing is lost if the future
    /// is dropped while it waits.
    pub async fn next(&mut self) -> Result<Option<jetstream::Message>, PullError> {
        loop {
            let silence = self.heartbeat * 2;
            let waiting = self.outstanding > 0;
            let msg = tokio::select! {
                m = self.sub.next() => m.ok_or(PullError::Closed)?,
                _ = tokio::time::sleep_until(self.last_heard + silence), if waiting => {
                    self.outstanding = 0;
                    self.last_heard = Instant::now();
                    return Err(PullError::Silent(silence));
                }
            };
            self.last_heard = Instant::now();
            match msg.status {
                None | Some(StatusCode::OK) => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    return Ok(Some(jetstream::Message {
                        message: msg,
                        context: self.js.clone(),
                    }));
                }
                Some(StatusCode::IDLE_HEARTBEAT) => continue,
                Some(status) => {
                    let undelivered = msg
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(PENDING_MESSAGES))
                        .and_then(|v| v.as_str().parse::<usize>().ok());
                    match undelivered {
                        // A request ended (expired, or the server finished
                        // it early): the rest of it is not coming.
                        Some(n) => {
                            self.outstanding = self.outstanding.saturating_sub(n);
                            if status != StatusCode::TIMEOUT {
                                tracing::debug!(
                                    status = status.as_u16(),
                                    description = msg.description.as_deref().unwrap_or(""),
                                    "pull request ended early"
                                );
                            }
                            return Ok(None);
                        }
                        // Refused or gone without an account of it: ask for
                        // everything again after the caller's pause.
                        None => {
                            self.outstanding = 0;
                            return Err(PullError::Status {
                                status: status.as_u16(),
                                description: msg.description.unwrap_or_default(),
                            });
                        }
                    }
                }
            }
        }
    }

    /// Unsubscribes and returns the messages that had already arrived.
    pub async fn close(mut self) -> Vec<jetstream::Message> {
        let mut left = Vec::new();
        if let Err(e) = self.sub.drain().await {
            tracing::debug!(error = %e, "pull inbox drain failed");
            return left;
        }
        let read = async {
            while let Some(msg) = self.sub.next().await {
                if matches!(msg.status, None | Some(StatusCode::OK)) {
                    left.push(jetstream::Message {
                        message: msg,
                        context: self.js.clone(),
                    });
                }
            }
        };
        // The drain ends with the server's PONG; bounded in case the
        // connection is gone.
        if tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .is_err()
        {
            tracing::debug!("pull inbox drain did not finish");
        }
        left
    }
}
