//! Simulated product-usage feed: a generic JSON API of our own design, documented here because
//! no vendor defines it. It owns the `/usage` prefix and the generation of each account's daily
//! usage series (called by `world`); it does not own accounts, trajectories or other vendors.
//!
//! # Wire format
//!
//! `GET /v1/usage/daily?updated_since=<RFC 3339>&cursor=<opaque>&limit=<1..=1000, default 500>`
//! with `Authorization: Bearer <token>` returns
//!
//! ```json
//! {"data": [{"id": "ws_abc-2026-11-20", "workspace_id": "ws_abc", "account_domain": "acme.io",
//!            "date": "2026-11-20", "active_users": 12, "events": 340, "features_used": 5,
//!            "updated_at": "2026-11-21T02:13:00Z"}],
//!  "next_cursor": "opaque" | null}
//! ```
//!
//! - Rows are ordered by `(updated_at, id)` ascending; a row is rewritten (new `updated_at`)
//!   when late data corrects it, so an incremental reader sees it again.
//! - `updated_since` is inclusive (`updated_at >= updated_since`); omitted means everything.
//! - `next_cursor` is `null` on the last page. To sync incrementally, keep the largest
//!   `updated_at` seen and pass it as the next run's `updated_since` (inclusive, so dedupe by `id`).
//! - A cursor is only valid with the same `updated_since`; a malformed cursor gives
//!   400 `{"error":"invalid cursor"}`; other bad parameters give 400 `{"error":"..."}`.
//! - Wrong or missing token: 401 `{"error":"unauthorized"}` with `WWW-Authenticate: Bearer`.
//! - Over the per-minute budget: 429 `{"error":"rate limit exceeded"}` with
//!   `Retry-After: <seconds>` (whole seconds until a request slot frees).

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, Utc, Weekday};
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::{json, Value};

use crate::sim::world::{by, days, noise, uni, SimAccount, Trajectory, UsageDay, World};
use crate::sim::{
    bearer, ceil_secs, decode_cursor, encode_cursor, json_response, lock, query_pairs,
    RollingWindow, SimState, Vendor,
};

pub(crate) struct UsageState {
    limiter: Mutex<RollingWindow>,
    /// `(updated_at ms, account, day)` sorted by `(updated_at, id)`.
    index: Vec<(i64, u32, u16)>,
}

fn row_id(a: &SimAccount, d: &UsageDay) -> String {
    format!("{}-{}", a.workspace_id, d.date.format("%Y-%m-%d"))
}

/// Order of two rows by `(updated_at, id)`; workspace ids have one width, so comparing
/// `(workspace, date)` equals comparing the formatted ids without allocating.
fn cmp_rows(w: &World, x: &(i64, u32, u16), y: &(i64, u32, u16)) -> Ordering {
    let (ax, ay) = (&w.accounts[x.1 as usize], &w.accounts[y.1 as usize]);
    x.0.cmp(&y.0)
        .then_with(|| ax.workspace_id.cmp(&ay.workspace_id))
        .then_with(|| {
            ax.usage[x.2 as usize]
                .date
                .cmp(&ay.usage[y.2 as usize].date)
        })
}

