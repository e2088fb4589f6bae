//! Simulated Freshdesk API v2 under the `/freshdesk` prefix: `GET /api/v2/companies` and
//! `GET /api/v2/tickets` over the world's accounts and the support history in `support`.
//!
//! Wire behaviour: HTTP Basic with the API key as user and any password (Freshdesk's convention is `X`),
//! else 401 `{"code":"invalid_credentials",…}`; a per-minute budget with `X-RateLimit-Total`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Used-CurrentRequest` on every authenticated response; over it
//! → 429 with `Retry-After` seconds. Lists take `per_page` ≤ 100 and `page` ≥ 1 and announce the next page
//! with `Link: <absolute url>; rel="next"`. Tickets: without `updated_since` only those created in the last
//! 30 days; `updated_since` (RFC 3339) filters `updated_at >=`; `order_by` `created_at` (default) or
//! `updated_at`, `order_type` `desc` (default) or `asc`; pages past 300 are refused with 400. Status is
//! 2–5 (open, pending, resolved, closed) and priority 1–4. Assumed: the error body texts and the
//! 300-page cap. This file does not own the accounts (`world`) or the tickets (`support`).

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
    basic, ceil_secs, json_response, lock, query_pairs, RollingWindow, SimState, Vendor,
};

const COMPANY_BASE: u64 = 80_000_000;
const PAGE_CAP: usize = 300;

pub(crate) struct FreshdeskState {
    limiter: Mutex<RollingWindow>,
    tickets: Vec<SupportTicket>,
}

impl FreshdeskState {
    pub(crate) fn new(world: &World, per_min: u32) -> FreshdeskState {
        FreshdeskState {
            limiter: Mutex::new(RollingWindow::new(per_min, Duration::from_secs(60))),
            tickets: support::tickets(world),
        }
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/api/v2/companies", get(companies))
        .route("/api/v2/tickets", get(tickets))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

fn bad(message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"description": "Validation failed",
               "errors": [{"field": "query", "message": message, "code": "invalid_value"}]}),
    )
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if basic(req.headers()).is_none_or(|(user, _)| user != Vendor::Freshdesk.credential()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "You have to be logged in to perform this action.",
        );
    }
    let (verdict, limit) = {
        let mut l = lock(&st.freshdesk.limiter);
        (l.try_hit(Instant::now()), l.limit())
    };
    let (mut resp, remaining) = match verdict {
        Ok(remaining) => (next.run(req).await, remaining),
        Err(wait) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "You have exceeded the limit of requests per minute",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(wait).max(1)),
            );
            (r, 0)
        }
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-total", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-used-currentrequest", HeaderValue::from(1));
    resp
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `(per_page, page)` from the query.
fn paging(pairs: &[(String, String)]) -> Result<(usize, usize), &'static str> {
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let per_page = match get("per_page").map(str::parse::<usize>) {
        None => 30,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return Err("per_page must be between 1 and 100"),
    };
    let page = match get("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if (1..=PAGE_CAP).contains(&n) => n,
        Some(_) => return Err("page must be between 1 and 300"),
    };
    Ok((per_page, page))
}

/// A JSON array response with a `Link` to the next page when there is one.
fn list_response(
    st: &SimState,
    uri: &Uri,
    pairs: &[(String, String)],
    items: Vec<Value>,
    more: bool,
    page: usize,
) -> Response {
    let mut resp = json_response(StatusCode::OK, Value::Array(items));
    let url = reqwest::Url::parse(&format!("{}/freshdesk{}", st.base, uri.path()));
    if let (true, Ok(mut url)) = (more, url) {
        url.query_pairs_mut()
            .extend_pairs(pairs.iter().filter(|(k, _)| k != "page"))
            .append_pair("page", &(page + 1).to_string());
        if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"next\"")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    resp
}

async fn companies(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let (per_page, page) = match paging(&pairs) {
        Ok(x) => x,
        Err(m) => return bad(m),
    };
    let accounts = &st.world.accounts;
    let start = ((page - 1) * per_page).min(accounts.len());
    let end = (start + per_page).min(accounts.len());
    let items = (start..end)
        .map(|i| {
            let a = &accounts[i];
            json!({
                "id": COMPANY_BASE + i as u64 + 1, "name": a.name, "description": null,
                "domains": [a.domain], "note": null, "custom_fields": {}, "health_score": null,
                "account_tier": a.tier.as_str(), "renewal_date": null, "industry": "Software",
                "created_at": ts(a.created_at), "updated_at": ts(a.hs_lastmodified),
            })
        })
        .collect();
    list_response(&st, &uri, &pairs, items, end < accounts.len(), page)
}

