//! Simulated Chargebee API v2 lists (shapes from Chargebee's OpenAPI, v1 file in ../shared/api/specs, and the
//! v2 filter docs): `GET /api/v2/customers`, `/api/v2/subscriptions`, `/api/v2/invoices` under the
//! `/chargebee` prefix.
//!
//! Owns: HTTP Basic auth with the site API key as user (401 `api_authentication_failed`), `limit` (1..=100,
//! default 10; otherwise 400 `param_wrong_value`), opaque `offset` / `next_offset` (present only when more
//! pages exist), `updated_at[after]` / `updated_at[before]` (unix seconds), `sort_by[asc]=updated_at`, and the
//! per-minute site limit answered with 429 `api_request_limit_exceeded` and no `Retry-After` (none is
//! documented). Subscription items also carry their `customer`, as the list endpoint does.
//!
//! Data: one customer per simulated account (carrying the HubSpot company id in `cf_hubspot_company_id`),
//! its subscriptions and its invoices, rendered from the same billing the Stripe simulator serves, so both
//! billing sources agree. Deviations: results are always ordered by (updated_at, id) whatever `sort_by` says
//! (only `sort_by[asc]=updated_at` is accepted); other filters are not implemented and are refused with 400.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::sim::world::{InvoiceStatus, SimAccount, SimSubscription, SubStatus, World};
use crate::sim::{basic, json_response, lock, query_pairs, RollingWindow, SimState};

/// The site API key the simulator accepts (as the Basic-auth user, empty password).
pub const API_KEY: &str = "test_cbsim_key";

pub(crate) struct ChargebeeState {
    limiter: Mutex<RollingWindow>,
    /// Per stream: (updated_at, id, list item), sorted by (updated_at, id).
    customers: Vec<(i64, String, Value)>,
    subscriptions: Vec<(i64, String, Value)>,
    invoices: Vec<(i64, String, Value)>,
}

fn cb_id(stripe_id: &str) -> String {
    stripe_id
        .split_once('_')
        .map_or(stripe_id, |(_, rest)| rest)
        .to_string()
}

/// A deterministic number of seconds in `0..span` from a string.
fn jitter(key: &str, span: i64) -> i64 {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % span.max(1) as u64) as i64
}

fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn customer(a: &SimAccount, now: DateTime<Utc>) -> (i64, String, Value) {
    let id = cb_id(&a.stripe_customer_id);
    let created = ts(a.stripe_customer_created);
    // Rows updated in the same bulk job share a second: a third land on the hour (ties at page boundaries).
    let mut updated = (ts(now) - jitter(&id, 60 * 86_400)).max(created);
    if jitter(&a.hubspot_id, 3) == 0 {
        updated -= updated % 3600;
    }
    let updated = updated.max(created);
    let item = json!({"customer": {
        "id": id, "first_name": "Billing", "last_name": "Team", "email": format!("billing@{}", a.domain),
        "company": a.name, "auto_collection": "on", "net_term_days": a.subscription.days_until_due,
        "allow_direct_debit": false, "created_at": created, "updated_at": updated,
        "resource_version": updated * 1000, "deleted": false, "object": "customer", "taxability": "taxable",
        "preferred_currency_code": "USD", "cf_hubspot_company_id": a.hubspot_id,
        "promotional_credits": 0, "refundable_credits": 0, "excess_payments": 0, "unbilled_charges": 0,
    }});
    (updated, id, item)
}

fn subscription(
    a: &SimAccount,
    s: &SimSubscription,
    customer: &Value,
    now: DateTime<Utc>,
) -> (i64, String, Value) {
    let id = cb_id(&s.id);
    let status = match (s.status, s.cancel_at_period_end) {
        (SubStatus::Canceled, _) => "cancelled",
        (_, true) => "non_renewing",
        _ => "active",
    };
    let due = a
        .invoices
        .iter()
        .filter(|i| i.subscription_id == s.id && i.amount_remaining() > 0)
        .count();
    let last_change = [Some(s.created), s.canceled_at, Some(s.current_period_start)]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(s.created);
    let updated = (ts(last_change) + jitter(&id, 3 * 86_400)).min(ts(now));
    let amount = s.unit_amount * i64::from(s.quantity);
    let mut sub = json!({
        "id": id, "customer_id": customer["id"], "status": status, "currency_code": "USD",
        "billing_period": 1, "billing_period_unit": "month", "auto_collection": "off",
        "current_term_start": ts(s.current_period_start), "current_term_end": ts(s.current_period_end),
        "created_at": ts(s.created), "started_at": ts(s.created), "activated_at": ts(s.created),
        "updated_at": updated, "resource_version": updated * 1000, "deleted": false, "object": "subscription",
        "due_invoices_count": due, "has_scheduled_changes": false, "mrr": if status == "cancelled" { 0 } else { amount },
        "subscription_items": [{"item_price_id": "platform-USD-Monthly", "item_type": "plan", "quantity": s.quantity,
                                 "unit_price": s.unit_amount, "amount": amount, "object": "subscription_item"}],
    });
    if let Some(c) = s.canceled_at {
        sub["cancelled_at"] = json!(ts(c));
    }
    (
        updated,
        id,
        json!({"subscription": sub, "customer": customer}),
    )
}

