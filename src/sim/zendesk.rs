//! Simulated Zendesk Support API v2 under the `/zendesk` prefix: organizations (cursor pagination, and the
//! time-based incremental export), the cursor-based incremental ticket export and legacy CSAT satisfaction ratings, over the world's accounts
//! and the support history in `support`.
//!
//! Wire behaviour: Basic auth `{email}/token:{token}` or `Bearer {token}` (else 401
//! `{"error":"Couldn't authenticate you"}`); an account-wide per-minute budget with `X-Rate-Limit` and
//! `X-Rate-Limit-Remaining` (and `ratelimit-limit`, `ratelimit-remaining`, `ratelimit-reset` seconds) on
//! every authenticated response; the incremental export has its own per-minute
//! budget (10 by default, as Zendesk documents); over a budget → 429 with `Retry-After` seconds.
//! Organization export (time-based): `start_time` (unix, required, refused with 400 within the last
//! minute) → `organizations` updated at or after it, by (updated_at, id), at most 1,000, with `count`,
//! `end_time` (the last one's `updated_at`), `next_page` and `end_of_stream`.
//! Export: `start_time` (unix, required on the first call, refused with 400 when within the last minute)
//! or `cursor`, `per_page` ≤ 1000 → `tickets`, `after_cursor`, `after_url`, `before_*`, `end_of_stream`,
//! ordered by (updated_at, id). Lists: `page[size]` ≤ 100, `page[after]` → `meta.has_more`,
//! `meta.after_cursor`, `links.next`. Ratings accept `start_time`/`end_time` on `created_at` and are
//! ordered by creation. Assumed (not in the docs we hold): the 400 and 429 body texts, that the sim's org
//! ids are small integers. This file does not own the accounts (`world`) or the tickets (`support`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::sim::support::{self, Priority, SupportTicket, TicketState};
use crate::sim::world::World;
use crate::sim::{
    basic, bearer, ceil_secs, decode_cursor, encode_cursor, json_response, lock, query_pairs,
    RollingWindow, SimState, Vendor,
};

/// The Basic-auth user of an API token: the agent address the sim expects, then `/token`.
pub(crate) const API_TOKEN_USER: &str = "agent@healthsync.example/token";
const EXPORT_PATH: &str = "/api/v2/incremental/tickets/cursor.json";
/// The time-based organization export; shares the export budget with tickets.
const ORG_EXPORT_PATH: &str = "/api/v2/incremental/organizations";
/// Items a time-based export page holds at most.
const TIME_EXPORT_PAGE: usize = 1000;
/// The host in records' own `url` fields: fixed, so stored records do not depend on the sim's port.
const RESOURCE_HOST: &str = "https://healthsync-sim.zendesk.com";
const ORG_BASE: u64 = 360_000_000;
const RATING_BASE: u64 = 7_000_000;

pub(crate) struct ZendeskState {
    limiter: Mutex<RollingWindow>,
    export_limiter: Mutex<RollingWindow>,
    /// Sorted by (updated_at, seq): the export order.
    tickets: Vec<SupportTicket>,
    /// Indices into `tickets` of rated tickets, sorted by (rating time, seq).
    ratings: Vec<usize>,
}

impl ZendeskState {
    pub(crate) fn new(world: &World, per_min: u32, export_per_min: u32) -> ZendeskState {
        let mut tickets = support::tickets(world);
        tickets.sort_by_key(|t| (t.updated_at, t.seq));
        let mut ratings: Vec<usize> = (0..tickets.len())
            .filter(|&i| tickets[i].csat.is_some())
            .collect();
        ratings.sort_by_key(|&i| (tickets[i].csat.as_ref().map(|c| c.at), tickets[i].seq));
        ZendeskState {
            limiter: Mutex::new(RollingWindow::new(per_min, Duration::from_secs(60))),
            export_limiter: Mutex::new(RollingWindow::new(export_per_min, Duration::from_secs(60))),
            tickets,
            ratings,
        }
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/api/v2/organizations", get(organizations))
        .route(EXPORT_PATH, get(export))
        .route(ORG_EXPORT_PATH, get(organization_export))
        .route("/api/v2/satisfaction_ratings", get(ratings))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(status, json!({"error": error, "description": description}))
}

fn authorized(headers: &axum::http::HeaderMap) -> bool {
    bearer(headers) == Some(Vendor::Zendesk.credential())
        || basic(headers)
            .is_some_and(|(u, p)| u == API_TOKEN_USER && p == Vendor::Zendesk.credential())
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if !authorized(req.headers()) {
        return json_response(
            StatusCode::UNAUTHORIZED,
            json!({"error": "Couldn't authenticate you"}),
        );
    }
    let now = Instant::now();
    let general = lock(&st.zendesk.limiter).try_hit(now);
    let export = if req.uri().path().contains("/api/v2/incremental/") {
        lock(&st.zendesk.export_limiter).try_hit(now).map(Some)
    } else {
        Ok(None)
    };
    let (remaining, limit, reset) = {
        let l = lock(&st.zendesk.limiter);
        let reset = ceil_secs(l.until_free(now)).max(1);
        (general.unwrap_or(0), l.limit(), reset)
    };
    let mut resp = match (general, export) {
        (Err(wait), _) | (_, Err(wait)) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "APIRateLimitExceeded",
                "Number of allowed API requests per minute exceeded",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(wait).max(1)),
            );
            r
        }
        _ => next.run(req).await,
    };
    let h = resp.headers_mut();
    h.insert("x-rate-limit", HeaderValue::from(limit));
    h.insert("x-rate-limit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-limit", HeaderValue::from(limit));
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    resp
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn org_id(account: usize) -> u64 {
    ORG_BASE + account as u64 + 1
}