fn ticket_json(t: &SupportTicket) -> Value {
    let status = match t.state {
        TicketState::Open => 2,
        TicketState::Pending => 3,
        TicketState::Solved => 4,
        TicketState::Closed => 5,
    };
    let priority = match t.priority {
        Priority::Low => 1,
        Priority::Normal => 2,
        Priority::High => 3,
        Priority::Urgent => 4,
    };
    json!({
        "cc_emails": [], "fwd_emails": [], "reply_cc_emails": [], "ticket_cc_emails": [],
        "fr_escalated": false, "spam": false, "email_config_id": null, "group_id": 7,
        "priority": priority, "requester_id": 60_000 + t.seq, "responder_id": 44, "source": 1,
        "company_id": COMPANY_BASE + t.account as u64 + 1, "status": status, "subject": t.subject,
        "support_email": null, "to_emails": null, "product_id": null, "id": t.seq, "type": "Question",
        "due_by": ts(t.created_at + TimeDelta::days(3)), "fr_due_by": ts(t.created_at + TimeDelta::days(1)),
        "is_escalated": false, "custom_fields": {}, "created_at": ts(t.created_at),
        "updated_at": ts(t.updated_at), "tags": [],
    })
}

async fn tickets(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let (per_page, page) = match paging(&pairs) {
        Ok(x) => x,
        Err(m) => return bad(m),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let since = match get("updated_since").map(DateTime::parse_from_rfc3339) {
        None => None,
        Some(Ok(t)) => Some(t.with_timezone(&Utc)),
        Some(Err(_)) => return bad("updated_since must be an RFC 3339 date-time"),
    };
    let by_updated = match get("order_by") {
        None | Some("created_at") => false,
        Some("updated_at") => true,
        Some(_) => return bad("order_by must be created_at, due_by, updated_at or status"),
    };
    let ascending = match get("order_type") {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return bad("order_type must be asc or desc"),
    };
    let created_floor = st.world.now - TimeDelta::days(30);
    let mut matching: Vec<&SupportTicket> = st
        .freshdesk
        .tickets
        .iter()
        .filter(|t| match since {
            Some(s) => t.updated_at >= s,
            None => t.created_at >= created_floor,
        })
        .collect();
    matching.sort_by_key(|t| {
        let at = if by_updated {
            t.updated_at
        } else {
            t.created_at
        };
        (at, t.seq)
    });
    if !ascending {
        matching.reverse();
    }
    let start = ((page - 1) * per_page).min(matching.len());
    let end = (start + per_page).min(matching.len());
    let items = matching[start..end]
        .iter()
        .map(|t| ticket_json(t))
        .collect();
    let more = end < matching.len() && page < PAGE_CAP;
    list_response(&st, &uri, &pairs, items, more, page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::kinds::freshdesk::Freshdesk;
    use crate::connector::kinds::support_testkit::{client, run_ok};
    use crate::sim::test_support::{call, start_sim, Auth};
    use crate::sim::{SimRateLimits, Vendor};
    use crate::vocab::AuthScheme;

    #[tokio::test]
    async fn the_kind_syncs_everything_then_only_changes() {
        let sim = start_sim(60, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Freshdesk);
        let secrets = [
            ("username", Vendor::Freshdesk.credential()),
            ("password", "X"),
        ];
        let (http, _) = client(&base, AuthScheme::Basic, &secrets);
        let src = Freshdesk::new(http, vec![], Some(40));
        let companies = run_ok(&src, "companies", None).await;
        assert_eq!((companies.records.len(), companies.pages), (60, 2));
        assert_eq!(
            companies.key(0, "domain"),
            Some(sim.world().accounts[0].domain.as_str())
        );
        let expected = support::tickets(&sim.world()).len();
        let first = run_ok(&src, "tickets", None).await;
        assert_eq!(
            first.records.len(),
            expected,
            "updated_since reaches back past 30 days"
        );
        assert!(first.pages >= 3);
        let second = run_ok(&src, "tickets", Some(first.cursor)).await;
        assert!(second.records.len() < 5, "{}", second.records.len());
    }

    #[tokio::test]
    async fn auth_default_window_and_throttle() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Freshdesk, 2);
        let sim = start_sim(40, limits).await;
        let url = format!(
            "{}/api/v2/tickets?per_page=100",
            sim.base_url(Vendor::Freshdesk)
        );
        let r = call("GET", &url, Auth::Basic("wrong"), None).await;
        assert_eq!(
            (r.status, r.body["code"].clone()),
            (401, json!("invalid_credentials"))
        );
        let r = call(
            "GET",
            &url,
            Auth::Basic(Vendor::Freshdesk.credential()),
            None,
        )
        .await;
        assert_eq!(r.status, 200);
        let recent = st_recent(&sim.world());
        assert_eq!(r.body.as_array().map(Vec::len), Some(recent.min(100)));
        assert_eq!(r.header("x-ratelimit-remaining"), "1");
        call(
            "GET",
            &url,
            Auth::Basic(Vendor::Freshdesk.credential()),
            None,
        )
        .await;
        let r = call(
            "GET",
            &url,
            Auth::Basic(Vendor::Freshdesk.credential()),
            None,
        )
        .await;
        assert_eq!(r.status, 429);
        assert!(r.header("retry-after").parse::<u64>().unwrap() >= 1);
    }

    fn st_recent(w: &World) -> usize {
        let floor = w.now - TimeDelta::days(30);
        support::tickets(w)
            .iter()
            .filter(|t| t.created_at >= floor)
            .count()
    }
}
