//! Simulated Stripe events and retrieval by id: what an incremental Stripe client reads instead of
//! re-listing. Served under `/stripe` behind `stripe.rs`'s auth and rate-limit gate, with its list
//! parameters, paging and error envelope.
//!
//! - `GET /v1/events` lists the lifecycle events of the last 30 days (Stripe keeps events that long),
//!   newest first, filtered by `type` (one name, or a group with `*` as in `invoice.*`) or `types[]` (a
//!   list of names) and `created[...]`. Each event carries `data.object`.
//! - `GET /v1/{customers|subscriptions|invoices}/{id}` returns the object; an unknown id is 404
//!   `resource_missing`.
//!
//! Events follow the simulated objects' timestamps: `customer.created`; `customer.subscription.created`,
//! `.updated` (cancellation requested) and `.deleted` (ended); `invoice.created` and `.finalized`,
//! `.paid`, `.voided`, `.marked_uncollectible`. Deviation to know: `data.object` is the object as it is now,
//! where Stripe snapshots it at the event's time; a client that re-reads changed objects by id (as the
//! `stripe` kind does) cannot tell the difference.

#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chrono::Duration;
use serde_json::{json, Value};

use super::stripe::{
    customer_json, error, invoice_json, list_body, page, parse_params, sub_of, subscription_json,
    ts,
};
use crate::sim::world::World;
use crate::sim::SimState;

/// How long Stripe keeps events.
const RETENTION_DAYS: i64 = 30;

/// What an event is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Subject {
    Customer(usize),
    Subscription(usize, bool),
    Invoice(usize, usize),
}

pub(crate) struct SimEvent {
    id: String,
    created: i64,
    kind: &'static str,
    subject: Subject,
}

/// Every event of the last 30 days, newest first (created, then id, descending).
pub(super) fn events_of(
    w: &World,
    customers: &[usize],
    subscriptions: &[(usize, bool)],
    invoices: &[(usize, usize)],
) -> Vec<SimEvent> {
    let mut out = Vec::new();
    let floor = ts(w.now - Duration::days(RETENTION_DAYS));
    let now = ts(w.now);
    let mut push = |created: i64, kind: &'static str, subject: Subject, object_id: &str| {
        if (floor..=now).contains(&created) {
            out.push(SimEvent {
                id: event_id(kind, object_id),
                created,
                kind,
                subject,
            });
        }
    };
    for &i in customers {
        let a = &w.accounts[i];
        push(
            ts(a.stripe_customer_created),
            "customer.created",
            Subject::Customer(i),
            &a.stripe_customer_id,
        );
    }
    for &(i, prev) in subscriptions {
        let Some(s) = sub_of(w, (i, prev)) else {
            continue;
        };
        let subject = Subject::Subscription(i, prev);
        push(
            ts(s.created),
            "customer.subscription.created",
            subject,
            &s.id,
        );
        if let Some(at) = s.canceled_at.filter(|c| Some(*c) != s.ended_at) {
            push(ts(at), "customer.subscription.updated", subject, &s.id);
        }
        if let Some(at) = s.ended_at {
            push(ts(at), "customer.subscription.deleted", subject, &s.id);
        }
    }
    for &(i, j) in invoices {
        let inv = &w.accounts[i].invoices[j];
        let subject = Subject::Invoice(i, j);
        push(ts(inv.created), "invoice.created", subject, &inv.id);
        push(ts(inv.created), "invoice.finalized", subject, &inv.id);
        for (at, kind) in [
            (inv.paid_at, "invoice.paid"),
            (inv.voided_at, "invoice.voided"),
            (inv.marked_uncollectible_at, "invoice.marked_uncollectible"),
        ] {
            if let Some(at) = at {
                push(ts(at), kind, subject, &inv.id);
            }
        }
    }
    out.sort_by(|x, y| (y.created, &y.id).cmp(&(x.created, &x.id)));
    out
}

/// A stable event id from what the event is about (`evt_` and 24 hex digits).
fn event_id(kind: &str, object_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain([0]).chain(object_id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("evt_{h:016x}{:08x}", kind.len() * 7919 + object_id.len())
}

fn render(w: &World, subject: Subject) -> Value {
    match subject {
        Subject::Customer(i) => customer_json(&w.accounts[i], w.now),
        Subject::Subscription(i, prev) => {
            sub_of(w, (i, prev)).map_or(Value::Null, |s| subscription_json(&w.accounts[i], s))
        }
        Subject::Invoice(i, j) => invoice_json(&w.accounts[i], &w.accounts[i].invoices[j]),
    }
}

/// Whether an event's type passes `type` (exact, or `prefix.*`) and `types[]` (any of).
fn type_ok(kind: &str, single: Option<&str>, any_of: &[&str]) -> bool {
    let single_ok = single.is_none_or(|t| match t.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => kind == t,
    });
    single_ok && (any_of.is_empty() || any_of.contains(&kind))
}

