//! `HttpProxy`: herald-core's [`AppProxy`] over HTTP. Each call is one signed `POST` of JSON to
//! the namespace's proxy URL, bounded in time (`proxy.timeout`) and in number
//! (`proxy.max_in_flight`); anything but a well-formed answer is a failure the client is told
//! of. The wire format is in docs/protocol.md ("Publish and subscribe proxies").

use async_trait::async_trait;
use herald_core::{AppProxy, ProxyCall, ProxyVerdict, Secret};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;

/// The `[proxy]` section: how Herald calls the app's backend where a namespace names a
/// `publish_proxy` or `subscribe_proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Signs every call (HMAC-SHA256, `X-Herald-Signature`), so the backend can tell it came
    /// from Herald; at least 32 bytes. Required once a namespace names a proxy.
    pub secret: Option<Secret>,
    /// Longest wait for the backend's answer; past it the request is refused (`unavailable`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Most calls waiting on the backend at once on this node; more are refused at once.
    pub max_in_flight: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            secret: None,
            timeout: Duration::from_secs(2),
            max_in_flight: 1000,
        }
    }
}

/// Shortest secret accepted.
const MIN_SECRET_BYTES: usize = 32;

/// Longest refusal reason passed on to the client, in characters.
const MAX_REASON_CHARS: usize = 200;

/// Largest answer body read from the backend.
const MAX_ANSWER_BYTES: usize = 1 << 20;

impl ProxyConfig {
    /// Problems with these settings, given whether any namespace names a proxy.
    pub fn problems(&self, used: bool) -> Vec<String> {
        let mut out = Vec::new();
        match &self.secret {
            None if used => out.push(
                "proxy.secret is required: a namespace names a publish_proxy or subscribe_proxy, and every call to it is signed"
                    .to_owned(),
            ),
            Some(s) if s.len() < MIN_SECRET_BYTES => out.push(format!(
                "proxy.secret is {} bytes; at least {MIN_SECRET_BYTES} are needed",
                s.len()
            )),
            _ => {}
        }
        if self.timeout.is_zero() {
            out.push("proxy.timeout must be more than 0s".to_owned());
        }
        if self.max_in_flight == 0 {
            out.push("proxy.max_in_flight must be at least 1".to_owned());
        }
        out
    }
}

/// Calls the app's backend over HTTP.
#[derive(Debug)]
pub struct HttpProxy {
    client: reqwest::Client,
    secret: Secret,
    timeout: Duration,
    in_flight: Arc<Semaphore>,
}

impl HttpProxy {
    /// A proxy client per `config`, which must hold a secret.
    pub fn new(config: &ProxyConfig) -> Result<Self, String> {
        let secret = config
            .secret
            .clone()
            .ok_or_else(|| "proxy.secret is not set".to_owned())?;
        // Only the named URL is called: no redirects, and no HTTP_PROXY from the environment.
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the proxy's HTTP client: {e}"))?;
        Ok(Self {
            client,
            secret,
            timeout: config.timeout,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
        })
    }
}

/// What Herald sends.
#[derive(Serialize)]
struct Body<'a> {
    op: &'static str,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    user: Option<&'a str>,
    conn_id: &'a str,
}

/// What the backend answers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    result: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
    #[serde(default)]
    reason: Option<String>,
}

/// `sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // Invariant: HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[async_trait]
impl AppProxy for HttpProxy {
    async fn ask(&self, call: ProxyCall) -> ProxyVerdict {
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return ProxyVerdict::Failed("too many calls to the app's backend in flight".into());
        };
        let body = Body {
            op: call.op,
            channel: call.channel.as_str(),
            event: call.event.as_deref(),
            data: call.data.as_deref(),
            user: call.user.as_deref(),
            conn_id: &call.conn_id,
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return ProxyVerdict::Failed("the call could not be encoded".into());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sent = self
            .client
            .post(&call.url)
            .header("content-type", "application/json")
            .header("x-herald-timestamp", now.to_string())
            .header(
                "x-herald-signature",
                signature(self.secret.as_bytes(), now, &body),
            )
            .body(body)
            .send();
        let read = async {
            let resp = sent.await.map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    "unreachable".to_owned()
                }
            })?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("answered {}", status.as_u16()));
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|_| "answer cut short".to_owned())?;
            if bytes.len() > MAX_ANSWER_BYTES {
                return Err("answer too large".to_owned());
            }
            serde_json::from_slice::<Answer>(&bytes)
                .map_err(|_| "answer is not {\"result\": \"allow\" | \"refuse\", ...}".to_owned())
        };
        let answer = match tokio::time::timeout(self.timeout, read).await {
            Err(_) => Err("timed out".to_owned()),
            Ok(r) => r,
        };
        match answer {
            Ok(a) if a.result == "allow" => match a.data {
                Some(data) if call.op == "publish" => ProxyVerdict::AllowWith(data),
                _ => ProxyVerdict::Allow,
            },
            Ok(a) if a.result == "refuse" => {
                let reason = a
                    .reason
                    .unwrap_or_else(|| "refused".to_owned())
                    .chars()
                    .take(MAX_REASON_CHARS)
                    .collect();
                ProxyVerdict::Refuse(reason)
            }
            Ok(_) => ProxyVerdict::Failed("answer's result is neither allow nor refuse".into()),
            Err(why) => {
                tracing::warn!(url = %call.url, op = call.op, channel = %call.channel, why = %why, "The app's backend gave no usable answer.");
                ProxyVerdict::Failed(why)
            }
        }
    }
}
