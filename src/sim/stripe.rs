//! Simulated Stripe list API (object shapes from `specs/stripe/spec3.2023-09-12.json` and its
//! fixtures).
//!
//! Owns, under the `/stripe` prefix (events and retrieval by id are `stripe_events`, behind the same
//! gate): `GET /v1/customers`, `GET /v1/subscriptions`,
//! `GET /v1/invoices` with `limit`, `starting_after`, `ending_before`, `created[gt|gte|lt|lte]`
//! and a few per-endpoint filters; newest first (created desc, then id desc); auth by
//! `Authorization: Bearer <key>` or Basic with the key as user; Stripe's 400/401/429 error
//! envelope. It does not own the billing data (see `world`) nor any write endpoint.
//!
//! Deviations to know: the 2023-09-12 subscription object has no top-level `quantity` (it lives
//! on `items.data[].quantity`), so none is emitted; error message texts are from memory of the
//! live API, the envelope and codes follow the spec; unknown query parameters are rejected
//! like the live API does; `expand[]` is accepted and ignored.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::sim::world::{InvoiceStatus, SimAccount, SimInvoice, SimSubscription, SubStatus, World};
use crate::sim::{
    basic, bearer, json_response, lock, query_pairs, RollingWindow, SimState, Vendor,
};

/// The one product every simulated plan prices.
const PRODUCT_ID: &str = "prod_SimPlatform0001";

pub(crate) struct StripeState {
    limiter: Mutex<RollingWindow>,
    /// Account indexes, newest customer first.
    pub(super) customers: Vec<usize>,
    /// `(account, is_previous_subscription)`, newest first.
    pub(super) subscriptions: Vec<(usize, bool)>,
    /// `(account, invoice index)`, newest first.
    pub(super) invoices: Vec<(usize, usize)>,
    /// The lifecycle events of the last 30 days, newest first (`stripe_events`).
    pub(super) events: Vec<super::stripe_events::SimEvent>,
}

pub(super) type Key<'a> = (i64, &'a str);

pub(super) fn sub_of(w: &World, (a, prev): (usize, bool)) -> Option<&SimSubscription> {
    let acct = &w.accounts[a];
    if prev {
        acct.previous_subscription.as_ref()
    } else {
        Some(&acct.subscription)
    }
}

impl StripeState {
    pub(crate) fn new(w: &World, per_sec: u32) -> StripeState {
        let mut customers: Vec<usize> = (0..w.accounts.len()).collect();
        customers.sort_by(|x, y| cust_key(w, *y).cmp(&cust_key(w, *x)));
        let mut subscriptions: Vec<(usize, bool)> = (0..w.accounts.len())
            .flat_map(|i| [(i, false), (i, true)])
            .filter(|r| sub_of(w, *r).is_some())
            .collect();
        subscriptions.sort_by(|x, y| sub_key(w, *y).cmp(&sub_key(w, *x)));
        let mut invoices: Vec<(usize, usize)> = w
            .accounts
            .iter()
            .enumerate()
            .flat_map(|(i, a)| (0..a.invoices.len()).map(move |j| (i, j)))
            .collect();
        invoices.sort_by(|x, y| inv_key(w, *y).cmp(&inv_key(w, *x)));
        StripeState {
            limiter: Mutex::new(RollingWindow::new(per_sec, Duration::from_secs(1))),
            events: super::stripe_events::events_of(w, &customers, &subscriptions, &invoices),
            customers,
            subscriptions,
            invoices,
        }
    }
}

pub(super) fn cust_key(w: &World, i: usize) -> Key<'_> {
    let a = &w.accounts[i];
    (
        a.stripe_customer_created.timestamp(),
        a.stripe_customer_id.as_str(),
    )
}

pub(super) fn sub_key(w: &World, r: (usize, bool)) -> Key<'_> {
    sub_of(w, r).map_or((0, ""), |s| (s.created.timestamp(), s.id.as_str()))
}