/// `page[size]` and the decoded `page[after]` position.
fn list_params(pairs: &[(String, String)]) -> Result<(usize, usize), &'static str> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let size = match get("page[size]").map(str::parse::<usize>) {
        None => 100,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return Err("page[size] must be between 1 and 100"),
    };
    let start = match get("page[after]") {
        None => 0,
        Some(c) => match decode_cursor(c).and_then(|s| s.parse::<usize>().ok()) {
            Some(n) => n,
            None => return Err("page[after] is not a valid cursor"),
        },
    };
    Ok((size, start))
}

fn list_body(
    st: &SimState,
    key: &str,
    items: Vec<Value>,
    size: usize,
    start: usize,
    total: usize,
) -> Value {
    let end = start + items.len();
    let has_more = end < total;
    let after = has_more.then(|| encode_cursor(&end.to_string()));
    let next = after.as_ref().map(|a| {
        format!(
            "{}/zendesk/api/v2/{key}?page[size]={size}&page[after]={a}",
            st.base
        )
    });
    json!({
        key: items,
        "meta": {"has_more": has_more, "after_cursor": after, "before_cursor": encode_cursor(&start.to_string())},
        "links": {"next": next, "prev": null},
    })
}

fn organization_json(i: usize, a: &crate::sim::SimAccount) -> Value {
    json!({
        "url": format!("{RESOURCE_HOST}/api/v2/organizations/{}.json", org_id(i)),
        "id": org_id(i), "name": a.name, "shared_tickets": false, "shared_comments": false,
        "external_id": null, "domain_names": [a.domain], "details": "", "notes": "",
        "group_id": null, "tags": [a.tier.as_str()], "organization_fields": {},
        "created_at": ts(a.created_at), "updated_at": ts(a.hs_lastmodified),
    })
}

async fn organization_export(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "InvalidValue", m);
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let horizon = st.clock() - TimeDelta::seconds(60);
    let start = match pairs
        .iter()
        .find(|(k, _)| k == "start_time")
        .map(|(_, v)| v.parse::<i64>())
    {
        Some(Ok(t)) if t > horizon.timestamp() => {
            return bad("Too recent start_time. Use a start_time older than 1 minute")
        }
        Some(Ok(t)) => t,
        _ => return bad("start_time is required and must be a unix time"),
    };
    let accounts = &st.world.accounts;
    let mut hits: Vec<usize> = (0..accounts.len())
        .filter(|&i| {
            let at = accounts[i].hs_lastmodified;
            at.timestamp() >= start && at <= horizon
        })
        .collect();
    hits.sort_by_key(|&i| (accounts[i].hs_lastmodified, org_id(i)));
    let end_of_stream = hits.len() <= TIME_EXPORT_PAGE;
    hits.truncate(TIME_EXPORT_PAGE);
    let end_time = hits.last().map_or(horizon.timestamp(), |&i| {
        accounts[i].hs_lastmodified.timestamp()
    });
    let items: Vec<Value> = hits
        .iter()
        .map(|&i| organization_json(i, &accounts[i]))
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "organizations": items, "count": hits.len(), "end_time": end_time,
            "end_of_stream": end_of_stream, "previous_page": null,
            "next_page": format!("{}/zendesk{ORG_EXPORT_PATH}.json?start_time={end_time}", st.base),
        }),
    )
}

async fn organizations(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidValue", &e),
    };
    let (size, start) = match list_params(&pairs) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, "InvalidPaginationParameter", m),
    };
    let accounts = &st.world.accounts;
    let end = (start + size).min(accounts.len());
    let items: Vec<Value> = (start.min(end)..end)
        .map(|i| organization_json(i, &accounts[i]))
        .collect();
    let body = list_body(&st, "organizations", items, size, start, accounts.len());
    json_response(StatusCode::OK, body)
}

