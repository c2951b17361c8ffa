//! What the shared remote-engine parts call on NATS: one core subscription per received channel
//! (with its receive task), the canary round trip, confirming re-subscriptions after a reconnect,
//! and closing.

use crate::codec::hex;
use crate::config::MAX_HISTORY;
use crate::engine::{lock, NatsEngine};
use crate::loops::forward;
use crate::util::call;
use async_nats::{Client, Subscriber};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::{Canary, ChannelName, EngineError, LinkState, RemoteBackend, CANARY_WAIT};

#[async_trait]
impl RemoteBackend for NatsEngine {
    const KIND: &'static str = "nats";
    const COUNTERS: &'static [&'static str] = &[
        "publish_retries",
        "slow_consumers",
        "bad_messages",
        "latest_failures",
    ];
    /// Everything a channel keeps: a namespace keeps at most this many.
    const RECOVER_LIMIT: usize = MAX_HISTORY;
    const RECOVER_CONCURRENCY: usize = 16;

    async fn listen(&self, channel: &ChannelName) -> Result<(), EngineError> {
        let subject = self.fanout_subject(&hex(channel.as_str()));
        let sub = call(
            self.timeout(),
            "nats subscribe failed",
            self.client.subscribe(subject),
        )
        .await?;
        call(self.timeout(), "nats flush failed", self.client.flush()).await?;
        let stop = self.stop.child_token();
        if let Some(old) = lock(&self.subs).insert(channel.clone(), stop.clone()) {
            old.cancel();
        }
        self.tasks
            .spawn(forward(self.remote.clone(), channel.clone(), sub, stop));
        Ok(())
    }

    async fn unlisten(&self, channel: &ChannelName) -> Result<(), EngineError> {
        if let Some(stop) = lock(&self.subs).remove(channel) {
            stop.cancel();
        }
        Ok(())
    }

    async fn canary(&self) -> Canary {
        let ok = {
            let mut canary = self.canary.lock().await;
            canary_round_trip(&self.client, &self.canary_subject, &mut canary).await
        };
        let state = match self.client.connection_state() {
            async_nats::connection::State::Connected => LinkState::Connected,
            async_nats::connection::State::Disconnected => LinkState::Disconnected,
            async_nats::connection::State::Pending => LinkState::Connecting,
        };
        Canary {
            came_back: ok && state == LinkState::Connected,
            state,
        }
    }

    /// The client re-subscribed by itself before anything else on the new connection; once the
    /// server answered this flush, everything newer than a read made now arrives live.
    async fn resubscribe(&self) -> Result<(), EngineError> {
        call(self.timeout(), "nats flush failed", self.client.flush()).await
    }

    async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Publishes a nonce on the canary subject and waits for it to come back.
pub(crate) async fn canary_round_trip(
    client: &Client,
    subject: &str,
    canary: &mut Subscriber,
) -> bool {
    let nonce = Bytes::from(format!("{:016x}", fastrand::u64(..)));
    let trip = async {
        if client
            .publish(subject.to_owned(), nonce.clone())
            .await
            .is_err()
        {
            return false;
        }
        while let Some(m) = canary.next().await {
            if m.payload == nonce {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(CANARY_WAIT, trip)
        .await
        .unwrap_or(false)
}
