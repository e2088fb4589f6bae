//! Operational metrics: the process-wide Prometheus registry that `GET /metrics` serves.
//!
//! The HTTP engine, the sync loop, delivery and scoring record into [`metrics()`] as they work; the
//! daemon's HTTP server renders it. The registry is process-wide, like the tracing subscriber: one
//! process is one daemon, and threading a handle through every connector kind would buy nothing but
//! noise. Gauges that describe the store (outbox depth, dead letters, freshness) are set by the daemon
//! just before rendering, from the store, so they can never drift from it. This module only counts; it
//! decides nothing and reads no config.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabel {
    pub connector: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub connector: String,
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub connector: String,
    pub stream: String,
    /// `stored` or `rejected`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub connector: String,
    /// The HTTP status code, or `network` when no response came back.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub sink: String,
    /// `applied`, `already_present`, `transient` or `dead_lettered`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub connector: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BandLabel {
    pub band: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric healthsync exports. Names follow Prometheus conventions (`_total` added by the encoder).
pub struct Metrics {
    registry: Registry,
    pub records_synced: Family<RecordLabels, Counter>,
    pub http_requests: Family<RequestLabels, Counter>,
    pub http_retries: Family<ConnectorLabel, Counter>,
    pub rate_limit_wait_seconds: Family<ConnectorLabel, FloatCounter>,
    pub cursor_lag_seconds: Family<StreamLabels, FloatGauge>,
    pub sync_duration_seconds: Family<ConnectorLabel, Histogram>,
    pub sync_runs: Family<OutcomeLabels, Counter>,
    pub last_success_timestamp: Family<ConnectorLabel, Gauge>,
    pub connector_stale: Family<ConnectorLabel, Gauge>,
    pub outbox_depth: Gauge,
    pub dead_letters: Gauge,
    pub writes: Family<WriteLabels, Counter>,
    pub accounts: Family<BandLabel, Gauge>,
    pub scoring_duration_seconds: Histogram,
    pub config_reloads: Family<OutcomeLabel, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("healthsync");
        let m = Metrics {
            records_synced: Family::default(),
            http_requests: Family::default(),
            http_retries: Family::default(),
            rate_limit_wait_seconds: Family::default(),
            cursor_lag_seconds: Family::default(),
            sync_duration_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.1, 2.0, 14))
            }),
            sync_runs: Family::default(),
            last_success_timestamp: Family::default(),
            connector_stale: Family::default(),
            outbox_depth: Gauge::default(),
            dead_letters: Gauge::default(),
            writes: Family::default(),
            accounts: Family::default(),
            scoring_duration_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            config_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_synced",
            "Records read from sources, by outcome (stored or rejected)",
            m.records_synced.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests sent to vendor APIs, by response status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_retries",
            "HTTP requests retried after a retryable failure",
            m.http_retries.clone(),
        );
        registry.register(
            "rate_limit_wait_seconds",
            "Time spent waiting for a connector's rate limiter or a vendor's Retry-After",
            m.rate_limit_wait_seconds.clone(),
        );
        registry.register(
            "cursor_lag_seconds",
            "Age of the newest record synced per stream, at the end of its last run",
            m.cursor_lag_seconds.clone(),
        );
        registry.register(
            "sync_duration_seconds",
            "Duration of a connector's sync run",
            m.sync_duration_seconds.clone(),
        );
        registry.register(
            "sync_runs",
            "Sync runs per connector, by outcome (ok, failed, interrupted)",
            m.sync_runs.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of each connector's last fully successful sync",
            m.last_success_timestamp.clone(),
        );
        registry.register(
            "connector_stale",
            "1 when a source's last successful sync is older than its max age",
            m.connector_stale.clone(),
        );
        registry.register(
            "outbox_depth",
            "Writes queued for delivery",
            m.outbox_depth.clone(),
        );
        registry.register(
            "dead_letters",
            "Writes the platforms refused for good",
            m.dead_letters.clone(),
        );
        registry.register(
            "writes",
            "Writes sent to sinks, by outcome",
            m.writes.clone(),
        );
        registry.register(
            "accounts",
            "Accounts by health band after the last scoring run",
            m.accounts.clone(),
        );
        registry.register(
            "scoring_duration_seconds",
            "Duration of a scoring run",
            m.scoring_duration_seconds.clone(),
        );
        registry.register(
            "config_reloads",
            "SIGHUP reloads, by outcome (applied or rejected)",
            m.config_reloads.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

pub fn connector(id: &str) -> ConnectorLabel {
    ConnectorLabel {
        connector: id.to_string(),
    }
}

/// Counts one HTTP response (or `network` for none) for a connector.
pub fn http_request(connector: &str, status: Option<u16>) {
    let status = status.map_or_else(|| "network".to_string(), |s| s.to_string());
    metrics()
        .http_requests
        .get_or_create(&RequestLabels {
            connector: connector.to_string(),
            status,
        })
        .inc();
}

/// Adds time spent waiting on a rate limit (our limiter or the vendor's Retry-After).
pub fn rate_limit_wait(connector: &str, wait: Duration) {
    metrics()
        .rate_limit_wait_seconds
        .get_or_create(&self::connector(connector))
        .inc_by(wait.as_secs_f64());
}

/// Sets the accounts-by-band gauges from a scoring run's counts: (band label, accounts), the label being
/// `red`, `amber`, `green` or `not_scored`.
pub fn set_accounts(bands: [(&str, usize); 4]) {
    for (band, n) in bands {
        metrics()
            .accounts
            .get_or_create(&BandLabel { band: band.into() })
            .set(n as i64);
    }
}

/// Counts one write outcome for a sink.
pub fn write(sink: &str, outcome: &str) {
    metrics()
        .writes
        .get_or_create(&WriteLabels {
            sink: sink.to_string(),
            outcome: outcome.to_string(),
        })
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_names_every_family_with_the_prefix_and_labels() {
        http_request("observe-test", Some(429));
        http_request("observe-test", None);
        rate_limit_wait("observe-test", Duration::from_millis(1500));
        write("observe-sink", "applied");
        let text = metrics().render();
        assert!(text.contains(
            "healthsync_http_requests_total{connector=\"observe-test\",status=\"429\"} 1"
        ));
        assert!(text.contains(
            "healthsync_http_requests_total{connector=\"observe-test\",status=\"network\"} 1"
        ));
        assert!(text
            .contains("healthsync_rate_limit_wait_seconds_total{connector=\"observe-test\"} 1.5"));
        assert!(
            text.contains("healthsync_writes_total{sink=\"observe-sink\",outcome=\"applied\"} 1")
        );
        for family in [
            "healthsync_outbox_depth",
            "healthsync_dead_letters",
            "healthsync_scoring_duration_seconds",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}")),
                "{family} missing"
            );
        }
    }
}