impl UsageState {
    pub(crate) fn new(w: &World, per_min: u32) -> UsageState {
        let mut index: Vec<(i64, u32, u16)> = Vec::new();
        for (i, a) in w.accounts.iter().enumerate() {
            for (j, d) in a.usage.iter().enumerate() {
                // Bounded by construction: usage holds at most 60 rows per account.
                let j = u16::try_from(j).unwrap_or(u16::MAX);
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                index.push((d.updated_at.timestamp_millis(), i, j));
            }
        }
        index.sort_by(|x, y| cmp_rows(w, x, y));
        UsageState {
            limiter: Mutex::new(RollingWindow::new(per_min, Duration::from_secs(60))),
            index,
        }
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/usage/daily", get(daily))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn err(status: StatusCode, msg: &str) -> Response {
    json_response(status, json!({ "error": msg }))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if bearer(req.headers()) != Some(Vendor::Usage.credential()) {
        let mut r = err(StatusCode::UNAUTHORIZED, "unauthorized");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if let Err(wait) = lock(&st.usage.limiter).try_hit(Instant::now()) {
        let mut r = err(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(wait).max(1)),
        );
        return r;
    }
    next.run(req).await
}

fn row_json(a: &SimAccount, d: &UsageDay) -> Value {
    json!({
        "id": row_id(a, d),
        "workspace_id": a.workspace_id,
        "account_domain": a.domain,
        "date": d.date.format("%Y-%m-%d").to_string(),
        "active_users": d.active_users,
        "events": d.events,
        "features_used": d.features_used,
        "updated_at": d.updated_at.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// Cursor = the `(updated_at ms, id)` of the last row served; the next page starts after it.
fn parse_cursor(c: &str) -> Option<(i64, String)> {
    let raw = decode_cursor(c)?;
    let (ms, id) = raw.split_once('|')?;
    Some((ms.parse().ok()?, id.to_string()))
}

async fn daily(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return err(StatusCode::BAD_REQUEST, &e),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => 500,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "invalid limit: must be between 1 and 1000",
            )
        }
    };
    let since = match get("updated_since").map(DateTime::parse_from_rfc3339) {
        None => i64::MIN,
        Some(Ok(t)) => t.with_timezone(&Utc).timestamp_millis(),
        Some(Err(_)) => {
            return err(
                StatusCode::BAD_REQUEST,
                "invalid updated_since: expected RFC 3339",
            )
        }
    };
    let w = &st.world;
    let idx = &st.usage.index;
    let mut start = idx.partition_point(|r| r.0 < since);
    if let Some(c) = get("cursor") {
        let Some((ms, id)) = parse_cursor(c) else {
            return err(StatusCode::BAD_REQUEST, "invalid cursor");
        };
        let after = idx.partition_point(|r| {
            let a = &w.accounts[r.1 as usize];
            (r.0, row_id(a, &a.usage[r.2 as usize])) <= (ms, id.clone())
        });
        start = start.max(after);
    }
    let end = (start + limit).min(idx.len());
    let page = idx.get(start..end).unwrap_or_default();
    let data: Vec<Value> = page
        .iter()
        .map(|r| {
            let a = &w.accounts[r.1 as usize];
            row_json(a, &a.usage[r.2 as usize])
        })
        .collect();
    let next = match page.last() {
        Some(r) if end < idx.len() => {
            let a = &w.accounts[r.1 as usize];
            Value::String(encode_cursor(&format!(
                "{}|{}",
                r.0,
                row_id(a, &a.usage[r.2 as usize])
            )))
        }
        _ => Value::Null,
    };
    json_response(StatusCode::OK, json!({"data": data, "next_cursor": next}))
}

/// Per-account knobs that shape the usage series.
struct UsageShape {
    base_ratio: f64,
    growth: f64,
    drop: f64,
    onset_days: i64,
    flat: bool,
    bad_week_start: Option<i64>,
    events_per_user: f64,
    breadth: f64,
}

fn usage_shape(rng: &mut StdRng, t: Trajectory) -> UsageShape {
    let healthy = t == Trajectory::Healthy;
    UsageShape {
        base_ratio: uni(rng, by(t, [(0.45, 0.8), (0.35, 0.7), (0.2, 0.55)])),
        events_per_user: uni(rng, by(t, [(15.0, 40.0), (12.0, 32.0), (8.0, 26.0)])),
        breadth: uni(rng, by(t, [(8.0, 16.0), (5.0, 13.0), (3.0, 10.0)])),
        growth: if healthy { uni(rng, (0.0, 0.15)) } else { 0.0 },
        drop: if healthy {
            0.0
        } else {
            uni(rng, by(t, [(0.0, 0.0), (0.25, 0.45), (0.45, 0.8)]))
        },
        onset_days: if t == Trajectory::Churning {
            rng.gen_range(30..46)
        } else {
            30
        },
        // Some unhealthy accounts keep using the product: their signal is elsewhere.
        flat: !healthy && rng.gen_bool(by(t, [0.0, 0.15, 0.25])),
        bad_week_start: (healthy && rng.gen_bool(0.2)).then(|| rng.gen_range(1..30)),
    }
}

/// How many days of usage history the feed holds: enough for a backtest to score 90 days back with a
/// 30-day window.
pub(crate) const USAGE_DAYS: i64 = 120;

/// The last `USAGE_DAYS` complete days of usage before `end` (fewer for younger accounts), oldest first:
/// `end` is the simulated present, or the churn date of an account that has already left (no usage after
/// it). Declining and churning accounts drop over the last ~30 days before `end`, except some that stay flat.
pub(crate) fn gen_usage(
    rng: &mut StdRng,
    t: Trajectory,
    now: DateTime<Utc>,
    end: DateTime<Utc>,
    created_at: DateTime<Utc>,
    seats: u32,
) -> Vec<UsageDay> {
    let s = usage_shape(rng, t);
    let today = end.date_naive();
    let first = created_at.date_naive();
    let mut rows = Vec::with_capacity(USAGE_DAYS as usize);
    for ago in (1..=USAGE_DAYS).rev() {
        let date = today - TimeDelta::days(ago);
        if date < first {
            continue;
        }
        let trend = if s.flat {
            1.0
        } else if s.drop > 0.0 {
            let into = (s.onset_days - ago).max(0) as f64 / s.onset_days as f64;
            1.0 - s.drop * into
        } else {
            1.0 + s.growth * (60 - ago).max(0) as f64 / 60.0
        };
        // New customers ramp up over their first ~6 weeks.
        let age_days = (date - first).num_days() as f64;
        let ramp = (0.3 + age_days / 45.0).min(1.0);
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        let week = if weekend { 0.3 } else { 1.0 };
        let bad = match s.bad_week_start {
            Some(b) if ago <= b && ago > b - 7 => 0.55,
            _ => 1.0,
        };
        let level = s.base_ratio * trend * ramp * week * bad * (1.0 + noise(rng, 0.12)).max(0.05);
        let active = (f64::from(seats) * level)
            .round()
            .clamp(0.0, f64::from(seats)) as u32;
        let epu = s.events_per_user * (1.0 + noise(rng, 0.2)).max(0.1) * (0.7 + 0.3 * trend);
        let events = (f64::from(active) * epu).round().max(0.0) as u32;
        let features = if active == 0 {
            0
        } else {
            let b = s.breadth * (0.6 + 0.4 * trend) * (0.7 + 0.3 * week) + noise(rng, 1.0);
            (b.round().max(1.0) as u32).min(20)
        };
        // The pipeline finalizes a day a few hours after midnight; a few rows get late corrections.
        let mut updated = date.and_time(chrono::NaiveTime::MIN).and_utc()
            + TimeDelta::days(1)
            + TimeDelta::minutes(rng.gen_range(60..240));
        if rng.gen_bool(0.04) {
            updated += days(rng, 1, 4);
        }
        rows.push(UsageDay {
            date,
            active_users: active,
            events,
            features_used: features,
            updated_at: updated.min(now),
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, now, start_sim, Auth, Reply};
    use crate::sim::world::tests::mean;
    use crate::sim::{SimRateLimits, Vendor};
    use std::collections::HashSet;

    async fn get(url: &str) -> Reply {
        call("GET", url, Auth::Bearer(Vendor::Usage.credential()), None).await
    }

    /// Mean active users per seat over the days `from..to` ago.
    fn ratio(a: &SimAccount, now: DateTime<Utc>, from: i64, to: i64) -> f64 {
        let in_window =
            |u: &&UsageDay| (from..to).contains(&(now.date_naive() - u.date).num_days());
        let rows = a.usage.iter().filter(in_window);
        mean(rows.map(|u| f64::from(u.active_users) / f64::from(a.seats)))
    }

    #[test]
    fn usage_trend_separates_trajectories() {
        use Trajectory::{Churning, Declining, Healthy};
        let w = World::generate(2000, 99, now());
        let of = |t: Trajectory| w.accounts.iter().filter(move |a| a.trajectory == t);
        let recent = |t| mean(of(t).map(|a| ratio(a, w.now, 1, 31)));
        let prior = |t| mean(of(t).map(|a| ratio(a, w.now, 31, 61)));
        assert!(recent(Churning) < recent(Healthy) * 0.7);
        assert!(recent(Churning) < prior(Churning) * 0.85);
        assert!(recent(Declining) < prior(Declining) * 0.95);
        assert!(recent(Healthy) >= prior(Healthy) * 0.95);
        // Not cartoonish: some churners keep a flat usage curve.
        let flat = of(Churning).filter(|a| ratio(a, w.now, 1, 31) >= ratio(a, w.now, 31, 61));
        assert!(flat.count() > 0);
    }

    #[tokio::test]
    async fn cursor_walk_returns_every_row_once_in_order() {
        let sim = start_sim(30, SimRateLimits::unlimited()).await;
        let w = sim.world();
        let base = format!("{}/v1/usage/daily", sim.base_url(Vendor::Usage));
        let since = w.now - TimeDelta::days(20);
        let rows = w.accounts.iter().flat_map(|a| a.usage.iter());
        let expected = rows.filter(|d| d.updated_at >= since).count();
        let since = since.to_rfc3339_opts(SecondsFormat::Secs, true);
        let (mut seen, mut cursor) = (Vec::new(), String::new());
        loop {
            let r = get(&format!("{base}?limit=37&updated_since={since}{cursor}")).await;
            for row in r.body["data"].as_array().expect("data") {
                assert!(row["account_domain"].is_string() && row["active_users"].is_u64());
                let (t, id) = (row["updated_at"].as_str(), row["id"].as_str());
                seen.push((t.expect("ts").to_string(), id.expect("id").to_string()));
            }
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen.len(), expected);
        assert_eq!(
            seen.iter().map(|k| &k.1).collect::<HashSet<_>>().len(),
            expected
        );
        assert!(
            seen.windows(2).all(|p| p[0] <= p[1]),
            "ordered by (updated_at, id)"
        );
    }

    #[tokio::test]
    async fn rejects_bad_cursor_auth_and_throttles_with_retry_after() {
        let sim = start_sim(3, SimRateLimits::unlimited().with(Vendor::Usage, 2)).await;
        let base = format!("{}/v1/usage/daily", sim.base_url(Vendor::Usage));
        let r = call("GET", &base, Auth::Bearer("nope"), None).await;
        assert_eq!((r.status, r.header("www-authenticate")), (401, "Bearer"));
        assert_eq!(get(&format!("{base}?cursor=%%%")).await.status, 400);
        let r = get(&format!("{base}?cursor=bm90LWEtY3Vyc29y")).await;
        assert_eq!(
            (r.status, r.body.clone()),
            (400, json!({"error": "invalid cursor"}))
        );
        let r = get(&base).await;
        assert_eq!(
            (r.status, &r.body["error"]),
            (429, &json!("rate limit exceeded"))
        );
        let secs: u64 = r.header("retry-after").parse().expect("seconds");
        assert!((1..=60).contains(&secs));
    }
}
