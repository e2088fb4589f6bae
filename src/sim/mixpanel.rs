//! Simulated Mixpanel raw event export (`specs/mixpanel/export.openapi.yaml`): `GET /export` under the
//! `/mixpanel/api/2.0` prefix, answering JSON lines (`text/plain`), one event per line.
//!
//! Owns: HTTP Basic auth with the project secret as the user (401 otherwise), the required `from_date` /
//! `to_date` (`YYYY-MM-DD`, inclusive, UTC), the optional `project_id` (must match [`PROJECT_ID`]),
//! `event` (a JSON array of names) and `limit` (≤ 100,000) parameters, and the hourly query budget answered
//! with 429 and no `Retry-After`. `where` and the other parameters are refused with 400 (a deviation: the
//! live API evaluates `where` expressions). The 3-queries-per-second and concurrency limits are not
//! simulated. Error bodies `{"error", "status": "error"}` are assumed, not from the spec.
//!
//! Events are derived from each account's daily usage (`world`): per day, up to eight users each fire a
//! `Session Start`, and up to five feature events follow, every one carrying the account's domain in
//! `company_domain` (the property the shipped connector maps to accounts). Times are unix seconds within the
//! day, deterministic per account and day. It does not own the usage series itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use serde_json::json;

use crate::sim::world::World;
use crate::sim::{basic, json_response, lock, query_pairs, RollingWindow, SimState};

/// The project secret the simulator accepts (as the Basic-auth user, empty password).
pub const API_SECRET: &str = "mp_sim_project_secret";
/// The simulated project.
pub const PROJECT_ID: i64 = 3_141_592;
const FEATURES: [&str; 5] = [
    "Report Run",
    "Dashboard Viewed",
    "Export Created",
    "Alert Configured",
    "Integration Synced",
];

pub(crate) struct MixpanelState {
    limiter: Mutex<RollingWindow>,
}

impl MixpanelState {
    pub(crate) fn new(per_hour: u32) -> MixpanelState {
        MixpanelState {
            limiter: Mutex::new(RollingWindow::new(per_hour, Duration::from_secs(3600))),
        }
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/export", get(export))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, json!({"error": message, "status": "error"}))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if basic(req.headers()).map(|(user, _)| user).as_deref() != Some(API_SECRET) {
        return error(StatusCode::UNAUTHORIZED, "Invalid username or secret");
    }
    if lock(&st.mixpanel.limiter).try_hit(Instant::now()).is_err() {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "Query rate limit exceeded: 60 queries per hour",
        );
    }
    next.run(req).await
}

