//! Simulated Delighted v1 API under the `/delighted` prefix: `GET /v1/survey_responses.json`, NPS responses
//! from people at each account's domain, generated deterministically per account (healthy accounts answer
//! 8–10 and churning ones often 0–6, with comments to match).
//!
//! Wire behaviour: HTTP Basic with the API key as user and an empty password, else 401
//! `{"status":401,"message":"Unauthorized"}`; a per-minute budget, over it 429 with `Retry-After` seconds.
//! The listing is a JSON array; `per_page` (default 20, max 100), `page` (from 1), `since`/`until` on
//! `created_at`, `updated_since`/`updated_until` on `updated_at` (unix, inclusive), `order` `asc`
//! (default, creation order) / `desc` / `asc:updated_at` / `desc:updated_at`, `expand[]=person` to embed
//! the person instead of its id. `updated_at` is null for responses never edited, as in Delighted's own
//! examples (the filter then uses `created_at`). Assumed: the 401 body text and the rate-limit budget.
//! This file does not own the accounts (`world`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration as Days, Utc};
use rand::Rng;
use serde_json::{json, Value};

use crate::sim::support::account_rng;
use crate::sim::world::{by, World};
use crate::sim::{
    basic, ceil_secs, json_response, lock, query_pairs, RollingWindow, SimState, Vendor,
};

const PEOPLE: [&str; 4] = ["maria", "chen", "sam.lee", "priya"];
const PRAISE: [&str; 3] = ["Love the dashboards", "Support is great", "Saves us hours"];
const NEUTRAL: [&str; 2] = ["Does the job", "Setup was fiddly"];
const COMPLAINTS: [&str; 3] = [
    "Too expensive for what we use",
    "Constant sync errors",
    "We are moving to another tool",
];

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NpsResponse {
    pub id: u64,
    pub account: usize,
    pub person: &'static str,
    pub person_id: u64,
    pub score: u8,
    pub comment: Option<&'static str>,
    pub created_at: DateTime<Utc>,
    /// `None` until someone edits the response (a note or tag added later).
    pub updated_at: Option<DateTime<Utc>>,
}

impl NpsResponse {
    fn changed_at(&self) -> DateTime<Utc> {
        self.updated_at.unwrap_or(self.created_at)
    }
}

/// Every account's responses of the last 180 days, numbered in creation order.
pub(crate) fn responses(world: &World) -> Vec<NpsResponse> {
    let mut out = Vec::new();
    for (i, a) in world.accounts.iter().enumerate() {
        let mut rng = account_rng(&a.hubspot_id, 0xde1 << 40);
        let n = rng.gen_range(0..=4);
        let (lo, hi) = by(a.trajectory, [(6, 10), (4, 9), (0, 7)]);
        for _ in 0..n {
            let p = rng.gen_range(0..PEOPLE.len());
            let created =
                (world.now - Days::minutes(rng.gen_range(30..180 * 24 * 60))).max(a.created_at);
            let score: u8 = rng.gen_range(lo..=hi);
            let pool: &[&'static str] = match score {
                9.. => &PRAISE,
                7..=8 => &NEUTRAL,
                _ => &COMPLAINTS,
            };
            let comment = rng
                .gen_bool(0.6)
                .then(|| pool[rng.gen_range(0..pool.len())]);
            let updated = rng
                .gen_bool(0.3)
                .then(|| (created + Days::minutes(rng.gen_range(1..7 * 24 * 60))).min(world.now));
            out.push(NpsResponse {
                id: 0,
                account: i,
                person: PEOPLE[p],
                person_id: 500_000 + (i * PEOPLE.len() + p) as u64,
                score,
                comment,
                created_at: created,
                updated_at: updated,
            });
        }
    }
    out.sort_by_key(|r| (r.created_at, r.person_id));
    for (n, r) in out.iter_mut().enumerate() {
        r.id = n as u64 + 1;
    }
    out
}

pub(crate) struct DelightedState {
    limiter: Mutex<RollingWindow>,
    responses: Vec<NpsResponse>,
}

impl DelightedState {
    pub(crate) fn new(world: &World, per_min: u32) -> DelightedState {
        DelightedState {
            limiter: Mutex::new(RollingWindow::new(per_min, Duration::from_secs(60))),
            responses: responses(world),
        }
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/survey_responses.json", get(list))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if basic(req.headers()).is_none_or(|(user, _)| user != Vendor::Delighted.credential()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"status": 401, "message": "Unauthorized"}),
        );
    }
    if let Err(wait) = lock(&st.delighted.limiter).try_hit(Instant::now()) {
        let mut r = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"status": 429, "message": "Too Many Requests"}),
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(ceil_secs(wait).max(1)),
        );
        return r;
    }
    next.run(req).await
}

fn response_json(st: &SimState, r: &NpsResponse, expand: bool) -> Value {
    let a = &st.world.accounts[r.account];
    let person = if expand {
        json!({"id": r.person_id.to_string(), "email": format!("{}@{}", r.person, a.domain),
               "name": r.person, "created_at": a.created_at.timestamp(), "last_sent_at": r.created_at.timestamp()})
    } else {
        Value::String(r.person_id.to_string())
    };
    json!({
        "id": r.id.to_string(), "person": person, "survey_type": "nps", "score": r.score,
        "comment": r.comment, "permalink": format!("https://app.delighted.com/r/sim{}", r.id),
        "created_at": r.created_at.timestamp(), "updated_at": r.updated_at.map(|t| t.timestamp()),
        "person_properties": {"Tier": a.tier.as_str()}, "notes": [], "tags": [],
        "additional_answers": [],
    })
}

