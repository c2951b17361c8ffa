//! Leases of pulled sources: `PREFIX:lease:{NAME}`, a string holding the holder, set with a
//! time to live and renewed by the holder through a script that checks it is still theirs.

use crate::engine::{unavailable, RedisEngine};
use herald_core::{EngineError, Leases, LEASE_TTL};

impl RedisEngine {
    fn lease_key(&self, name: &str) -> String {
        format!("{}:lease:{{{name}}}", self.config.prefix)
    }
}

#[async_trait::async_trait]
impl Leases for RedisEngine {
    async fn hold(&self, name: &str, holder: &str) -> Result<bool, EngineError> {
        let reply = self
            .eval(
                &self.lease_hold_script,
                vec![self.lease_key(name)],
                vec![holder.to_owned(), Self::ms(LEASE_TTL)],
            )
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(reply.as_i64() == Some(1))
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), EngineError> {
        self.eval(
            &self.lease_release_script,
            vec![self.lease_key(name)],
            vec![holder.to_owned()],
        )
        .await
        .map_err(|e| unavailable(&e))?;
        Ok(())
    }
}
