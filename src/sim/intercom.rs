//! Simulated Intercom REST API (2.14 shapes from `specs/intercom/api.intercom.io.2.14.yaml`) under the
//! `/intercom` prefix: `POST /companies/list` (page/per_page), `GET /conversations` and
//! `POST /conversations/search` (cursor `pages.next.starting_after`), over the world's accounts and the
//! support history in `support` (each ticket is a conversation started by a user at the account's domain).
//!
//! Wire behaviour: `Authorization: Bearer <token>` else 401 `error.list` (`unauthorized`); a rolling
//! 10-second budget with `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (a unix time,
//! real wall clock) on every authenticated response; over budget → 429 `error.list`
//! (`rate_limit_exceeded`) with no `Retry-After`. Search supports one field filter on `updated_at` or
//! `created_at` (`>`, `<`, `=`); compound queries get a 400, as the sim does not implement them.
//! Results are ordered by (updated_at, id). Assumed: error message texts; `per_page` ≤ 60 on companies.
//! This file does not own the accounts (`world`) or the tickets (`support`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use rand::Rng;
use serde_json::{json, Value};

use crate::sim::support::{self, account_rng, Priority, SupportTicket, TicketState};
use crate::sim::world::World;
use crate::sim::{
    bearer, ceil_secs, decode_cursor, encode_cursor, json_response, lock, query_pairs,
    RollingWindow, SimState, Vendor,
};

pub(crate) struct IntercomState {
    limiter: Mutex<RollingWindow>,
    /// Per account: the Intercom company id (24 hex digits, like Intercom's).
    company_ids: Vec<String>,
    /// Sorted by (updated_at, seq).
    conversations: Vec<SupportTicket>,
}

impl IntercomState {
    pub(crate) fn new(world: &World, per_10s: u32) -> IntercomState {
        let company_ids = world
            .accounts
            .iter()
            .map(|a| {
                let mut rng = account_rng(&a.hubspot_id, 0x1c << 40);
                format!("{:024x}", rng.gen::<u128>() >> 32)
            })
            .collect();
        let mut conversations = support::tickets(world);
        conversations.sort_by_key(|t| (t.updated_at, t.seq));
        IntercomState {
            limiter: Mutex::new(RollingWindow::new(per_10s, Duration::from_secs(10))),
            company_ids,
            conversations,
        }
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/companies/list", post(companies))
        .route("/conversations", get(list_conversations))
        .route("/conversations/search", post(search_conversations))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn error(st: &SimState, status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"type": "error.list", "request_id": st.next_uuid(),
               "errors": [{"code": code, "message": message}]}),
    )
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if bearer(req.headers()) != Some(Vendor::Intercom.credential()) {
        return error(
            &st,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Access Token Invalid",
        );
    }
    let (verdict, limit) = {
        let mut l = lock(&st.intercom.limiter);
        (l.try_hit(Instant::now()), l.limit())
    };
    let now = Utc::now().timestamp();
    let (mut resp, remaining, reset) = match verdict {
        Ok(remaining) => (next.run(req).await, remaining, now + 10),
        Err(wait) => {
            let msg = format!("Exceeded rate limit of {limit} in 10_seconds");
            let r = error(
                &st,
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                &msg,
            );
            (r, 0, now + ceil_secs(wait).max(1) as i64)
        }
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(limit));
    h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("x-ratelimit-reset", HeaderValue::from(reset));
    resp
}

fn company_json(st: &SimState, i: usize) -> Value {
    let a = &st.world.accounts[i];
    let users = a.seats.min(50);
    json!({
        "type": "company", "id": st.intercom.company_ids[i], "name": a.name,
        "app_id": "healthsync_sim", "plan": {}, "company_id": a.hubspot_id,
        "remote_created_at": a.created_at.timestamp(), "created_at": a.created_at.timestamp(),
        "updated_at": a.hs_lastmodified.timestamp(), "last_request_at": a.last_contacted.timestamp(),
        "size": a.employees, "website": format!("https://www.{}", a.domain), "industry": "Software",
        "monthly_spend": a.mrr_cents / 100, "session_count": users * 20, "user_count": users,
        "custom_attributes": {"cs_tier": a.tier.as_str()},
        "tags": {"type": "tag.list", "tags": []}, "segments": {"type": "segment.list", "segments": []},
    })
}