pub(super) async fn list_events(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let p = match parse_params(&uri, &["type", "types[]", "delivery_success"]) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let any_of: Vec<&str> = p
        .extra
        .iter()
        .filter(|(k, _)| k == "types[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if p.get("type").is_some() && !any_of.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            None,
            "You may only specify one of these parameters: type, types.",
            Some("types"),
        );
    }
    let events = &st.stripe.events;
    let refs: Vec<&SimEvent> = events.iter().collect();
    fn key(e: &SimEvent) -> (i64, &str) {
        (e.created, e.id.as_str())
    }
    let keep = |e: &SimEvent| type_ok(e.kind, p.get("type"), &any_of);
    match page(&refs, key, keep, &p, "event") {
        Ok((page, more)) => {
            let w = &st.world;
            let data = page
                .into_iter()
                .map(|e| {
                    json!({
                        "id": e.id, "object": "event", "api_version": "2023-10-16", "created": e.created,
                        "data": {"object": render(w, e.subject)},
                        "livemode": false, "pending_webhooks": 0,
                        "request": {"id": null, "idempotency_key": null}, "type": e.kind,
                    })
                })
                .collect();
            list_body("/v1/events", data, more)
        }
        Err(r) => r,
    }
}

pub(super) async fn retrieve(
    State(st): State<Arc<SimState>>,
    Path((object, id)): Path<(String, String)>,
) -> Response {
    let w = &st.world;
    let s = &st.stripe;
    let (noun, found) = match object.as_str() {
        "customers" => (
            "customer",
            s.customers
                .iter()
                .find(|&&i| w.accounts[i].stripe_customer_id == id)
                .map(|&i| Subject::Customer(i)),
        ),
        "subscriptions" => (
            "subscription",
            s.subscriptions
                .iter()
                .find(|&&r| sub_of(w, r).is_some_and(|x| x.id == id))
                .map(|&(i, prev)| Subject::Subscription(i, prev)),
        ),
        "invoices" => (
            "invoice",
            s.invoices
                .iter()
                .find(|&&(i, j)| w.accounts[i].invoices[j].id == id)
                .map(|&(i, j)| Subject::Invoice(i, j)),
        ),
        _ => {
            let msg = format!(
                "Unrecognized request URL (GET: /v1/{object}/{id}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
            );
            return error(StatusCode::NOT_FOUND, None, &msg, None);
        }
    };
    match found {
        Some(subject) => crate::sim::json_response(StatusCode::OK, render(w, subject)),
        None => error(
            StatusCode::NOT_FOUND,
            Some("resource_missing"),
            &format!("No such {noun}: '{id}'"),
            Some("id"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::test_support::{call, start_sim, strs, Auth, Reply};
    use crate::sim::{SimRateLimits, Vendor};

    async fn get(url: &str) -> Reply {
        call("GET", url, Auth::Bearer(Vendor::Stripe.credential()), None).await
    }

    #[tokio::test]
    async fn events_page_newest_first_by_type_and_objects_are_retrieved_by_id() {
        let sim = start_sim(300, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Stripe);
        let now = sim.world().now.timestamp();
        let mut url = format!("{base}/v1/events?type=invoice.*&limit=50");
        let (mut created, mut pages, mut last) = (Vec::new(), 0, None::<String>);
        loop {
            let r = get(&url).await;
            assert_eq!(r.status, 200, "{}", r.body);
            pages += 1;
            for e in r.body["data"].as_array().expect("data") {
                assert!(e["type"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("invoice."));
                assert_eq!(e["data"]["object"]["object"], "invoice");
                created.push(e["created"].as_i64().expect("created"));
                last = e["id"].as_str().map(str::to_string);
            }
            if r.body["has_more"] != true {
                break;
            }
            url = format!(
                "{base}/v1/events?type=invoice.*&limit=50&starting_after={}",
                last.clone().unwrap_or_default()
            );
        }
        assert!(pages >= 3, "{pages} pages");
        assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
        assert!(created.iter().all(|&c| c >= now - 30 * 86_400 && c <= now));

        let r = get(&format!("{base}/v1/events?types[]=invoice.paid&limit=5")).await;
        assert_eq!(strs(&r.body["data"], "type"), ["invoice.paid"; 5]);
        let id = r.body["data"][0]["data"]["object"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let r = get(&format!("{base}/v1/invoices/{id}")).await;
        assert_eq!((r.status, r.body["id"].as_str()), (200, Some(id.as_str())));
        assert_eq!(r.body["status"], "paid");
        let r = get(&format!("{base}/v1/invoices/in_missing")).await;
        assert_eq!(r.status, 404);
        assert_eq!(r.body["error"]["code"], "resource_missing");
    }
}
