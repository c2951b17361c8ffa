//! Leases of pulled sources: a key-value bucket `PREFIX_LEASES` whose entries live
//! [`LEASE_TTL`] past their last write. A node takes a free lease by creating its key and renews
//! it by updating the revision it read, so two nodes never both succeed.

use crate::codec::hex;
use crate::engine::NatsEngine;
use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use herald_core::{EngineError, Leases};

fn unavailable(e: impl std::fmt::Display) -> EngineError {
    tracing::debug!(error = %e, "NATS lease command failed.");
    EngineError::Unavailable("nats engine unreachable")
}

#[async_trait::async_trait]
impl Leases for NatsEngine {
    async fn hold(&self, name: &str, holder: &str) -> Result<bool, EngineError> {
        let key = hex(name);
        let entry = self.leases.entry(key.as_str()).await.map_err(unavailable)?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                if e.value.as_ref() != holder.as_bytes() {
                    return Ok(false);
                }
                match self
                    .leases
                    .update(&key, holder.to_owned().into(), e.revision)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(unavailable(e)),
                }
            }
            _ => match self.leases.create(&key, holder.to_owned().into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(unavailable(e)),
            },
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), EngineError> {
        let key = hex(name);
        if let Some(e) = self.leases.entry(key.as_str()).await.map_err(unavailable)? {
            if e.operation == Operation::Put && e.value.as_ref() == holder.as_bytes() {
                // Another node may have taken it meanwhile: then the revision no longer
                // matches and nothing is deleted.
                let _ = self
                    .leases
                    .delete_expect_revision(&key, Some(e.revision))
                    .await;
            }
        }
        Ok(())
    }
}