async fn companies(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let bad = |m: &str| error(&st, StatusCode::BAD_REQUEST, "parameter_invalid", m);
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let page = match get("page").map(str::parse::<usize>) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => return bad("page must be a positive integer"),
    };
    let per_page = match get("per_page").map(str::parse::<usize>) {
        None => 15,
        Some(Ok(n)) if (1..=60).contains(&n) => n,
        Some(_) => return bad("per_page must be between 1 and 60"),
    };
    let n = st.world.accounts.len();
    let mut order: Vec<usize> = (0..n).collect();
    let by_request = |i: &usize| st.world.accounts[*i].last_contacted;
    order.sort_by_key(by_request);
    if get("order") != Some("asc") {
        order.reverse();
    }
    let start = ((page - 1) * per_page).min(n);
    let end = (start + per_page).min(n);
    let data: Vec<Value> = order[start..end]
        .iter()
        .map(|&i| company_json(&st, i))
        .collect();
    json_response(
        StatusCode::OK,
        json!({
            "type": "list", "data": data, "total_count": n,
            "pages": {"type": "pages", "page": page, "per_page": per_page, "total_pages": n.div_ceil(per_page)},
        }),
    )
}

fn conversation_json(st: &SimState, t: &SupportTicket) -> Value {
    let a = &st.world.accounts[t.account];
    let mailbox = t
        .requester
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31) ^ u32::from(b));
    let contact = format!("{:024x}", (t.account as u128) << 32 | u128::from(mailbox));
    let (open, state) = match t.state {
        TicketState::Open => (true, "open"),
        TicketState::Pending => (true, "snoozed"),
        TicketState::Solved | TicketState::Closed => (false, "closed"),
    };
    let priority = match t.priority {
        Priority::High | Priority::Urgent => "priority",
        Priority::Low | Priority::Normal => "not_priority",
    };
    let rating = t.csat.as_ref().map(|c| {
        json!({"rating": if c.good { 5 } else { 2 }, "remark": c.comment, "created_at": c.at.timestamp(),
               "contact": {"type": "contact", "id": contact}, "teammate": {"type": "admin", "id": "991267628"}})
    });
    json!({
        "type": "conversation", "id": (100_000 + t.seq).to_string(), "title": t.subject,
        "created_at": t.created_at.timestamp(), "updated_at": t.updated_at.timestamp(),
        "waiting_since": null, "snoozed_until": null, "open": open, "state": state, "read": true,
        "priority": priority, "admin_assignee_id": 991_267_628, "team_assignee_id": null,
        "tags": {"type": "tag.list", "tags": []}, "conversation_rating": rating,
        "source": {"type": "conversation", "id": (400_000_000 + t.seq).to_string(),
                   "delivered_as": "customer_initiated", "subject": t.subject, "body": format!("<p>{}</p>", t.subject),
                   "author": {"type": "user", "id": contact, "name": t.requester,
                              "email": format!("{}@{}", t.requester, a.domain)},
                   "attachments": [], "url": null, "redacted": false},
        "contacts": {"type": "contact.list", "contacts": [{"type": "contact", "id": contact, "external_id": null}]},
        "teammates": {"type": "admin.list", "admins": []}, "custom_attributes": {},
        "first_contact_reply": null, "sla_applied": null, "statistics": null, "conversation_parts": null,
    })
}

/// One page of `matching` conversations after the `starting_after` position.
fn conversation_page(
    st: &SimState,
    matching: &[&SupportTicket],
    per_page: usize,
    starting_after: Option<&str>,
) -> Result<Value, &'static str> {
    let start = match starting_after {
        None => 0,
        Some(c) => decode_cursor(c)
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or("starting_after is not a valid cursor")?,
    };
    let start = start.min(matching.len());
    let end = (start + per_page).min(matching.len());
    let items: Vec<Value> = matching[start..end]
        .iter()
        .map(|t| conversation_json(st, t))
        .collect();
    let mut pages = json!({"type": "pages", "page": start / per_page + 1, "per_page": per_page,
                           "total_pages": matching.len().div_ceil(per_page)});
    if end < matching.len() {
        pages["next"] =
            json!({"per_page": per_page, "starting_after": encode_cursor(&end.to_string())});
    }
    Ok(
        json!({"type": "conversation.list", "pages": pages, "total_count": matching.len(), "conversations": items}),
    )
}

