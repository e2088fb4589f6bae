//! Deterministic, vendor-shaped fake APIs on loopback, used by `healthsync demo` and by tests.
//!
//! This file owns the server: options, the request budgets (`SimRateLimits`), the one axum listener on
//! `127.0.0.1:0` with every vendor of `VENDORS` (`vendors`) nested under its path prefix, the shared state,
//! the rate-limit primitives, small wire helpers (auth headers, base64 cursors, timestamps) and the
//! `/_sim/*` introspection routes. It does not own any vendor's routes or wire shapes (see `hubspot`,
//! `stripe`, `usage`, `vitally`, …), nor the list of vendors (`vendors`), nor the population itself
//! (see `world`).
//!
//! The support and survey vendors (`/zendesk`, `/intercom`, `/freshdesk`, `/delighted`) follow the same
//! pattern; their shared help-desk history is `support`. The write side of HubSpot and Salesforce (for
//! their sink kinds) lives in `hubspot_write` and `salesforce_write.rs`; `/churnzero`, `/clientsuccess` and
//! `/customersuccessbox` are sinks only.
//!
//! Rate limits use real-time windows. Every vendor authenticates before it counts a request,
//! so rejected credentials never consume the budget.

pub mod chargebee;
pub mod churnzero;
pub mod clientsuccess;
pub mod customersuccessbox;
mod delighted;
mod freshdesk;
pub mod gainsight;
mod hubspot;
mod hubspot_objects;
mod hubspot_write;
mod intercom;
pub mod mixpanel;
pub mod planhat;
pub mod salesforce;
mod sink_log;
mod stripe;
mod stripe_events;
mod support;
pub mod totango;
mod usage;
mod vendors;
mod vitally;
pub mod world;
mod zendesk;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use vendors::Vendor;
pub(crate) use vendors::{DemoConnector, VendorSpec, VENDORS};
pub use world::{AccountTruth, SimAccount, Trajectory, World};

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub accounts: usize,
    pub seed: u64,
    /// The simulated present; every generated timestamp derives from it.
    pub now: DateTime<Utc>,
    pub rate_limits: SimRateLimits,
}

impl SimOptions {
    pub fn new(accounts: usize, seed: u64, now: DateTime<Utc>) -> SimOptions {
        SimOptions {
            accounts,
            seed,
            now,
            rate_limits: SimRateLimits::default(),
        }
    }
}

/// Request budgets: one per vendor, counted in the vendor's window (`VENDORS` has each vendor's window,
/// default and demo quota; ChurnZero's is fixed, its slot unread), and Zendesk's incremental export budget.
/// `0` rejects every request, which is handy in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimRateLimits {
    per_vendor: [u32; vendors::COUNT],
    /// Zendesk's incremental export endpoints have their own budget (10/min unless High Volume).
    pub zendesk_incremental_per_min: u32,
}

impl Default for SimRateLimits {
    /// The real vendors' quotas.
    fn default() -> Self {
        SimRateLimits {
            per_vendor: VENDORS.each_ref().map(|s| s.quota),
            zendesk_incremental_per_min: 10,
        }
    }
}

impl SimRateLimits {
    /// Budgets nobody reaches, for tests that page through everything quickly.
    pub fn unlimited() -> Self {
        SimRateLimits {
            per_vendor: [u32::MAX; vendors::COUNT],
            zendesk_incremental_per_min: u32::MAX,
        }
    }

    /// The demo's quotas (also `healthsync sim --fast`): far above the real vendors' so the demo finishes
    /// in seconds; the demo's connector files use the same numbers.
    pub fn demo() -> Self {
        SimRateLimits {
            per_vendor: VENDORS.each_ref().map(|s| s.demo_quota),
            zendesk_incremental_per_min: 600,
        }
    }

    /// The vendor's budget per window.
    pub fn get(&self, vendor: Vendor) -> u32 {
        self.per_vendor[vendor.index()]
    }

