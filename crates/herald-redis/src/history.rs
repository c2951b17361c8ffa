//! Reading history from Redis: one script returns the channel's epoch, top, oldest kept offset
//! and the entries asked for.

use crate::engine::{unavailable, RedisEngine};
use async_trait::async_trait;
use fred::prelude::Value;
use herald_core::{
    ChannelName, EngineError, EventName, HistoryPage, HistoryQuery, HistoryStore, Publication,
};
use herald_protocol::{Epoch, StreamPosition};
use serde_json::value::RawValue;
use std::sync::Arc;

#[async_trait]
impl HistoryStore for RedisEngine {
    async fn read(
        &self,
        channel: &ChannelName,
        query: HistoryQuery,
    ) -> Result<HistoryPage, EngineError> {
        let since = query
            .since
            .as_ref()
            .map_or(String::new(), |s| s.offset.to_string());
        let reply = self
            .eval(
                &self.read_script,
                self.channel_keys(channel),
                [
                    self.state_args().to_vec(),
                    vec![since, query.limit.to_string()],
                ]
                .concat(),
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let malformed = EngineError::Unavailable("redis engine gave a malformed history reply");
        let mut parts = reply.into_array().into_iter();
        let (Some(epoch), Some(top), Some(oldest), Some(entries)) = (
            parts
                .next()
                .and_then(|v| v.as_str().and_then(|e| Epoch::parse(&e).ok())),
            parts.next().and_then(|v| v.as_u64()),
            parts.next().and_then(|v| v.as_u64()),
            parts.next(),
        ) else {
            return Err(malformed);
        };
        let top_position = StreamPosition::new(epoch.clone(), top);
        if let Some(since) = &query.since {
            if let Some(reason) = herald_core::resume_reset(since, &epoch, top, oldest) {
                return Ok(HistoryPage {
                    publications: Vec::new(),
                    top: top_position,
                    reset: Some(reason),
                });
            }
        }
        let mut publications = Vec::new();
        for entry in entries.into_array() {
            let p = decode_entry(channel, &epoch, entry).ok_or(EngineError::Unavailable(
                "redis engine gave a malformed history entry",
            ))?;
            publications.push(p);
        }
        Ok(HistoryPage {
            publications,
            top: top_position,
            reset: None,
        })
    }

    async fn latest(&self, channel: &ChannelName) -> Result<HistoryPage, EngineError> {
        let reply = self
            .eval(
                &self.latest_script,
                self.channel_keys(channel),
                self.state_args().to_vec(),
            )
            .await
            .map_err(|e| unavailable(&e))?;
        let malformed = EngineError::Unavailable("redis engine gave a malformed latest state");
        let mut parts = reply.into_array().into_iter();
        let (Some(epoch), Some(top), Some(fields)) = (
            parts
                .next()
                .and_then(|v| v.as_str().and_then(|e| Epoch::parse(&e).ok())),
            parts.next().and_then(|v| v.as_u64()),
            parts.next(),
        ) else {
            return Err(malformed);
        };
        let mut publications = Vec::new();
        let mut fields = fields.into_array().into_iter();
        while let (Some(event), Some(value)) = (fields.next(), fields.next()) {
            let p = decode_latest(channel, &epoch, &event, &value).ok_or(
                EngineError::Unavailable("redis engine gave a malformed latest state entry"),
            )?;
            publications.push(p);
        }
        publications.sort_by_key(|p| p.position.offset);
        Ok(HistoryPage {
            publications,
            top: StreamPosition::new(epoch, top),
            reset: None,
        })
    }
}

/// Decodes one latest-state field: the event name, and `offset time expiry\ndata`.
fn decode_latest(
    channel: &ChannelName,
    epoch: &Epoch,
    event: &Value,
    value: &Value,
) -> Option<Arc<Publication>> {
    let event = EventName::parse(&event.as_str()?).ok()?;
    let value = value.as_str()?;
    let (head, data) = value.split_once('\n')?;
    let mut head = head.split(' ');
    let offset = head.next()?.parse().ok()?;
    let time = head.next()?.parse().ok()?;
    let data = RawValue::from_string(data.to_owned()).ok()?;
    Some(Arc::new(Publication::new(
        channel.clone(),
        event,
        data,
        StreamPosition::new(epoch.clone(), offset),
        time,
    )))
}

/// Decodes one XRANGE entry: `[id, [e, event, d, data, c, time, x, expiry]]`.
fn decode_entry(channel: &ChannelName, epoch: &Epoch, entry: Value) -> Option<Arc<Publication>> {
    let mut entry = entry.into_array().into_iter();
    let id = entry.next()?.as_str()?.into_owned();
    let offset: u64 = id.split('-').next()?.parse().ok()?;
    let fields: Vec<Value> = entry.next()?.into_array();
    let field = |i: usize| fields.get(i).and_then(Value::as_str);
    let event = EventName::parse(&field(1)?).ok()?;
    let data = RawValue::from_string(field(3)?.into_owned()).ok()?;
    let time = field(5)?.parse().ok()?;
    Some(Arc::new(Publication::new(
        channel.clone(),
        event,
        data,
        StreamPosition::new(epoch.clone(), offset),
        time,
    )))
}
