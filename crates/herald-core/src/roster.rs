//! Who is in a channel, as each presence mode shows it (`PresenceMode`): the members the
//! presence store keeps are always connections; here they become users or totals, and a
//! connection's join or leave becomes the push its channel's mode asks for.
//!
//! By user, a `join` goes out when a user's first connection arrives and a `leave` after its
//! last one: the store is read before the join and after the leave, so two connections of one
//! user coming (or going) at the same instant on two nodes can both announce it. Clients treat
//! a user's `join` and `leave` as setting and clearing one entry.

use crate::{
    Broker, ChannelName, ChannelsConfig, EngineError, Hub, Outgoing, PresenceEvent, PresenceKind,
    PresenceMode, PresenceStore,
};
use herald_protocol::{Member, PresenceCounts, ReplyResult, UserPresence};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The user a connection's member stands for, as a `presence = "users"` channel shows it;
/// `None` for a connection without a token.
pub fn user_member(m: &Member) -> Option<Member> {
    Some(Member {
        conn_id: String::new(),
        user_id: Some(m.user_id.clone()?),
        info: m.info.clone(),
        transport: String::new(),
    })
}

/// The totals of `members`.
pub fn counts(members: &[Member]) -> PresenceCounts {
    let (users, _) = users(members);
    PresenceCounts {
        connections: members.len() as u64,
        users: users.len() as u64,
        anonymous: members.iter().filter(|m| m.user_id.is_none()).count() as u64,
    }
}

/// `members` by user (each once, with its connection count), and the anonymous connections'
/// count.
pub fn users(members: &[Member]) -> (Vec<UserPresence>, u64) {
    let mut by_user: BTreeMap<&str, UserPresence> = BTreeMap::new();
    let mut anonymous = 0;
    for m in members {
        let Some(user) = m.user_id.as_deref() else {
            anonymous += 1;
            continue;
        };
        by_user
            .entry(user)
            .or_insert_with(|| UserPresence {
                user_id: user.to_owned(),
                info: m.info.clone(),
                connections: 0,
            })
            .connections += 1;
    }
    (by_user.into_values().collect(), anonymous)
}

/// The `presence` reply for a channel in `mode`.
pub fn presence_result(
    channel: &ChannelName,
    mode: PresenceMode,
    members: Vec<Member>,
) -> ReplyResult {
    let channel = channel.to_string();
    match mode {
        PresenceMode::Users => {
            let (users, anonymous) = users(&members);
            ReplyResult::PresenceUsers {
                channel,
                users,
                anonymous,
            }
        }
        PresenceMode::Counts => ReplyResult::PresenceCounts {
            channel,
            counts: counts(&members),
        },
        PresenceMode::Off | PresenceMode::Connections => ReplyResult::Presence { channel, members },
    }
}

fn holds_user(members: &[Member], user: &str, except: &str) -> bool {
    members
        .iter()
        .any(|m| m.conn_id != except && m.user_id.as_deref() == Some(user))
}

/// Adds `member` to `channel` and tells its subscribers what `mode` asks for.
pub async fn join(
    presence: &dyn PresenceStore,
    broker: &dyn Broker,
    channel: &ChannelName,
    member: Member,
    mode: PresenceMode,
) -> Result<(), EngineError> {
    let first_of_user = match (mode, member.user_id.as_deref()) {
        (PresenceMode::Users, Some(user)) => {
            !holds_user(&presence.members(channel).await?, user, &member.conn_id)
        }
        _ => false,
    };
    presence.join(channel, &member).await?;
    let announce = match mode {
        PresenceMode::Connections => Some(member),
        PresenceMode::Users if first_of_user => user_member(&member),
        _ => None,
    };
    tell(broker, channel, PresenceKind::Join, announce).await
}

/// Removes `member` from `channel` and tells its subscribers what `mode` asks for.
pub async fn leave(
    presence: &dyn PresenceStore,
    broker: &dyn Broker,
    channel: &ChannelName,
    member: Member,
    mode: PresenceMode,
) -> Result<(), EngineError> {
    presence.leave(channel, &member.conn_id).await?;
    gone(presence, broker, channel, member, mode).await
}

/// Tells `channel`'s subscribers that `member`, already removed from the store (its lease
/// expired with its node), is gone, as `mode` asks.
pub async fn gone(
    presence: &dyn PresenceStore,
    broker: &dyn Broker,
    channel: &ChannelName,
    member: Member,
    mode: PresenceMode,
) -> Result<(), EngineError> {
    let announce = match (mode, member.user_id.as_deref()) {
        (PresenceMode::Connections, _) => Some(member),
        (PresenceMode::Users, Some(user)) => {
            let remaining = presence.members(channel).await?;
            if holds_user(&remaining, user, &member.conn_id) {
                None
            } else {
                user_member(&member)
            }
        }
        _ => None,
    };
    tell(broker, channel, PresenceKind::Leave, announce).await
}

/// Pushes `who`'s join or leave to `channel`'s subscribers on every node (nothing for `None`).
async fn tell(
    broker: &dyn Broker,
    channel: &ChannelName,
    kind: PresenceKind,
    who: Option<Member>,
) -> Result<(), EngineError> {
    match who {
        Some(who) => {
            broker
                .publish_presence(PresenceEvent::new(channel.clone(), kind, who))
                .await
        }
        None => Ok(()),
    }
}

/// Most channels one round of [`push_counts`] reads.
const MAX_COUNTED_CHANNELS: usize = 10_000;

/// Every `channels.presence_counts_interval`, tells this node's subscribers of each
/// `presence = "counts"` channel its totals, when they changed since the last round (so a
/// join or leave shows within one interval, and a quiet room costs one store read per round).
/// At most [`MAX_COUNTED_CHANNELS`] channels a round. Returns when `shutdown` is cancelled.
pub async fn push_counts(
    hub: Arc<Hub>,
    channels: Arc<ChannelsConfig>,
    presence: Arc<dyn PresenceStore>,
    shutdown: CancellationToken,
) {
    if !std::iter::once(&channels.defaults)
        .chain(channels.namespaces.values())
        .any(|o| o.presence == PresenceMode::Counts)
    {
        return;
    }
    let mut tick = tokio::time::interval(channels.presence_counts_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: HashMap<ChannelName, PresenceCounts> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut seen = HashMap::with_capacity(last.len());
        for (channel, _) in hub.channels(usize::MAX) {
            if channels.options(&channel).presence != PresenceMode::Counts {
                continue;
            }
            if seen.len() >= MAX_COUNTED_CHANNELS {
                break;
            }
            let members = match presence.members(&channel).await {
                Ok(m) => m,
                Err(error) => {
                    tracing::debug!(channel = %channel, error = %error, "Reading presence totals failed.");
                    continue;
                }
            };
            let now = counts(&members);
            if last.get(&channel) != Some(&now) {
                let event = PresenceEvent::counts(channel.clone(), now);
                hub.fan_out(&channel, &Outgoing::Presence(Arc::new(event)));
            }
            seen.insert(channel, now);
        }
        last = seen;
    }
}