async fn list(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let bad = |m: &str| {
        json_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"status": 422, "message": m}),
        )
    };
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let mut nums = [None; 6];
    let names = [
        "per_page",
        "page",
        "since",
        "until",
        "updated_since",
        "updated_until",
    ];
    for (slot, name) in nums.iter_mut().zip(names) {
        match get(name).map(str::parse::<i64>) {
            None => {}
            Some(Ok(n)) => *slot = Some(n),
            Some(Err(_)) => return bad(&format!("{name} must be an integer")),
        }
    }
    let [per_page, page, since, until, usince, uuntil] = nums;
    let (per_page, page) = (per_page.unwrap_or(20), page.unwrap_or(1));
    if !(1..=100).contains(&per_page) || page < 1 {
        return bad("per_page must be 1 to 100 and page at least 1");
    }
    let (by_updated, descending) = match get("order") {
        None | Some("asc") => (false, false),
        Some("desc") => (false, true),
        Some("asc:updated_at") => (true, false),
        Some("desc:updated_at") => (true, true),
        Some(_) => return bad("order must be asc, desc, asc:updated_at or desc:updated_at"),
    };
    let expand = pairs.iter().any(|(k, v)| k == "expand[]" && v == "person");
    let within = |t: i64, lo: Option<i64>, hi: Option<i64>| {
        lo.is_none_or(|l| t >= l) && hi.is_none_or(|h| t <= h)
    };
    let mut matching: Vec<&NpsResponse> = st
        .delighted
        .responses
        .iter()
        .filter(|r| within(r.created_at.timestamp(), since, until))
        .filter(|r| within(r.changed_at().timestamp(), usince, uuntil))
        .collect();
    matching.sort_by_key(|r| {
        (
            if by_updated {
                r.changed_at()
            } else {
                r.created_at
            },
            r.id,
        )
    });
    if descending {
        matching.reverse();
    }
    let (per_page, page) = (per_page as usize, page as usize);
    let start = page
        .saturating_sub(1)
        .saturating_mul(per_page)
        .min(matching.len());
    let end = (start + per_page).min(matching.len());
    let items: Vec<Value> = matching[start..end]
        .iter()
        .map(|r| response_json(&st, r, expand))
        .collect();
    json_response(StatusCode::OK, Value::Array(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::kinds::delighted::Delighted;
    use crate::connector::kinds::support_testkit::{client, run_ok};
    use crate::sim::test_support::{call, now, start_sim, Auth};
    use crate::sim::world::Trajectory;
    use crate::sim::{SimRateLimits, Vendor};
    use crate::vocab::AuthScheme;

    #[test]
    fn scores_follow_the_trajectory() {
        let w = World::generate(500, 9, now());
        let rs = responses(&w);
        assert_eq!(rs, responses(&World::generate(500, 9, now())));
        let mean = |t: Trajectory| {
            let s: Vec<f64> = rs
                .iter()
                .filter(|r| w.accounts[r.account].trajectory == t)
                .map(|r| f64::from(r.score))
                .collect();
            s.iter().sum::<f64>() / s.len().max(1) as f64
        };
        assert!(mean(Trajectory::Healthy) > mean(Trajectory::Churning) + 3.0);
    }

    #[tokio::test]
    async fn the_kind_syncs_everything_then_only_changes() {
        let sim = start_sim(80, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Delighted);
        let (http, _) = client(
            &base,
            AuthScheme::Basic,
            &[("username", Vendor::Delighted.credential())],
        );
        let src = Delighted::new(http, vec![], Some(30));
        let expected = responses(&sim.world()).len();
        let first = run_ok(&src, "survey_responses", None).await;
        assert_eq!(first.records.len(), expected);
        assert!(first.pages >= 3);
        let world = sim.world();
        assert!(first.records.iter().all(|r| world
            .accounts
            .iter()
            .any(|a| r.account_keys.get("domain") == Some(&a.domain))));
        let second = run_ok(&src, "survey_responses", Some(first.cursor)).await;
        assert!(second.records.len() < 5, "{}", second.records.len());
    }

    #[tokio::test]
    async fn auth_and_throttle() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Delighted, 1);
        let sim = start_sim(5, limits).await;
        let url = format!(
            "{}/v1/survey_responses.json",
            sim.base_url(Vendor::Delighted)
        );
        assert_eq!(
            call("GET", &url, Auth::Basic("nope"), None).await.status,
            401
        );
        let ok = call(
            "GET",
            &url,
            Auth::Basic(Vendor::Delighted.credential()),
            None,
        )
        .await;
        assert_eq!(ok.status, 200);
        assert!(ok.body.as_array().is_some());
        let r = call(
            "GET",
            &url,
            Auth::Basic(Vendor::Delighted.credential()),
            None,
        )
        .await;
        assert_eq!(r.status, 429);
        assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    }
}
