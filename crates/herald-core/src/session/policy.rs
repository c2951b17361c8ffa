//! Policy: what this connection may do (permissions through `ChannelsConfig::permits`, the
//! per-connection and per-user rates) and the requests that are only policy plus one engine
//! call (publish, history, presence).

use super::state::Session;
use super::types::SessionError;
use crate::{
    Action, AppProxy, ChannelName, Denied, Grants, HistoryPage, HistoryQuery, Identity, Prepared,
    ProxyCall, ProxyVerdict, Publication, Publisher, Stats, Take,
};
use herald_protocol::{Member, StreamPosition};
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::time::Instant;

impl Session {
    /// Takes one from the connection's subscribe budget (a subscribe, an `auth` request, or a
    /// subscription token that failed to verify, so a client cannot make the node verify
    /// signatures without bound); a refusal is counted in `refused.subscribe_rate`.
    pub fn charge_token_check(&mut self) -> Result<(), SessionError> {
        self.charge_subscribe()
    }

    /// Takes one from the subscribe budget (`connection.subscribe_per_minute`).
    pub(super) fn charge_subscribe(&mut self) -> Result<(), SessionError> {
        let rate = self.limits.subscribe_per_minute;
        let taken = self.subscribe_tokens.take(rate, 60.0, Instant::now());
        self.refuse_unless(taken, &self.node.stats.refused.subscribe_rate, || {
            SessionError::SubscribeRateLimited(rate)
        })
    }

    /// Refuses a token check while the subscribe budget is spent (without charging).
    pub fn may_check_token(&self) -> Result<(), SessionError> {
        let rate = self.limits.subscribe_per_minute;
        let left = self.subscribe_tokens.has_one(rate, 60.0, Instant::now());
        self.refuse_unless(left, &self.node.stats.refused.subscribe_rate, || {
            SessionError::SubscribeRateLimited(rate)
        })
    }

    /// Takes one from the connection's publish budget (`connection.publish_per_minute`).
    fn charge_publish(&mut self) -> Result<(), SessionError> {
        let rate = self.limits.publish_per_minute;
        let taken = self.publish_tokens.take(rate, 60.0, Instant::now());
        self.refuse_unless(taken, &self.node.stats.refused.publish_rate, || {
            SessionError::RateLimited(rate)
        })
    }

    /// The one shape of every budget check: `Ok` when `allowed`, else the refusal, counted.
    fn refuse_unless(
        &self,
        allowed: bool,
        counter: &AtomicU64,
        refusal: impl FnOnce() -> SessionError,
    ) -> Result<(), SessionError> {
        if allowed {
            return Ok(());
        }
        counter.fetch_add(1, Relaxed);
        Err(refusal())
    }

    /// Whether the connection may do `action` on `channel` (one call to
    /// `ChannelsConfig::permits`); a refusal is counted in `refused.permission`.
    pub(super) fn permit(&self, action: Action, channel: &ChannelName) -> Result<(), SessionError> {
        if self.operator && action != Action::Publish {
            return Ok(());
        }
        let who = self.identity.as_deref();
        let mut decision = self.node.channels.permits(action, channel, who);
        // A channel subscribed with a subscription token is readable as that token granted it.
        if decision.is_err()
            && matches!(action, Action::History | Action::Presence)
            && self
                .subs
                .iter()
                .any(|s| s.channel == *channel && s.by_subscription_token)
        {
            if let Ok(grant) = Grants::new([channel.as_str()]) {
                decision = self
                    .node
                    .channels
                    .permits_granted(action, channel, who, Some(&grant));
            }
        }
        decision.map_err(|d| {
            self.node.stats.refused.permission.fetch_add(1, Relaxed);
            match action {
                Action::Publish => SessionError::PublishDenied(d),
                _ => SessionError::Denied(d),
            }
        })
    }

    /// The subscribe check with a subscription token's grants in place of the connection's.
    pub(super) fn permit_granted(
        &self,
        channel: &ChannelName,
        grant: &Identity,
    ) -> Result<(), SessionError> {
        let Some(me) = &self.identity else {
            self.node.stats.refused.permission.fetch_add(1, Relaxed);
            return Err(SessionError::Denied(Denied::Unauthenticated {
                verb: "use a subscription token for",
                channel: channel.to_string(),
            }));
        };
        if me.user != grant.user {
            self.node.stats.refused.permission.fetch_add(1, Relaxed);
            return Err(SessionError::UserChanged {
                old: me.user.to_string(),
                new: grant.user.to_string(),
            });
        }
        self.node
            .channels
            .permits_granted(Action::Subscribe, channel, Some(me), Some(&grant.subscribe))
            .map_err(|d| {
                self.node.stats.refused.permission.fetch_add(1, Relaxed);
                SessionError::Denied(d)
            })
    }

    /// The checks before a client publish (the namespace must allow it, and the connection
    /// and its user must be within their rates), and the publication prepared to go.
    pub fn prepare_publish(
        &mut self,
        channel: &str,
        event: Option<&str>,
        data: Box<RawValue>,
    ) -> Result<Prepared, SessionError> {
        let name = ChannelName::parse(channel)?;
        self.permit(Action::Publish, &name)?;
        self.charge_publish()?;
        let options = self.node.channels.options(&name);
        let (per_user, burst) = (options.publish_per_minute, options.publish_burst());
        if per_user > 0 {
            let key = match &self.identity {
                Some(i) => format!("{}\n{}", name.namespace(), i.user),
                None => format!("{}\n#{}", name.namespace(), self.conn_id),
            };
            let refused = &self.node.stats.refused;
            let take = self
                .node
                .clients
                .user_rates
                .take_burst(&key, per_user, burst);
            if take == Take::Overflow {
                refused.rate_map_full.fetch_add(1, Relaxed);
            }
            self.refuse_unless(
                take != Take::Limited,
                &refused.namespace_publish_rate,
                || SessionError::NamespaceRateLimited {
                    namespace: name.namespace().to_owned(),
                    per_minute: per_user,
                    burst,
                },
            )?;
        }
        Ok(self.node.publisher.prepare(channel, event, data)?)
    }

