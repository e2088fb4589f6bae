//! Talking to a running healthsync daemon on its loopback endpoint: `healthsync status` asks the daemon
//! for its report when the daemon holds the store's lock.
//!
//! Only plain loopback HTTP with no credentials; vendor calls go through [`super::HttpClient`].

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot reach the daemon at http://{addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the daemon at http://{addr} answered http {status}")]
    Status { addr: SocketAddr, status: u16 },
    #[error("the daemon at http://{addr} sent a report this healthsync cannot read: {reason}")]
    Decode { addr: SocketAddr, reason: String },
}

/// `GET /status` from the daemon listening on `addr`, decoded as the caller's report type (the status
/// report belongs to `crate::status`, above this engine).
pub async fn fetch_status<R: DeserializeOwned>(addr: SocketAddr) -> Result<R, LocalError> {
    let unreachable = |e: reqwest::Error| LocalError::Unreachable {
        addr,
        reason: e.to_string(),
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .map_err(unreachable)?;
    let resp = client
        .get(format!("http://{addr}/status"))
        .send()
        .await
        .map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(LocalError::Status {
            addr,
            status: resp.status().as_u16(),
        });
    }
    let bytes = resp.bytes().await.map_err(unreachable)?;
    serde_json::from_slice(&bytes).map_err(|e| LocalError::Decode {
        addr,
        reason: e.to_string(),
    })
}