    pub fn set(&mut self, vendor: Vendor, requests: u32) {
        self.per_vendor[vendor.index()] = requests;
    }

    /// These budgets with the vendor's replaced.
    pub fn with(mut self, vendor: Vendor, requests: u32) -> Self {
        self.set(vendor, requests);
        self
    }
}

/// One write (non-GET) request the Vitally platform accepted for processing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedRequest {
    pub method: String,
    /// Path as Vitally sees it, without the `/vitally` prefix or query, e.g. `/resources/accounts/123`.
    pub path: String,
    /// Parsed JSON body; `null` when empty, a JSON string when the body was not JSON.
    pub body: serde_json::Value,
}

/// State shared by every route: the world, the clock, what was received, and each vendor's own state
/// (`vendors::VendorStates`, declared and built by the vendor list; reached as `state.<vendor>`).
pub(crate) struct SimState {
    pub(crate) world: Arc<World>,
    /// `http://127.0.0.1:PORT`, for absolute links such as HubSpot's `paging.next.link`.
    pub(crate) base: String,
    started: Instant,
    seq: AtomicU64,
    vendors: vendors::VendorStates,
    pub(crate) received: Mutex<Vec<ReceivedRequest>>,
}

impl std::ops::Deref for SimState {
    type Target = vendors::VendorStates;

    /// Each vendor's state, as `state.<vendor>`: the fields are declared by the vendor list.
    fn deref(&self) -> &vendors::VendorStates {
        &self.vendors
    }
}

impl SimState {
    fn new(world: Arc<World>, addr: SocketAddr, limits: SimRateLimits) -> SimState {
        SimState {
            base: format!("http://{addr}"),
            started: Instant::now(),
            seq: AtomicU64::new(1),
            vendors: vendors::VendorStates::new(&world, &limits),
            received: Mutex::new(Vec::new()),
            world,
        }
    }

    /// Simulated wall clock: the world's `now` plus real time elapsed since start, so writes
    /// get increasing timestamps that stay consistent with the generated data.
    pub(crate) fn clock(&self) -> DateTime<Utc> {
        self.world.now + TimeDelta::from_std(self.started.elapsed()).unwrap_or(TimeDelta::zero())
    }

    /// A fresh uuid-like id (correlation ids, generated object ids); deterministic in request order.
    pub(crate) fn next_uuid(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let a = splitmix64(n ^ 0x5151_5eed);
        uuid_from(a, splitmix64(a))
    }
}