    /// Publishes from the client: [`Session::prepare_publish`], then the publish itself.
    pub async fn publish(
        &mut self,
        channel: &str,
        event: Option<&str>,
        data: Box<RawValue>,
    ) -> Result<Arc<Publication>, SessionError> {
        let prepared = self.prepare_publish(channel, event, data)?;
        let proxy = self.publish_proxy_call(&prepared);
        let (publisher, stats) = (self.node.publisher.clone(), self.node.stats.clone());
        publish_through(publisher, stats, prepared, proxy).await
    }

    /// The call to the namespace's publish proxy for `prepared`, if it has one.
    pub(super) fn publish_proxy_call(
        &self,
        prepared: &Prepared,
    ) -> Option<(Arc<dyn AppProxy>, ProxyCall)> {
        self.proxy_call(
            ProxyOp::Publish,
            prepared.channel(),
            Some(prepared.event().as_str()),
            Some(prepared.data()),
        )
    }

    /// The check before a history read: the channel, if the connection may read it.
    pub(super) fn may_read_history(&self, channel: &str) -> Result<ChannelName, SessionError> {
        let channel = ChannelName::parse(channel)?;
        self.permit(Action::History, &channel)?;
        Ok(channel)
    }

    /// Reads history for the client.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, SessionError> {
        let channel = self.may_read_history(channel)?;
        Ok(self
            .node
            .history
            .read(&channel, HistoryQuery { since, limit })
            .await?)
    }

    /// The checks before a presence read: the channel, if the connection may list it and
    /// its namespace keeps presence.
    pub(super) fn may_read_presence(&self, channel: &str) -> Result<ChannelName, SessionError> {
        let channel = ChannelName::parse(channel)?;
        self.permit(Action::Presence, &channel)?;
        if !self.node.channels.options(&channel).presence.tracked() {
            return Err(SessionError::PresenceDisabled(
                channel.namespace().to_owned(),
            ));
        }
        Ok(channel)
    }

    /// Lists presence members of `channel`.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Member>, SessionError> {
        let channel = self.may_read_presence(channel)?;
        Ok(self.node.presence.members(&channel).await?)
    }
}

/// Which proxy a request goes to first.
#[derive(Debug, Clone, Copy)]
pub(super) enum ProxyOp {
    Publish,
    Subscribe,
}

impl Session {
    /// The call to make before `op` on `channel`, where its namespace names a proxy for it and
    /// the node has one.
    pub(super) fn proxy_call(
        &self,
        op: ProxyOp,
        channel: &ChannelName,
        event: Option<&str>,
        data: Option<&RawValue>,
    ) -> Option<(Arc<dyn AppProxy>, ProxyCall)> {
        let options = self.node.channels.options(channel);
        let (url, name) = match op {
            ProxyOp::Publish => (options.publish_proxy.as_ref()?, "publish"),
            ProxyOp::Subscribe => (options.subscribe_proxy.as_ref()?, "subscribe"),
        };
        let proxy = self.node.clients.proxy.clone()?;
        let call = ProxyCall {
            url: url.clone(),
            op: name,
            channel: channel.clone(),
            event: event.map(str::to_owned),
            data: data.map(ToOwned::to_owned),
            user: self.identity.as_ref().map(|i| i.user.to_string()),
            conn_id: self.conn_id.to_string(),
        };
        Some((proxy, call))
    }
}

/// Asks the app's backend; `Ok(Some(data))` when it replaced a publish's data. A refusal or a
/// failure is counted.
pub(super) async fn consult(
    proxy: &dyn AppProxy,
    call: ProxyCall,
    stats: &Stats,
) -> Result<Option<Box<RawValue>>, SessionError> {
    match proxy.ask(call).await {
        ProxyVerdict::Allow => Ok(None),
        ProxyVerdict::AllowWith(data) => Ok(Some(data)),
        ProxyVerdict::Refuse(reason) => {
            stats.refused.proxy_refused.fetch_add(1, Relaxed);
            Err(SessionError::ProxyRefused(reason))
        }
        ProxyVerdict::Failed(why) => {
            stats.refused.proxy_failed.fetch_add(1, Relaxed);
            Err(SessionError::ProxyFailed(why))
        }
    }
}

/// Publishes `prepared`, asking the app's backend first where `proxy` is given (its
/// replacement data goes through the same checks as the client's).
pub(super) async fn publish_through(
    publisher: Arc<Publisher>,
    stats: Arc<Stats>,
    prepared: Prepared,
    proxy: Option<(Arc<dyn AppProxy>, ProxyCall)>,
) -> Result<Arc<Publication>, SessionError> {
    let prepared = match proxy {
        None => prepared,
        Some((proxy, call)) => match consult(&*proxy, call, &stats).await? {
            None => prepared,
            Some(data) => {
                let (channel, event, _) = prepared.into_parts();
                publisher.prepare(channel.as_str(), Some(event.as_str()), data)?
            }
        },
    };
    Ok(publisher.publish(prepared, crate::Source::Client).await?)
}