pub(super) fn inv_key(w: &World, (a, j): (usize, usize)) -> Key<'_> {
    let inv = &w.accounts[a].invoices[j];
    (inv.created.timestamp(), inv.id.as_str())
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/v1/customers", get(customers))
        .route("/v1/subscriptions", get(subscriptions))
        .route("/v1/invoices", get(invoices))
        .route("/v1/events", get(super::stripe_events::list_events))
        .route("/v1/{object}/{id}", get(super::stripe_events::retrieve))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

pub(super) fn error(
    status: StatusCode,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> Response {
    let mut e = json!({"type": "invalid_request_error", "message": message});
    if let Some(code) = code {
        e["code"] = json!(code);
        e["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    if let Some(param) = param {
        e["param"] = json!(param);
    }
    json_response(status, json!({ "error": e }))
}

pub(super) fn bad(message: &str, param: &str) -> Response {
    error(StatusCode::BAD_REQUEST, None, message, Some(param))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let key = bearer(req.headers())
        .map(str::to_owned)
        .or_else(|| basic(req.headers()).map(|(user, _)| user));
    match key.as_deref() {
        Some(k) if k == Vendor::Stripe.credential() => {}
        Some(k) => {
            // Stripe echoes a redacted form of the key it rejected.
            let tail: String = k.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            let msg = format!("Invalid API Key provided: {}****{tail}", k.chars().take(8).collect::<String>());
            return unauthorized(&msg);
        }
        None => {
            return unauthorized(
                "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
            )
        }
    }
    if lock(&st.stripe.limiter).try_hit(Instant::now()).is_err() {
        // Stripe sends no Retry-After: clients back off exponentially.
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            Some("rate_limit"),
            "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
            None,
        );
    }
    next.run(req).await
}

fn unauthorized(msg: &str) -> Response {
    let mut r = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"error": {"type": "invalid_request_error", "message": msg}}),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Stripe\""),
    );
    r
}

/// Range operators on `created`, in the order `ListParams::created` stores them.
const CREATED_OPS: [&str; 4] = ["created[gt]", "created[gte]", "created[lt]", "created[lte]"];

/// Common list parameters plus the endpoint-specific ones left in `extra`.
pub(super) struct ListParams {
    pub(super) limit: usize,
    pub(super) starting_after: Option<String>,
    pub(super) ending_before: Option<String>,
    pub(super) created: [Option<i64>; 4],
    pub(super) extra: Vec<(String, String)>,
}

fn parse_int(v: &str, param: &str) -> Result<i64, Response> {
    v.parse()
        .map_err(|_| bad(&format!("Invalid integer: {v}"), param))
}

pub(super) fn parse_params(uri: &Uri, allowed: &[&str]) -> Result<ListParams, Response> {
    let pairs = query_pairs(uri).map_err(|e| bad(&e, ""))?;
    let mut p = ListParams {
        limit: 10,
        starting_after: None,
        ending_before: None,
        created: [None; 4],
        extra: Vec::new(),
    };
    for (k, v) in pairs {
        match k.as_str() {
            "limit" => {
                let n = parse_int(&v, "limit")?;
                if !(1..=100).contains(&n) {
                    return Err(bad("Invalid limit: must be between 1 and 100", "limit"));
                }
                p.limit = n as usize;
            }
            "starting_after" => p.starting_after = Some(v),
            "ending_before" => p.ending_before = Some(v),
            // `created=<ts>` is an exact match, i.e. gte and lte at once.
            "created" => {
                let t = parse_int(&v, "created")?;
                p.created = [None, Some(t), None, Some(t)];
            }
            _ if CREATED_OPS.contains(&k.as_str()) => {
                let i = CREATED_OPS.iter().position(|o| *o == k).unwrap_or(0);
                p.created[i] = Some(parse_int(&v, &k)?);
            }
            _ if k.starts_with("expand[") => {}
            _ if allowed.contains(&k.as_str()) => p.extra.push((k, v)),
            _ => {
                let msg = format!("Received unknown parameter: {k}");
                let code = Some("parameter_unknown");
                return Err(error(StatusCode::BAD_REQUEST, code, &msg, Some(&k)));
            }
        }
    }
    if p.starting_after.is_some() && p.ending_before.is_some() {
        return Err(bad(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
        ));
    }
    Ok(p)
}

