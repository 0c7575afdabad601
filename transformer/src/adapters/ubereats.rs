//! Uber Eats: the webhook is a notification only (`orders.notification`,
//! `orders.cancel`, ...: `{event_id, event_type, meta{user_id, resource_id},
//! resource_href}`); the order itself must be fetched from
//! `GET /v2/eats/order/{id}` with an OAuth token. This hub does not fetch
//! yet, so every notification is refused as `fetch_required`, naming the
//! event and the order, and waits in the DLQ: replaying it once fetching
//! exists converts it. No order is made up from the notification.

use serde::Deserialize;

use super::Adapter;
use crate::convert::{ConvertError, Draft, Input, Problems, excerpt};

pub struct UberEats;

#[derive(Deserialize)]
struct Notification {
    event_type: String,
    meta: Meta,
    #[serde(default)]
    #[allow(dead_code)]
    resource_href: Option<String>,
}

#[derive(Deserialize)]
struct Meta {
    resource_id: String,
}

impl Adapter for UberEats {
    fn convert(&self, input: &Input<'_>, _: &mut Problems) -> Result<Draft, ConvertError> {
        let n: Notification = input.parse()?;
        Err(ConvertError::FetchRequired(format!(
            "ubereats sent only a notification ({} for order {}): the order must be fetched from the uber eats api, which this hub does not do yet",
            excerpt(n.event_type.trim()),
            excerpt(n.meta.resource_id.trim()),
        )))
    }
}