/// Formats 128 random bits as a version-4 UUID string.
pub(crate) fn uuid_from(a: u64, b: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A running simulator; dropping it also stops the server (without waiting).
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL a vendor client is configured with, e.g. `http://127.0.0.1:PORT/hubspot`.
    pub fn base_url(&self, vendor: Vendor) -> String {
        format!("{}{}", self.state.base, vendor.prefix())
    }

    /// Every write request the Vitally platform accepted, in arrival order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.state.received).clone()
    }

    pub fn world(&self) -> Arc<World> {
        Arc::clone(&self.state.world)
    }

    /// Every authenticated HubSpot request so far, in arrival order: (time since the simulator started,
    /// throttled with a 429). The simulator's own count, for the rate-limit benchmark.
    pub fn hubspot_requests(&self) -> Vec<(Duration, bool)> {
        self.state.hubspot.requests(self.state.started)
    }

    /// Stops accepting, lets in-flight requests finish, and waits (bounded) for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            // An error only means the server task already ended, which is the goal anyway.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
                tracing::warn!(addr = %self.addr, "sim server did not stop within 5s, aborted");
            }
        }
    }
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Generates the world, binds `127.0.0.1:0` and serves every vendor until shutdown.
pub async fn start(opts: SimOptions) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let world = Arc::new(World::generate(opts.accounts, opts.seed, opts.now));
    let state = Arc::new(SimState::new(world, addr, opts.rate_limits));
    let mut app = Router::new();
    for spec in &VENDORS {
        app = app.nest(spec.prefix, (spec.router)(&state));
        if let Some(route) = spec.sim_state {
            app = app.route(&format!("/_sim/state/{}", spec.name), route());
        }
    }
    let app = app
        .route("/_sim/received", get(sim_received))
        .route("/_sim/state", get(sim_state))
        .route("/_sim/truth", get(sim_truth))
        .with_state(Arc::clone(&state));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "sim server stopped with error");
        }
    });
    tracing::info!(%addr, accounts = opts.accounts, seed = opts.seed, "simulator listening");
    Ok(SimHandle {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

async fn sim_received(axum::extract::State(st): axum::extract::State<Arc<SimState>>) -> Response {
    Json(lock(&st.received).clone()).into_response()
}

async fn sim_state(axum::extract::State(st): axum::extract::State<Arc<SimState>>) -> Response {
    Json(st.vitally.snapshot()).into_response()
}

async fn sim_truth(axum::extract::State(st): axum::extract::State<Arc<SimState>>) -> Response {
    Json(st.world.truth()).into_response()
}

/// Locks a mutex, recovering from poisoning: sim state stays usable after a panicking handler.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}

/// Query string as ordered pairs (repeated keys kept), percent-decoded.
pub(crate) fn query_pairs(uri: &Uri) -> Result<Vec<(String, String)>, String> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| format!("invalid query string: {e}"))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// `(user, password)` from an HTTP Basic header.
pub(crate) fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(b64_decode(rest.trim())?).ok()?;
    let (user, pass) = raw.split_once(':').unwrap_or((raw.as_str(), ""));
    Some((user.to_string(), pass.to_string()))
}

const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding: cursors stay opaque yet need no escaping in a query.
pub(crate) fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(B64_URL[((n >> (18 - 6 * i)) & 0x3f) as usize]));
        }
    }
    out
}

/// Decodes standard or URL-safe base64, padded or not.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push(((bits >> nbits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// Opaque cursor from a plain key.
pub(crate) fn encode_cursor(key: &str) -> String {
    b64_encode(key.as_bytes())
}

pub(crate) fn decode_cursor(cursor: &str) -> Option<String> {
    String::from_utf8(b64_decode(cursor)?).ok()
}