async fn list_conversations(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let bad = |m: &str| error(&st, StatusCode::BAD_REQUEST, "parameter_invalid", m);
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let per_page = match get("per_page").map(str::parse::<usize>) {
        None => 20,
        Some(Ok(n)) if (1..=150).contains(&n) => n,
        Some(_) => return bad("per_page must be between 1 and 150"),
    };
    let all: Vec<&SupportTicket> = st.intercom.conversations.iter().collect();
    match conversation_page(&st, &all, per_page, get("starting_after")) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(m) => bad(m),
    }
}

async fn search_conversations(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let bad = |m: &str| error(&st, StatusCode::BAD_REQUEST, "parameter_invalid", m);
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return bad("the request body is not valid JSON");
    };
    let q = &req["query"];
    let (Some(field), Some(op), Some(value)) = (
        q["field"].as_str(),
        q["operator"].as_str(),
        q["value"].as_i64(),
    ) else {
        return bad("the simulator supports one field filter with an integer value");
    };
    let at = |t: &SupportTicket| match field {
        "created_at" => Some(t.created_at.timestamp()),
        "updated_at" => Some(t.updated_at.timestamp()),
        _ => None,
    };
    if !matches!(field, "created_at" | "updated_at") || !matches!(op, ">" | "<" | "=") {
        return bad("the simulator searches updated_at or created_at with >, < or =");
    }
    let matching: Vec<&SupportTicket> = st
        .intercom
        .conversations
        .iter()
        .filter(|t| {
            at(t).is_some_and(|v| match op {
                ">" => v > value,
                "<" => v < value,
                _ => v == value,
            })
        })
        .collect();
    let per_page = match req["pagination"]["per_page"].as_u64() {
        None => 20,
        Some(n) if (1..=150).contains(&n) => n as usize,
        Some(_) => return bad("per_page must be between 1 and 150"),
    };
    let after = req["pagination"]["starting_after"].as_str();
    match conversation_page(&st, &matching, per_page, after) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(m) => bad(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::kinds::intercom::Intercom;
    use crate::connector::kinds::support_testkit::{client, run_ok};
    use crate::sim::test_support::{call, start_sim, Auth};
    use crate::sim::{SimRateLimits, Vendor};
    use crate::vocab::AuthScheme;

    #[tokio::test]
    async fn the_kind_syncs_everything_then_only_changes() {
        let sim = start_sim(60, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Intercom);
        let (http, _) = client(
            &base,
            AuthScheme::Bearer,
            &[("token", Vendor::Intercom.credential())],
        );
        let src = Intercom::new(http, vec![], Some(40));
        let companies = run_ok(&src, "companies", None).await;
        assert_eq!((companies.records.len(), companies.pages), (60, 2));
        let domains: std::collections::BTreeSet<String> = sim
            .world()
            .accounts
            .iter()
            .map(|a| a.domain.clone())
            .collect();
        assert!(companies
            .records
            .iter()
            .all(|r| domains.contains(&r.account_keys["domain"])));
        let expected = support::tickets(&sim.world()).len();
        let first = run_ok(&src, "conversations", None).await;
        assert_eq!(first.records.len(), expected);
        assert!(first.pages >= 3);
        assert!(first
            .records
            .iter()
            .all(|r| domains.contains(&r.account_keys["domain"])));
        let second = run_ok(&src, "conversations", Some(first.cursor)).await;
        assert!(second.records.len() < 5, "{}", second.records.len());
    }

    #[tokio::test]
    async fn auth_and_throttle_with_a_unix_reset() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Intercom, 1);
        let sim = start_sim(5, limits).await;
        let url = format!("{}/conversations", sim.base_url(Vendor::Intercom));
        let r = call("GET", &url, Auth::Bearer("nope"), None).await;
        assert_eq!(
            (r.status, r.body["errors"][0]["code"].clone()),
            (401, json!("unauthorized"))
        );
        assert_eq!(
            call(
                "GET",
                &url,
                Auth::Bearer(Vendor::Intercom.credential()),
                None
            )
            .await
            .status,
            200
        );
        let r = call(
            "GET",
            &url,
            Auth::Bearer(Vendor::Intercom.credential()),
            None,
        )
        .await;
        assert_eq!(r.status, 429);
        let reset: i64 = r.header("x-ratelimit-reset").parse().unwrap();
        let now = Utc::now().timestamp();
        assert!((now..=now + 11).contains(&reset), "{reset} vs {now}");
        assert_eq!(r.header("retry-after"), "");
    }
}