fn invoices(a: &SimAccount, cust_id: &str, now: DateTime<Utc>) -> Vec<(i64, String, Value)> {
    a.invoices
        .iter()
        .map(|inv| {
            let status = match inv.status {
                InvoiceStatus::Paid => "paid",
                InvoiceStatus::Open if inv.due_date < now => "payment_due",
                InvoiceStatus::Open => "posted",
                InvoiceStatus::Void => "voided",
                InvoiceStatus::Uncollectible => "not_paid",
            };
            let last = [Some(inv.created), inv.paid_at, inv.voided_at, inv.marked_uncollectible_at].into_iter().flatten().max().unwrap_or(inv.created);
            let updated = ts(last);
            let mut v = json!({
                "id": inv.number, "customer_id": cust_id, "subscription_id": cb_id(&inv.subscription_id),
                "recurring": true, "status": status, "price_type": "tax_exclusive", "currency_code": "USD",
                "date": ts(inv.created), "due_date": ts(inv.due_date), "net_term_days": (inv.due_date - inv.created).num_days(),
                "total": inv.amount_due, "amount_paid": inv.amount_paid, "amount_due": inv.amount_remaining(),
                "amount_adjusted": 0, "credits_applied": 0, "write_off_amount": 0,
                "updated_at": updated, "resource_version": updated * 1000, "deleted": false, "object": "invoice",
                "line_items": [{"entity_type": "plan_item_price", "entity_id": "platform-USD-Monthly",
                                "date_from": ts(inv.period_start), "date_to": ts(inv.period_end), "amount": inv.amount_due}],
            });
            if let Some(p) = inv.paid_at {
                v["paid_at"] = json!(ts(p));
            }
            (updated, inv.number.clone(), json!({"invoice": v}))
        })
        .collect()
}

impl ChargebeeState {
    pub(crate) fn new(w: &World, per_min: u32) -> ChargebeeState {
        let (mut customers, mut subscriptions, mut invs) = (Vec::new(), Vec::new(), Vec::new());
        for a in &w.accounts {
            let c = customer(a, w.now);
            let cust = c.2["customer"].clone();
            for s in a
                .previous_subscription
                .iter()
                .chain(std::iter::once(&a.subscription))
            {
                subscriptions.push(subscription(a, s, &cust, w.now));
            }
            invs.extend(invoices(a, &c.1, w.now));
            customers.push(c);
        }
        for list in [&mut customers, &mut subscriptions, &mut invs] {
            list.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
        }
        ChargebeeState {
            limiter: Mutex::new(RollingWindow::new(per_min, Duration::from_secs(60))),
            customers,
            subscriptions,
            invoices: invs,
        }
    }

    fn rows(&self, resource: &str) -> Option<&[(i64, String, Value)]> {
        match resource {
            "customers" => Some(&self.customers),
            "subscriptions" => Some(&self.subscriptions),
            "invoices" => Some(&self.invoices),
            _ => None,
        }
    }

    #[cfg(test)]
    pub(crate) fn count(&self, resource: &str) -> usize {
        self.rows(resource).map_or(0, <[_]>::len)
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/api/v2/{resource}", get(list))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn error(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Response {
    let mut e = json!({"message": message, "type": kind, "api_error_code": code, "http_status_code": status.as_u16(),
                       "error_code": code, "error_msg": message});
    if let Some(p) = param {
        e["param"] = json!(p);
    }
    json_response(status, e)
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if basic(req.headers()).map(|(user, _)| user).as_deref() != Some(API_KEY) {
        return error(
            StatusCode::UNAUTHORIZED,
            "untyped",
            "api_authentication_failed",
            "Sorry, authentication failed. Invalid api key",
            None,
        );
    }
    if lock(&st.chargebee.limiter).try_hit(Instant::now()).is_err() {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "operation_failed",
            "api_request_limit_exceeded",
            "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. Please try after some time.",
            None,
        );
    }
    next.run(req).await
}

fn bad_param(param: &str, message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "param_wrong_value",
        message,
        Some(param),
    )
}

