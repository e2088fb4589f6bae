//! Simulated vendor APIs (placeholder until the simulator lands).
use chrono::{DateTime, Utc};
use std::net::SocketAddr;

pub struct SimRateLimits {
    pub hubspot_per_10s: u32,
    pub stripe_per_sec: u32,
    pub usage_per_min: u32,
    pub vitally_per_min: u32,
}
impl Default for SimRateLimits {
    fn default() -> Self {
        SimRateLimits {
            hubspot_per_10s: 100,
            stripe_per_sec: 100,
            usage_per_min: 600,
            vitally_per_min: 1000,
        }
    }
}
pub struct SimOptions {
    pub accounts: usize,
    pub seed: u64,
    pub now: DateTime<Utc>,
    pub rate_limits: SimRateLimits,
}
#[derive(Clone, Copy)]
pub enum Vendor {
    Hubspot,
    Stripe,
    Usage,
    Vitally,
}
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    pub body: serde_json::Value,
}
pub struct SimHandle;
impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }
    pub fn base_url(&self, _v: Vendor) -> String {
        String::new()
    }
    pub fn received(&self) -> Vec<ReceivedRequest> {
        Vec::new()
    }
    pub async fn shutdown(self) {}
}
pub async fn start(_o: SimOptions) -> std::io::Result<SimHandle> {
    Ok(SimHandle)
}
pub struct Credentials {
    pub hubspot_token: &'static str,
    pub stripe_key: &'static str,
    pub usage_token: &'static str,
    pub vitally_key: &'static str,
}
pub fn credentials() -> Credentials {
    Credentials {
        hubspot_token: "pat-sim-hubspot",
        stripe_key: "sk_test_sim",
        usage_token: "usage-sim",
        vitally_key: "vitally-sim",
    }
}