fn ticket_json(t: &SupportTicket) -> Value {
    let status = match t.state {
        TicketState::Open => "open",
        TicketState::Pending => "pending",
        TicketState::Solved => "solved",
        TicketState::Closed => "closed",
    };
    let priority = match t.priority {
        Priority::Low => "low",
        Priority::Normal => "normal",
        Priority::High => "high",
        Priority::Urgent => "urgent",
    };
    let rating = match &t.csat {
        None => json!({"score": "unoffered"}),
        Some(c) => json!({"id": RATING_BASE + t.seq, "score": if c.good { "good" } else { "bad" },
                          "comment": c.comment}),
    };
    json!({
        "url": format!("{RESOURCE_HOST}/api/v2/tickets/{}.json", t.seq), "id": t.seq,
        "external_id": null, "type": "question", "subject": t.subject, "raw_subject": t.subject,
        "description": t.subject, "priority": priority, "status": status,
        "requester_id": 10_000 + t.seq, "submitter_id": 10_000 + t.seq, "assignee_id": 501,
        "organization_id": org_id(t.account), "group_id": 601, "tags": [], "custom_fields": [],
        "satisfaction_rating": rating, "via": {"channel": "email"},
        "created_at": ts(t.created_at), "updated_at": ts(t.updated_at),
        "generated_timestamp": t.updated_at.timestamp(),
    })
}

async fn export(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "InvalidValue", m);
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let per_page = match get("per_page").map(str::parse::<usize>) {
        None => 1000,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return bad("per_page must be between 1 and 1000"),
    };
    let tickets = &st.zendesk.tickets;
    // Items changed in the last minute are left out of every export.
    let horizon = st.clock() - TimeDelta::seconds(60);
    let visible = tickets.partition_point(|t| t.updated_at <= horizon);
    let start = match (get("cursor"), get("start_time")) {
        (Some(c), _) => match decode_cursor(c).and_then(|s| s.parse::<usize>().ok()) {
            Some(n) => n,
            None => return bad("cursor is invalid"),
        },
        (None, Some(s)) => match s.parse::<i64>() {
            Ok(unix) if unix > horizon.timestamp() => {
                return bad("start_time is too recent; it must be more than one minute ago")
            }
            Ok(unix) => tickets.partition_point(|t| t.updated_at.timestamp() < unix),
            Err(_) => return bad("start_time must be a unix timestamp"),
        },
        (None, None) => return bad("start_time or cursor is required"),
    };
    let start = start.min(visible);
    let end = (start + per_page).min(visible);
    let items: Vec<Value> = tickets[start..end].iter().map(ticket_json).collect();
    let after = encode_cursor(&end.to_string());
    let before = encode_cursor(&start.to_string());
    let url = |c: &str| format!("{}/zendesk{EXPORT_PATH}?cursor={c}", st.base);
    json_response(
        StatusCode::OK,
        json!({
            "tickets": items, "after_url": url(&after), "after_cursor": after,
            "before_url": url(&before), "before_cursor": before, "end_of_stream": end >= visible,
        }),
    )
}