impl ListParams {
    pub(super) fn get(&self, k: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    fn created_ok(&self, t: i64) -> bool {
        let [gt, gte, lt, lte] = self.created;
        gt.is_none_or(|x| t > x)
            && gte.is_none_or(|x| t >= x)
            && lt.is_none_or(|x| t < x)
            && lte.is_none_or(|x| t <= x)
    }
}

/// One page in Stripe's order; cursors are located among all objects of the type, so a cursor
/// object excluded by filters still marks a valid position.
pub(super) fn page<'a, T: Copy>(
    items: &'a [T],
    key: impl Fn(T) -> Key<'a>,
    keep: impl Fn(T) -> bool,
    p: &ListParams,
    noun: &str,
) -> Result<(Vec<T>, bool), Response> {
    let locate = |id: &str, param: &str| {
        items
            .iter()
            .map(|t| key(*t))
            .find(|k| k.1 == id)
            .ok_or_else(|| {
                let msg = format!("No such {noun}: '{id}'");
                error(
                    StatusCode::BAD_REQUEST,
                    Some("resource_missing"),
                    &msg,
                    Some(param),
                )
            })
    };
    let filtered = items
        .iter()
        .copied()
        .filter(|t| keep(*t) && p.created_ok(key(*t).0));
    if let Some(id) = &p.ending_before {
        let ck = locate(id, "ending_before")?;
        let before: Vec<T> = filtered.take_while(|t| key(*t) > ck).collect();
        let start = before.len().saturating_sub(p.limit);
        return Ok((before[start..].to_vec(), start > 0));
    }
    let mut rest: Vec<T> = match &p.starting_after {
        Some(id) => {
            let ck = locate(id, "starting_after")?;
            filtered
                .filter(|t| key(*t) < ck)
                .take(p.limit + 1)
                .collect()
        }
        None => filtered.take(p.limit + 1).collect(),
    };
    let has_more = rest.len() > p.limit;
    rest.truncate(p.limit);
    Ok((rest, has_more))
}

pub(super) fn list_body(url: &str, data: Vec<Value>, has_more: bool) -> Response {
    json_response(
        StatusCode::OK,
        json!({"object": "list", "url": url, "has_more": has_more, "data": data}),
    )
}

pub(super) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn delinquent(a: &SimAccount, now: DateTime<Utc>) -> bool {
    a.invoices
        .iter()
        .any(|i| i.status == InvoiceStatus::Open && i.due_date < now)
}