async fn list(State(st): State<Arc<SimState>>, Path(resource): Path<String>, uri: Uri) -> Response {
    let Some(rows) = st.chargebee.rows(&resource) else {
        return error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "resource_not_found",
            "Sorry, we couldn't find that resource",
            None,
        );
    };
    let pairs = query_pairs(&uri).unwrap_or_default();
    let (mut limit, mut after, mut before, mut from) = (10usize, None, None, None);
    for (k, v) in &pairs {
        let int = || {
            v.parse::<i64>()
                .map_err(|_| bad_param(k, &format!("{k} : invalid value")))
        };
        match k.as_str() {
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => limit = n,
                _ => {
                    return bad_param(
                        "limit",
                        &format!(
                            "limit : The value {v} is invalid. It should be between 1 and 100"
                        ),
                    )
                }
            },
            "updated_at[after]" => match int() {
                Ok(n) => after = Some(n),
                Err(r) => return r,
            },
            "updated_at[before]" => match int() {
                Ok(n) => before = Some(n),
                Err(r) => return r,
            },
            "offset" => match serde_json::from_str::<(String, String)>(v) {
                Ok((u, id)) => match u.parse::<i64>() {
                    Ok(u) => from = Some((u, id)),
                    Err(_) => return bad_param("offset", "offset : invalid value"),
                },
                Err(_) => return bad_param("offset", "offset : invalid value"),
            },
            "sort_by[asc]" if v == "updated_at" => {}
            other => return bad_param(other, &format!("{other} : not supported by the simulator")),
        }
    }
    let mut matching = rows.iter().filter(|(u, id, _)| {
        after.is_none_or(|a| *u > a)
            && before.is_none_or(|b| *u < b)
            && from.as_ref().is_none_or(|(fu, fid)| (*u, id) > (*fu, fid))
    });
    let page: Vec<&(i64, String, Value)> = matching.by_ref().take(limit).collect();
    let mut body = json!({"list": page.iter().map(|r| r.2.clone()).collect::<Vec<_>>()});
    if let (Some(last), true) = (page.last(), matching.next().is_some()) {
        body["next_offset"] =
            json!(serde_json::to_string(&[last.0.to_string(), last.1.clone()]).unwrap_or_default());
    }
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConnectorConfig;
    use crate::connector::{kinds::testkit::drain, BuildContext, Built, Source};
    use crate::http::testing::{config, secrets};
    use crate::sim::test_support::*;
    use crate::sim::{SimHandle, SimRateLimits, Vendor};
    use crate::vocab::{AuthScheme, Role};

    fn source(sim: &SimHandle, tweak: impl Fn(&mut ConnectorConfig)) -> Box<dyn Source> {
        let mut cfg = config(
            "chargebee",
            Role::Source,
            &sim.base_url(Vendor::Chargebee),
            AuthScheme::Basic,
        );
        let s = secrets(&mut cfg, &[("username", API_KEY)]);
        cfg.params = (crate::connector::kinds::chargebee::SPEC.parse_params)(
            &toml::from_str("crm_id_field = \"cf_hubspot_company_id\"").unwrap(),
        )
        .unwrap();
        cfg.streams = vec![
            "customers".into(),
            "subscriptions".into(),
            "invoices".into(),
        ];
        tweak(&mut cfg);
        match crate::connector::kinds::chargebee::build(&BuildContext {
            connector: &cfg,
            secrets: &s,
        }) {
            Ok(Built::Source(src)) => src,
            _ => panic!("chargebee builds a source"),
        }
    }

    #[tokio::test]
    async fn the_kind_syncs_every_list_then_only_changes() {
        let sim = start_sim(150, SimRateLimits::unlimited()).await;
        let src = source(&sim, |_| {});
        let world = sim.world();
        for stream in ["customers", "subscriptions", "invoices"] {
            let d = drain(src.as_ref(), stream, None).await.unwrap();
            let n = sim.state.chargebee.count(stream);
            assert_eq!((d.records.len(), d.pages), (n, n.div_ceil(100)), "{stream}");
            assert!(d.pages >= 2 && d.rejected.is_empty(), "{stream}");
            assert!(d
                .records
                .iter()
                .all(|r| r.account_keys.contains_key("chargebee_customer_id")));
            if stream == "customers" {
                assert!(d.records.iter().all(|r| world
                    .accounts
                    .iter()
                    .any(|a| a.hubspot_id == r.account_keys["crm_id"])));
            }
            let again = drain(src.as_ref(), stream, Some(d.cursor.clone()))
                .await
                .unwrap();
            assert!(
                again.records.len() < d.records.len() && !again.records.is_empty(),
                "{stream}"
            );
        }
        let future = serde_json::json!({"hwm": {"updated_at": "2099-01-01T00:00:00Z", "id": "x"}});
        let none = drain(src.as_ref(), "invoices", Some(crate::vocab::Cursor(future)))
            .await
            .unwrap();
        assert_eq!(none.records.len(), 0);
    }

    #[tokio::test]
    async fn the_site_limit_answers_429_and_a_bad_key_401() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Chargebee, 1);
        let sim = start_sim(20, limits).await;
        let url = format!(
            "{}/api/v2/customers?limit=5",
            sim.base_url(Vendor::Chargebee)
        );
        let ok = call("GET", &url, Auth::Basic(API_KEY), None).await;
        assert_eq!(
            (ok.status, ok.body["list"].as_array().map(Vec::len)),
            (200, Some(5))
        );
        assert!(ok.body["next_offset"].is_string());
        let throttled = call("GET", &url, Auth::Basic(API_KEY), None).await;
        assert_eq!(throttled.status, 429);
        assert_eq!(
            throttled.body["api_error_code"],
            "api_request_limit_exceeded"
        );
        assert_eq!(throttled.header("retry-after"), "");
        let denied = call("GET", &url, Auth::Basic("wrong"), None).await;
        assert_eq!(
            (denied.status, denied.body["api_error_code"].as_str()),
            (401, Some("api_authentication_failed"))
        );
    }
}