/// A deterministic offset in `0..span` from an account id and a day.
fn spread(key: &str, day: NaiveDate, k: u64, span: u64) -> u64 {
    let seed = key
        .bytes()
        .chain(day.to_string().into_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    (seed ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9) % span.max(1)
}

/// The export of `from..=to`: one JSON line per event, in time order within each account and day.
fn render(
    w: &World,
    from: NaiveDate,
    to: NaiveDate,
    only: Option<&[String]>,
    limit: usize,
) -> String {
    let mut out = String::new();
    let mut n = 0usize;
    let mut day = from;
    while day <= to {
        let midnight = day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp();
        for a in &w.accounts {
            let Ok(i) = a.usage.binary_search_by(|u| u.date.cmp(&day)) else {
                continue;
            };
            let u = &a.usage[i];
            let users = u.active_users.min(8) as u64;
            let features = u.features_used.min(FEATURES.len() as u32) as usize;
            let mut events: Vec<(i64, &str, String)> = (0..users)
                .map(|k| {
                    (
                        midnight + spread(&a.workspace_id, day, k, 80_000) as i64,
                        "Session Start",
                        format!("{}-u{k}", a.workspace_id),
                    )
                })
                .collect();
            for (k, name) in FEATURES.iter().take(features).enumerate() {
                let user = format!("{}-u{}", a.workspace_id, k as u64 % users.max(1));
                events.push((
                    midnight + 80_000 + spread(&a.workspace_id, day, 100 + k as u64, 6_000) as i64,
                    name,
                    user,
                ));
            }
            events.sort();
            for (time, name, user) in events {
                if only.is_some_and(|o| !o.iter().any(|e| e == name)) {
                    continue;
                }
                if n >= limit {
                    return out;
                }
                n += 1;
                let line = json!({"event": name, "properties": {
                    "time": time, "distinct_id": user, "$insert_id": format!("{user}-{time}"),
                    "mp_processing_time_ms": time * 1000 + 1500, "mp_lib": "web",
                    "company_domain": a.domain, "workspace_id": a.workspace_id,
                }});
                out.push_str(&line.to_string());
                out.push('\n');
            }
        }
        day = match day.succ_opt() {
            Some(d) => d,
            None => break,
        };
    }
    out
}

async fn export(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = query_pairs(&uri).unwrap_or_default();
    let (mut from, mut to, mut only, mut limit) = (None, None, None, 100_000usize);
    for (k, v) in &pairs {
        let date = || NaiveDate::parse_from_str(v, "%Y-%m-%d").ok();
        match k.as_str() {
            "from_date" => from = date(),
            "to_date" => to = date(),
            "project_id" if v.parse::<i64>().ok() == Some(PROJECT_ID) => {}
            "project_id" => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "project_id does not match the credentials",
                )
            }
            "event" => match serde_json::from_str::<Vec<String>>(v) {
                Ok(names) => only = Some(names),
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "event must be a JSON array of event names",
                    )
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if n <= 100_000 => limit = n,
                _ => return error(StatusCode::BAD_REQUEST, "limit cannot be over 100000"),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("parameter {other} is not supported by the simulator"),
                )
            }
        }
    }
    let (Some(from), Some(to)) = (from, to) else {
        return error(
            StatusCode::BAD_REQUEST,
            "from_date and to_date are required, as yyyy-mm-dd",
        );
    };
    if from > to {
        return error(
            StatusCode::BAD_REQUEST,
            "from_date cannot be later than to_date",
        );
    }
    let body = render(&st.world, from, to, only.as_deref(), limit);
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{kinds::testkit::drain, BuildContext, Built, Source};
    use crate::http::testing::{config, secrets};
    use crate::sim::test_support::*;
    use crate::sim::{SimRateLimits, Vendor};
    use crate::vocab::{AuthScheme, Role};

    #[tokio::test]
    async fn the_kind_rolls_up_the_simulated_export_per_account_day() {
        // The kind's "today" is the wall clock, so the simulated world ends now too.
        let mut opts = crate::sim::SimOptions::new(60, 42, chrono::Utc::now());
        opts.rate_limits = SimRateLimits::unlimited();
        let sim = crate::sim::start(opts).await.unwrap();
        let mut cfg = config(
            "mixpanel",
            Role::Source,
            &sim.base_url(Vendor::Mixpanel),
            AuthScheme::Basic,
        );
        let s = secrets(&mut cfg, &[("username", API_SECRET)]);
        cfg.params = (crate::connector::kinds::mixpanel::SPEC.parse_params)(
            &toml::from_str(&format!("project_id = {PROJECT_ID}\nbackfill_days = 3")).unwrap(),
        )
        .unwrap();
        cfg.streams = vec!["daily_activity".into()];
        let src: Box<dyn Source> = match crate::connector::kinds::mixpanel::build(&BuildContext {
            connector: &cfg,
            secrets: &s,
        }) {
            Ok(Built::Source(src)) => src,
            _ => panic!("mixpanel builds a source"),
        };
        let d = drain(src.as_ref(), "daily_activity", None).await.unwrap();
        assert!(d.pages >= 4 && d.rejected.is_empty(), "{:?}", d.rejected);
        assert!(
            d.records.len() > 60,
            "three complete days of 60 accounts, most of them active"
        );
        let w = sim.world();
        for r in &d.records {
            let date =
                NaiveDate::parse_from_str(r.fields["date"].as_str().unwrap(), "%Y-%m-%d").unwrap();
            let a = w
                .accounts
                .iter()
                .find(|a| a.domain == r.account_keys["domain"])
                .expect("joins an account");
            let u = a
                .usage
                .iter()
                .find(|u| u.date == date)
                .expect("a usage day");
            assert_eq!(
                r.fields["active_users"],
                u64::from(u.active_users.min(8)),
                "{}",
                r.id
            );
        }
    }

    #[tokio::test]
    async fn export_checks_auth_params_and_the_hourly_budget() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Mixpanel, 1);
        let sim = start_sim(10, limits).await;
        let base = format!("{}/export", sim.base_url(Vendor::Mixpanel));
        let denied = call(
            "GET",
            &format!("{base}?from_date=2026-11-20&to_date=2026-11-20"),
            Auth::Basic("nope"),
            None,
        )
        .await;
        assert_eq!(denied.status, 401);
        let ok = client()
            .get(format!(
                "{base}?from_date=2026-11-20&to_date=2026-11-21&event=%5B%22Session%20Start%22%5D"
            ))
            .basic_auth(API_SECRET, Some(""))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let text = ok.text().await.unwrap();
        assert!(
            !text.is_empty()
                && text
                    .lines()
                    .all(
                        |l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                            == "Session Start"
                    )
        );
        let throttled = call(
            "GET",
            &format!("{base}?from_date=2026-11-20&to_date=2026-11-20"),
            Auth::Basic(API_SECRET),
            None,
        )
        .await;
        assert_eq!(
            (throttled.status, throttled.header("retry-after")),
            (429, "")
        );
        let w = World::generate(3, 1, now());
        let d = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        assert_eq!(
            render(&w, d, d, None, 2).lines().count(),
            2,
            "limit caps the export"
        );
    }
}