pub(super) fn customer_json(a: &SimAccount, now: DateTime<Utc>) -> Value {
    json!({
        "id": a.stripe_customer_id, "object": "customer", "address": null, "balance": 0,
        "created": ts(a.stripe_customer_created), "currency": "usd", "default_source": null,
        "delinquent": delinquent(a, now), "description": null, "discount": null,
        "email": format!("billing@{}", a.domain), "invoice_prefix": a.stripe_customer_id.get(4..12).unwrap_or("SIM").to_uppercase(),
        "invoice_settings": {"custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null},
        "livemode": false, "metadata": {"hubspot_company_id": a.hubspot_id}, "name": a.name,
        "next_invoice_sequence": a.invoices.len() + 1, "phone": null, "preferred_locales": [],
        "shipping": null, "tax_exempt": "none", "test_clock": null,
    })
}

fn price_json(s: &SimSubscription) -> Value {
    json!({
        "id": s.price_id, "object": "price", "active": true, "billing_scheme": "per_unit",
        "created": ts(s.created), "currency": "usd", "custom_unit_amount": null, "livemode": false,
        "lookup_key": null, "metadata": {}, "nickname": null, "product": PRODUCT_ID,
        "recurring": {"aggregate_usage": null, "interval": "month", "interval_count": 1, "usage_type": "licensed"},
        "tax_behavior": "unspecified", "tiers_mode": null, "transform_quantity": null, "type": "recurring",
        "unit_amount": s.unit_amount, "unit_amount_decimal": s.unit_amount.to_string(),
    })
}

pub(super) fn subscription_json(a: &SimAccount, s: &SimSubscription) -> Value {
    let latest = a
        .invoices
        .iter()
        .rev()
        .find(|i| i.subscription_id == s.id)
        .map(|i| i.id.clone());
    let item = json!({
        "id": s.item_id, "object": "subscription_item", "billing_thresholds": null, "created": ts(s.created),
        "metadata": {}, "price": price_json(s), "quantity": s.quantity, "subscription": s.id, "tax_rates": [],
    });
    let mut v = json!({
        "id": s.id, "object": "subscription", "application": null, "application_fee_percent": null,
        "automatic_tax": {"enabled": false}, "billing_cycle_anchor": ts(s.created), "billing_thresholds": null,
        "cancel_at": if s.cancel_at_period_end { Some(ts(s.current_period_end)) } else { None },
        "cancel_at_period_end": s.cancel_at_period_end, "canceled_at": s.canceled_at.map(ts),
        "cancellation_details": {"comment": null, "feedback": null,
            "reason": s.canceled_at.map(|_| "cancellation_requested")},
        "collection_method": "send_invoice", "created": ts(s.created), "currency": "usd",
        "current_period_end": ts(s.current_period_end), "current_period_start": ts(s.current_period_start),
        "customer": a.stripe_customer_id, "days_until_due": s.days_until_due, "default_payment_method": null,
        "default_source": null, "default_tax_rates": [], "description": null, "discount": null,
        "ended_at": s.ended_at.map(ts),
        "items": {"object": "list", "data": [item], "has_more": false,
            "url": format!("/v1/subscription_items?subscription={}", s.id)},
    });
    // Split in two because one json! literal this large exceeds the macro recursion limit.
    let rest = json!({
        "latest_invoice": latest, "livemode": false, "metadata": {}, "next_pending_invoice_item_invoice": null,
        "on_behalf_of": null, "pause_collection": null,
        "payment_settings": {"payment_method_options": null, "payment_method_types": null, "save_default_payment_method": null},
        "pending_invoice_item_interval": null, "pending_setup_intent": null, "pending_update": null, "schedule": null,
        "start_date": ts(s.created), "status": s.status.as_str(), "test_clock": null, "transfer_data": null,
        "trial_end": null, "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": null,
    });
    merge(&mut v, rest);
    v
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

pub(super) fn invoice_json(a: &SimAccount, inv: &SimInvoice) -> Value {
    let sub = std::iter::once(&a.subscription)
        .chain(a.previous_subscription.iter())
        .find(|s| s.id == inv.subscription_id);
    let (quantity, price) = sub.map_or((0, Value::Null), |s| (s.quantity, price_json(s)));
    let first = sub.is_some_and(|s| s.created == inv.period_start);
    let line = json!({
        "id": format!("il_{}", inv.id.get(3..).unwrap_or_default()), "object": "line_item",
        "amount": inv.amount_due, "currency": "usd",
        "description": format!("{quantity} × Sim Platform (per seat)"), "discountable": true, "livemode": false,
        "metadata": {}, "period": {"start": ts(inv.period_start), "end": ts(inv.period_end)}, "price": price,
        "proration": false, "quantity": quantity, "subscription": inv.subscription_id, "type": "subscription",
    });
    let paid = inv.status == InvoiceStatus::Paid;
    let mut v = json!({
        "id": inv.id, "object": "invoice", "account_country": "US", "account_name": "Healthsync Sim Inc.",
        "amount_due": inv.amount_due, "amount_paid": inv.amount_paid, "amount_remaining": inv.amount_remaining(),
        "amount_shipping": 0, "application": null, "attempt_count": 0, "attempted": paid, "auto_advance": !paid,
        "automatic_tax": {"enabled": false, "status": null},
        "billing_reason": if first { "subscription_create" } else { "subscription_cycle" },
        "charge": null, "collection_method": "send_invoice", "created": ts(inv.created), "currency": "usd",
        "customer": a.stripe_customer_id, "customer_email": format!("billing@{}", a.domain), "customer_name": a.name,
        "default_payment_method": null, "description": null, "discount": null, "discounts": [],
        "due_date": ts(inv.due_date), "effective_at": ts(inv.created), "ending_balance": 0, "footer": null,
    });
    let rest = json!({
        "hosted_invoice_url": null, "invoice_pdf": null, "last_finalization_error": null,
        "lines": {"object": "list", "data": [line], "has_more": false, "url": format!("/v1/invoices/{}/lines", inv.id)},
        "livemode": false, "metadata": {}, "next_payment_attempt": null, "number": inv.number,
        "paid": paid, "paid_out_of_band": false, "payment_intent": null,
        "period_end": ts(inv.period_end), "period_start": ts(inv.period_start),
        "starting_balance": 0, "status": inv.status.as_str(),
        "status_transitions": {"finalized_at": ts(inv.created), "marked_uncollectible_at": inv.marked_uncollectible_at.map(ts),
            "paid_at": inv.paid_at.map(ts), "voided_at": inv.voided_at.map(ts)},
        "subscription": inv.subscription_id, "subtotal": inv.amount_due, "subtotal_excluding_tax": inv.amount_due,
        "tax": null, "test_clock": null, "total": inv.amount_due, "total_excluding_tax": inv.amount_due,
        "webhooks_delivered_at": ts(inv.created),
    });
    merge(&mut v, rest);
    v
}

/// What distinguishes one list endpoint from another.
struct Endpoint {
    path: &'static str,
    noun: &'static str,
    /// Endpoint-specific query parameters (beyond paging, `created` and `expand`).
    allowed: &'static [&'static str],
    /// Accepted values of `status` (space-separated), if the endpoint filters on it.
    statuses: &'static str,
}

/// Parses the query, pages through `items` (already in list order) and renders the envelope.
fn respond<'a, T: Copy>(
    ep: &Endpoint,
    uri: &Uri,
    items: &'a [T],
    key: impl Fn(T) -> Key<'a>,
    keep: impl Fn(T, &ListParams) -> bool,
    render: impl Fn(T) -> Value,
) -> Response {
    let p = match parse_params(uri, ep.allowed) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if p.get("status")
        .is_some_and(|s| !ep.statuses.split(' ').any(|x| x == s))
    {
        let msg = format!(
            "Invalid status: must be one of {}",
            ep.statuses.replace(' ', ", ")
        );
        return bad(&msg, "status");
    }
    match page(items, key, |t| keep(t, &p), &p, ep.noun) {
        Ok((page, more)) => list_body(ep.path, page.into_iter().map(render).collect(), more),
        Err(r) => r,
    }
}