/// ISO-8601 UTC with milliseconds, as HubSpot and Vitally print timestamps.
pub(crate) fn iso_ms(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// At most `limit` hits in any rolling `window`.
pub(crate) struct RollingWindow {
    limit: u32,
    window: Duration,
    hits: VecDeque<Instant>,
}

impl RollingWindow {
    pub(crate) fn new(limit: u32, window: Duration) -> Self {
        RollingWindow {
            limit,
            window,
            hits: VecDeque::new(),
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(first) = self.hits.front() {
            if now.duration_since(*first) >= self.window {
                self.hits.pop_front();
            } else {
                break;
            }
        }
    }

    /// Counts a hit if the budget allows: `Ok(remaining)`, or `Err(time until a slot frees)`.
    pub(crate) fn try_hit(&mut self, now: Instant) -> Result<u32, Duration> {
        self.expire(now);
        let used = u32::try_from(self.hits.len()).unwrap_or(u32::MAX);
        if used >= self.limit {
            let wait = self
                .hits
                .front()
                .map(|first| self.window.saturating_sub(now.duration_since(*first)))
                .unwrap_or(self.window);
            return Err(wait);
        }
        self.hits.push_back(now);
        Ok(self.limit - used - 1)
    }

    /// Hits within the last `span` (for HubSpot's per-second header inside its 10 s window).
    pub(crate) fn hits_within(&self, now: Instant, span: Duration) -> u32 {
        let n = self
            .hits
            .iter()
            .rev()
            .take_while(|t| now.duration_since(**t) < span)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit
    }

    /// Time until the oldest counted hit leaves the window (zero when the window is empty).
    pub(crate) fn until_free(&self, now: Instant) -> Duration {
        self.hits
            .front()
            .map(|first| self.window.saturating_sub(now.duration_since(*first)))
            .unwrap_or(Duration::ZERO)
    }
}

/// Seconds to wait, rounded up so a client that honours it never arrives early.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 {
        s + 1
    } else {
        s
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid date")
    }

    pub(crate) async fn start_sim(accounts: usize, limits: SimRateLimits) -> SimHandle {
        let mut opts = SimOptions::new(accounts, 42, now());
        opts.rate_limits = limits;
        start(opts).await.expect("sim starts")
    }

    pub(crate) fn client() -> reqwest::Client {
        reqwest::Client::new()
    }

    /// How a test request authenticates.
    pub(crate) enum Auth<'a> {
        None,
        Bearer(&'a str),
        Basic(&'a str),
    }

    pub(crate) struct Reply {
        pub(crate) status: u16,
        pub(crate) headers: reqwest::header::HeaderMap,
        /// Parsed JSON body, `null` when the body is not JSON.
        pub(crate) body: serde_json::Value,
    }

    impl Reply {
        pub(crate) fn header(&self, name: &str) -> &str {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        }
    }

    /// `field` of every element of the JSON array `v`, as strings.
    pub(crate) fn strs(v: &serde_json::Value, field: &str) -> Vec<String> {
        let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
        let text = |x: &serde_json::Value| x[field].as_str().unwrap_or_default().to_string();
        items.iter().map(text).collect()
    }

    pub(crate) async fn call(
        method: &str,
        url: &str,
        auth: Auth<'_>,
        body: Option<&serde_json::Value>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = client().request(method, url);
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Basic(user) => req.basic_auth(user, Some("")),
        };
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.expect("request reaches the sim");
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn base64_roundtrip() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "1700000000000|ws_abc-2026-01-01",
        ] {
            let e = b64_encode(s.as_bytes());
            assert!(!e.contains('='));
            assert_eq!(b64_decode(&e).as_deref(), Some(s.as_bytes()));
        }
        assert_eq!(
            b64_decode("dml0YWxseS1zaW06").as_deref(),
            Some(&b"vitally-sim:"[..])
        );
        assert!(b64_decode("not base64!").is_none());
    }

    #[test]
    fn rolling_window_limits_and_frees() {
        let t0 = Instant::now();
        let mut w = RollingWindow::new(2, Duration::from_secs(10));
        assert_eq!(w.try_hit(t0), Ok(1));
        assert_eq!(w.try_hit(t0), Ok(0));
        let wait = w
            .try_hit(t0 + Duration::from_secs(3))
            .expect_err("over budget");
        assert_eq!(wait, Duration::from_secs(7));
        assert_eq!(w.try_hit(t0 + Duration::from_secs(10)), Ok(1));
        assert_eq!(
            RollingWindow::new(0, Duration::from_secs(1))
                .try_hit(t0)
                .map_err(|_| ()),
            Err(())
        );
    }

    #[tokio::test]
    async fn serves_truth_and_shuts_down() {
        let sim = start_sim(30, SimRateLimits::unlimited()).await;
        assert_eq!(
            sim.base_url(Vendor::Stripe),
            format!("http://{}/stripe", sim.addr())
        );
        let truth = call(
            "GET",
            &format!("http://{}/_sim/truth", sim.addr()),
            Auth::None,
            None,
        )
        .await;
        let obj = truth.body.as_object().expect("object");
        assert_eq!(obj.len(), 30);
        let first = &sim.world().accounts[0];
        assert_eq!(
            obj[&first.hubspot_id]["trajectory"],
            serde_json::json!(first.trajectory)
        );
        let addr = sim.addr();
        sim.shutdown().await;
        assert!(client()
            .get(format!("http://{addr}/_sim/truth"))
            .send()
            .await
            .is_err());
    }
}