async fn ratings(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, "InvalidValue", &e),
    };
    let (size, start) = match list_params(&pairs) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, "InvalidPaginationParameter", m),
    };
    let unix = |k: &str| -> Result<Option<i64>, String> {
        match pairs.iter().find(|(n, _)| n == k) {
            None => Ok(None),
            Some((_, v)) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{k} must be a unix timestamp")),
        }
    };
    let (from, until) = match (unix("start_time"), unix("end_time")) {
        (Ok(a), Ok(b)) => (a.unwrap_or(i64::MIN), b.unwrap_or(i64::MAX)),
        (Err(m), _) | (_, Err(m)) => return error(StatusCode::BAD_REQUEST, "InvalidValue", &m),
    };
    let tickets = &st.zendesk.tickets;
    let rated: Vec<(&SupportTicket, DateTime<Utc>)> = st
        .zendesk
        .ratings
        .iter()
        .filter_map(|&i| tickets[i].csat.as_ref().map(|c| (&tickets[i], c.at)))
        .filter(|(_, at)| (from..=until).contains(&at.timestamp()))
        .collect();
    let end = (start + size).min(rated.len());
    let items: Vec<Value> = rated[start.min(end)..end]
        .iter()
        .map(|(t, at)| {
            let c = t.csat.as_ref();
            json!({
                "url": format!("{RESOURCE_HOST}/api/v2/satisfaction_ratings/{}.json", RATING_BASE + t.seq),
                "id": RATING_BASE + t.seq, "assignee_id": 501, "group_id": 601,
                "requester_id": 10_000 + t.seq, "ticket_id": t.seq,
                "score": if c.is_some_and(|c| c.good) { "good" } else { "bad" },
                "comment": c.and_then(|c| c.comment), "reason": null,
                "created_at": ts(*at), "updated_at": ts(*at),
            })
        })
        .collect();
    let body = list_body(&st, "satisfaction_ratings", items, size, start, rated.len());
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::kinds::support_testkit::{client, run_ok};
    use crate::connector::kinds::zendesk::Zendesk;
    use crate::sim::test_support::{call, start_sim, Auth};
    use crate::sim::{SimRateLimits, Vendor};
    use crate::vocab::AuthScheme;

    #[tokio::test]
    async fn the_kind_syncs_everything_then_only_changes() {
        let sim = start_sim(60, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Zendesk);
        let secrets = [
            ("username", API_TOKEN_USER),
            ("password", Vendor::Zendesk.credential()),
        ];
        let http = || client(&base, AuthScheme::Basic, &secrets).0;
        let src = Zendesk::new(http(), http(), vec![], Some(50));
        let world = sim.world();
        let expected = support::tickets(&world);
        let orgs = run_ok(&src, "organizations", None).await;
        assert_eq!((orgs.records.len(), orgs.pages), (60, 1));
        let first_org = world
            .accounts
            .iter()
            .min_by_key(|a| a.hs_lastmodified)
            .map(|a| a.domain.as_str());
        assert_eq!(orgs.key(0, "domain"), first_org, "oldest change first");
        let again = run_ok(&src, "organizations", Some(orgs.cursor)).await;
        assert!(again.records.len() < 5, "{} re-read", again.records.len());
        let first = run_ok(&src, "tickets", None).await;
        assert_eq!(first.records.len(), expected.len());
        assert!(first.pages >= 3, "{} pages", first.pages);
        let second = run_ok(&src, "tickets", Some(first.cursor)).await;
        assert!(
            second.records.len() < 5,
            "lookback re-reads only the last minutes"
        );
        let ratings = run_ok(&src, "satisfaction_ratings", None).await;
        let rated = expected.iter().filter(|t| t.csat.is_some()).count();
        assert_eq!(ratings.records.len(), rated);
    }

    #[tokio::test]
    async fn auth_throttle_and_recent_start_time() {
        let mut limits = SimRateLimits::unlimited();
        limits.zendesk_incremental_per_min = 1;
        let sim = start_sim(5, limits).await;
        let url = |q: &str| format!("{}{EXPORT_PATH}?{q}", sim.base_url(Vendor::Zendesk));
        let r = call("GET", &url("start_time=0"), Auth::Bearer("wrong"), None).await;
        assert_eq!(r.status, 401);
        let ok = call(
            "GET",
            &url("start_time=0"),
            Auth::Bearer(Vendor::Zendesk.credential()),
            None,
        )
        .await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body["end_of_stream"], json!(true));
        let throttled = call(
            "GET",
            &url("start_time=0"),
            Auth::Bearer(Vendor::Zendesk.credential()),
            None,
        )
        .await;
        assert_eq!(throttled.status, 429);
        assert!(throttled.header("retry-after").parse::<u64>().unwrap() >= 1);
        let orgs = format!("{}/api/v2/organizations", sim.base_url(Vendor::Zendesk));
        let r = call(
            "GET",
            &orgs,
            Auth::Bearer(Vendor::Zendesk.credential()),
            None,
        )
        .await;
        assert_eq!(
            r.status, 200,
            "the plain list is not under the export budget"
        );
        let org_export = format!(
            "{}{ORG_EXPORT_PATH}?start_time=0",
            sim.base_url(Vendor::Zendesk)
        );
        let r = call(
            "GET",
            &org_export,
            Auth::Bearer(Vendor::Zendesk.credential()),
            None,
        )
        .await;
        assert_eq!(
            r.status, 429,
            "the organization export shares the export budget"
        );
        let mut limits = SimRateLimits::unlimited();
        limits.zendesk_incremental_per_min = 10;
        let sim = start_sim(5, limits).await;
        let soon = (sim.world().now + TimeDelta::hours(1)).timestamp();
        let url = format!(
            "{}{EXPORT_PATH}?start_time={soon}",
            sim.base_url(Vendor::Zendesk)
        );
        let r = call(
            "GET",
            &url,
            Auth::Bearer(Vendor::Zendesk.credential()),
            None,
        )
        .await;
        assert_eq!(r.status, 400);
    }
}