/// True when the filter is absent or equals `actual`.
fn matches(filter: Option<&str>, actual: &str) -> bool {
    filter.is_none_or(|f| f == actual)
}

async fn customers(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let ep = Endpoint {
        path: "/v1/customers",
        noun: "customer",
        allowed: &["email"],
        statuses: "",
    };
    let w = &st.world;
    let keep = |i: usize, p: &ListParams| {
        let email = format!("billing@{}", w.accounts[i].domain);
        matches(p.get("email").map(str::to_lowercase).as_deref(), &email)
    };
    let render = |i: usize| customer_json(&w.accounts[i], w.now);
    let key = |i| cust_key(w, i);
    respond(&ep, &uri, &st.stripe.customers, key, keep, render)
}

async fn subscriptions(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let ep = Endpoint {
        path: "/v1/subscriptions",
        noun: "subscription",
        allowed: &["status", "customer", "price", "collection_method"],
        statuses: "active all canceled ended incomplete incomplete_expired past_due paused trialing unpaid",
    };
    let w = &st.world;
    let keep = |r: (usize, bool), p: &ListParams| {
        let Some(s) = sub_of(w, r) else { return false };
        // Canceled subscriptions are only listed when asked for.
        let status_ok = match p.get("status") {
            None => s.status != SubStatus::Canceled,
            Some("all") => true,
            Some("ended") => s.status == SubStatus::Canceled,
            Some(x) => s.status.as_str() == x,
        };
        status_ok
            && matches(p.get("customer"), &w.accounts[r.0].stripe_customer_id)
            && matches(p.get("price"), &s.price_id)
            && matches(p.get("collection_method"), "send_invoice")
    };
    let render = |r: (usize, bool)| {
        sub_of(w, r).map_or(Value::Null, |s| subscription_json(&w.accounts[r.0], s))
    };
    let key = |r| sub_key(w, r);
    respond(&ep, &uri, &st.stripe.subscriptions, key, keep, render)
}

async fn invoices(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let ep = Endpoint {
        path: "/v1/invoices",
        noun: "invoice",
        allowed: &["status", "customer", "subscription", "collection_method"],
        statuses: "draft open paid uncollectible void",
    };
    let w = &st.world;
    let keep = |(a, j): (usize, usize), p: &ListParams| {
        let (acct, inv) = (&w.accounts[a], &w.accounts[a].invoices[j]);
        matches(p.get("status"), inv.status.as_str())
            && matches(p.get("customer"), &acct.stripe_customer_id)
            && matches(p.get("subscription"), &inv.subscription_id)
            && matches(p.get("collection_method"), "send_invoice")
    };
    let render = |(a, j): (usize, usize)| invoice_json(&w.accounts[a], &w.accounts[a].invoices[j]);
    let key = |r| inv_key(w, r);
    respond(&ep, &uri, &st.stripe.invoices, key, keep, render)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, start_sim, strs, Auth, Reply};
    use crate::sim::{SimRateLimits, Vendor};
    use std::collections::HashSet;

    async fn get(url: &str) -> Reply {
        call("GET", url, Auth::Bearer(Vendor::Stripe.credential()), None).await
    }

    /// Walks a list forward with `starting_after`; returns the ids in order.
    async fn walk(base: &str, path: &str, query: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().map(|l| format!("&starting_after={l}"));
            let after = after.unwrap_or_default();
            let r = get(&format!("{base}{path}?limit=7{query}{after}")).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.body["object"], "list");
            assert_eq!(r.body["url"], path);
            out.extend(strs(&r.body["data"], "id"));
            if r.body["has_more"] != true {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn pagination_walks_every_object_once_newest_first() {
        let sim = start_sim(40, SimRateLimits::unlimited()).await;
        let (base, w) = (sim.base_url(Vendor::Stripe), sim.world());
        let customers = walk(&base, "/v1/customers", "").await;
        let mut expect: Vec<(DateTime<Utc>, String)> = (w.accounts.iter())
            .map(|a| (a.stripe_customer_created, a.stripe_customer_id.clone()))
            .collect();
        expect.sort_by(|x, y| y.cmp(x));
        let expect: Vec<String> = expect.into_iter().map(|(_, id)| id).collect();
        assert_eq!(customers, expect);

        let total: usize = w.accounts.iter().map(|a| a.invoices.len()).sum();
        let invoices = walk(&base, "/v1/invoices", "").await;
        assert_eq!(invoices.len(), total);
        assert_eq!(invoices.iter().collect::<HashSet<_>>().len(), total);

        let canceled = (w.accounts.iter()).filter(|a| a.previous_subscription.is_some());
        let ended = (w.accounts.iter()).filter(|a| a.subscription.status == SubStatus::Canceled);
        let live = 40 - ended.count();
        let all_subs = 40 + canceled.count();
        assert_eq!(walk(&base, "/v1/subscriptions", "").await.len(), live);
        let with_canceled = walk(&base, "/v1/subscriptions", "&status=all").await;
        assert_eq!(with_canceled.len(), all_subs);

        let before = &customers[5];
        let r = get(&format!(
            "{base}/v1/customers?limit=3&ending_before={before}"
        ))
        .await;
        assert_eq!(strs(&r.body["data"], "id"), customers[2..5].to_vec());
        assert_eq!(r.body["has_more"], true);

        let cut = w.accounts[0].stripe_customer_created.timestamp();
        let newer = (w.accounts.iter()).filter(|x| x.stripe_customer_created.timestamp() >= cut);
        let newer = newer.count();
        let query = format!("&created[gte]={cut}");
        assert_eq!(walk(&base, "/v1/customers", &query).await.len(), newer);
    }

    #[tokio::test]
    async fn objects_carry_the_documented_fields() {
        let sim = start_sim(25, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Stripe);
        let c = get(&format!("{base}/v1/customers?limit=1")).await.body;
        let hs_id = &c["data"][0]["metadata"]["hubspot_company_id"];
        assert!(sim.world().accounts.iter().any(|a| a.hubspot_id == *hs_id));
        let s = get(&format!("{base}/v1/subscriptions?limit=1")).await.body;
        let s = &s["data"][0];
        let fields = "customer status current_period_start current_period_end \
                      cancel_at_period_end canceled_at created";
        for f in fields.split_whitespace() {
            assert!(s.get(f).is_some(), "subscription.{f}");
        }
        let item = &s["items"]["data"][0];
        assert!(item["price"]["unit_amount"].is_i64() && item["quantity"].is_u64());
        let invoices = get(&format!("{base}/v1/invoices?limit=100")).await.body;
        let fields = "customer subscription amount_due amount_paid amount_remaining due_date paid";
        for inv in invoices["data"].as_array().expect("data") {
            for f in fields.split_whitespace() {
                assert!(!inv[f].is_null(), "invoice.{f}");
            }
            let paid_at = &inv["status_transitions"]["paid_at"];
            assert_eq!(inv["paid"] == true, !paid_at.is_null());
        }
    }

    #[tokio::test]
    async fn errors_have_stripe_shape() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Stripe, 3);
        let sim = start_sim(5, limits).await;
        let url = format!("{}/v1/customers", sim.base_url(Vendor::Stripe));
        let wrong = "sk_test_wrong";
        for auth in [Auth::None, Auth::Basic(wrong), Auth::Bearer(wrong)] {
            let r = call("GET", &url, auth, None).await;
            assert_eq!(r.status, 401);
            assert_eq!(r.body["error"]["type"], "invalid_request_error");
        }
        let r = call("GET", &url, Auth::Basic(Vendor::Stripe.credential()), None).await;
        assert_eq!(r.status, 200, "basic auth with the key as user");
        for q in ["limit=0", "limit=101"] {
            let r = get(&format!("{url}?{q}")).await;
            assert_eq!(r.status, 400);
            assert_eq!(r.body["error"]["param"], "limit");
            assert_eq!(r.body["error"]["type"], "invalid_request_error");
        }
        // The window is one real second: fire a burst so a slow machine still trips it.
        let mut limited = None;
        for _ in 0..8 {
            let r = get(&url).await;
            if r.status == 429 {
                limited = Some(r);
                break;
            }
        }
        let r = limited.expect("a burst exceeds 3 req/s");
        assert_eq!(r.header("retry-after"), "");
        assert_eq!(r.body["error"]["type"], "invalid_request_error");
        assert_eq!(r.body["error"]["code"], "rate_limit");
    }
}
