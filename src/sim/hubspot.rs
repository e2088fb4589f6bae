//! Simulated HubSpot CRM v3 companies API (shapes from `specs/hubspot/crm-companies-v3.json`).
//!
//! Owns, under the `/hubspot` prefix (contacts, deals, engagements and associations are
//! `hubspot_objects`, behind the same gate): `GET /crm/v3/objects/companies` (list, `after` cursor),
//! `POST /crm/v3/objects/companies/search` (offset `after`, 10,000-result window), Bearer auth
//! with HubSpot's 401 body, and the ten-secondly rolling limit with HubSpot's 429 body and
//! `X-HubSpot-RateLimit-*` headers on every authenticated response. The write side (company updates,
//! tasks) is `hubspot_write`, mounted behind the same gate; the company data is `world`.
//!
//! Assumptions not verifiable from the spec: the 401/429/400 message texts and the
//! `TEN_SECONDLY_ROLLING` policy name are from secondary sources; search counts against the
//! same ten-secondly budget and carries the same headers (the spec marks search exempt from
//! ten-secondly and live search is said to have its own ~4-5/s limit); list `limit` outside
//! 1..=100 is rejected with 400 rather than clamped.

use std::cmp::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::sim::world::SimAccount;
use crate::sim::{
    bearer, decode_cursor, encode_cursor, iso_ms, json_response, lock, query_pairs, RollingWindow,
    SimState, Vendor,
};

/// HubSpot's documented Free/Starter daily allowance; only surfaced in headers in practice.
const DAILY_LIMIT: u32 = 250_000;
/// A single search query can page through at most this many results.
pub(super) const SEARCH_WINDOW: usize = 10_000;
/// Properties returned when the request names none (HubSpot's default company set).
const DEFAULTS: [&str; 5] = [
    "name",
    "domain",
    "createdate",
    "hs_lastmodifieddate",
    "hs_object_id",
];
/// Always present whatever was requested.
const ALWAYS_PROPS: [&str; 3] = ["hs_object_id", "createdate", "hs_lastmodifieddate"];

pub(crate) struct HubState {
    limiter: Mutex<Limiter>,
    /// Contacts, deals and engagements (`hubspot_objects`).
    pub(crate) objects: super::hubspot_objects::HubObjects,
    /// The write side (`hubspot_write`): company properties and tasks written through the API.
    pub(crate) write: super::hubspot_write::WriteState,
    /// Every authenticated request's arrival and whether it was throttled, for benchmarks.
    log: Mutex<Vec<(Instant, bool)>>,
}

struct Limiter {
    ten: RollingWindow,
    daily_used: u32,
}

/// Budget snapshot after one request, rendered as headers.
struct Verdict {
    policy: Option<&'static str>,
    max: u32,
    remaining: u32,
    secondly_remaining: u32,
    daily_remaining: u32,
}

impl HubState {
    pub(crate) fn new(world: &crate::sim::World, per_10s: u32) -> HubState {
        HubState {
            objects: super::hubspot_objects::HubObjects::new(world),
            limiter: Mutex::new(Limiter {
                ten: RollingWindow::new(per_10s, Duration::from_secs(10)),
                daily_used: 0,
            }),
            write: Default::default(),
            log: Mutex::new(Vec::new()),
        }
    }

    /// Every authenticated request so far: (arrival after `start`, throttled).
    pub(crate) fn requests(&self, start: Instant) -> Vec<(Duration, bool)> {
        lock(&self.log)
            .iter()
            .map(|(t, throttled)| (t.saturating_duration_since(start), *throttled))
            .collect()
    }

    fn hit(&self, now: Instant) -> Verdict {
        let mut l = lock(&self.limiter);
        let max = l.ten.limit();
        let secondly = secondly(max);
        let mut v = Verdict {
            policy: None,
            max,
            remaining: 0,
            secondly_remaining: 0,
            daily_remaining: DAILY_LIMIT.saturating_sub(l.daily_used),
        };
        if l.daily_used >= DAILY_LIMIT {
            v.policy = Some("DAILY");
            return v;
        }
        match l.ten.try_hit(now) {
            Ok(remaining) => {
                l.daily_used += 1;
                v.remaining = remaining;
                v.daily_remaining = DAILY_LIMIT.saturating_sub(l.daily_used);
                v.secondly_remaining =
                    secondly.saturating_sub(l.ten.hits_within(now, Duration::from_secs(1)));
            }
            Err(_) => v.policy = Some("TEN_SECONDLY_ROLLING"),
        }
        v
    }
}

fn secondly(max: u32) -> u32 {
    (max / 10).max(1)
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/crm/v3/objects/companies", get(list))
        .route("/crm/v3/objects/companies/search", post(search))
        .route(
            "/crm/v3/objects/{object}",
            get(super::hubspot_objects::list),
        )
        .route(
            "/crm/v3/objects/{object}/search",
            post(super::hubspot_objects::search),
        )
        .route(
            "/crm/v4/associations/{from}/{to}/batch/read",
            post(super::hubspot_objects::associations),
        )
        .merge(super::hubspot_write::routes())
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
        .merge(super::hubspot_write::introspection())
}

pub(super) fn error(st: &SimState, status: StatusCode, category: &str, message: &str) -> Response {
    json_response(
        status,
        json!({"status": "error", "message": message, "correlationId": st.next_uuid(), "category": category}),
    )
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let token = bearer(req.headers()).map(str::to_owned);
    if token.as_deref() != Some(Vendor::Hubspot.credential()) {
        let msg = if token.is_none() {
            "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
        } else {
            "Authentication credentials not found. The access token provided is invalid or has been revoked."
        };
        return error(&st, StatusCode::UNAUTHORIZED, "INVALID_AUTHENTICATION", msg);
    }
    let arrived = Instant::now();
    let v = st.hubspot.hit(arrived);
    lock(&st.hubspot.log).push((arrived, v.policy.is_some()));
    let mut resp = match v.policy {
        None => next.run(req).await,
        Some(policy) => {
            let message = if policy == "DAILY" {
                "You have reached your daily limit."
            } else {
                "You have reached your ten_secondly_rolling limit."
            };
            json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"status": "error", "message": message, "errorType": "RATE_LIMIT",
                       "correlationId": st.next_uuid(), "policyName": policy}),
            )
        }
    };
    let h = resp.headers_mut();
    for (name, value) in [
        ("x-hubspot-ratelimit-daily", DAILY_LIMIT),
        ("x-hubspot-ratelimit-daily-remaining", v.daily_remaining),
        ("x-hubspot-ratelimit-interval-milliseconds", 10_000),
        ("x-hubspot-ratelimit-max", v.max),
        ("x-hubspot-ratelimit-remaining", v.remaining),
        ("x-hubspot-ratelimit-secondly", secondly(v.max)),
        (
            "x-hubspot-ratelimit-secondly-remaining",
            v.secondly_remaining,
        ),
    ] {
        h.insert(name, HeaderValue::from(value));
    }
    resp
}

/// A company property as HubSpot renders it (always a string).
fn property(a: &SimAccount, name: &str) -> Option<String> {
    Some(match name {
        "hs_object_id" => a.hubspot_id.clone(),
        "name" => a.name.clone(),
        "domain" => a.domain.clone(),
        "cs_stage" => a.stage.as_str().to_string(),
        "cs_tier" => a.tier.as_str().to_string(),
        "hubspot_owner_id" => a.owner_id.clone(),
        "numberofemployees" => a.employees.to_string(),
        "notes_last_contacted" => iso_ms(a.last_contacted),
        "hs_last_sales_activity_timestamp" => iso_ms(a.last_sales_activity),
        "createdate" => iso_ms(a.created_at),
        "hs_lastmodifieddate" => iso_ms(a.hs_lastmodified),
        // Manual inputs a CS team keeps on the company (custom properties, like cs_stage).
        "csm_sentiment" => manual_inputs(a).0.to_string(),
        "nps_score" => manual_inputs(a).1.to_string(),
        _ => return None,
    })
}

/// The CSM's red/amber/green call and the latest NPS answer: they follow the hidden trajectory, except
/// that one account in five is misjudged by one step (derived from the id, so no random draw changes).
fn manual_inputs(a: &SimAccount) -> (&'static str, u8) {
    use crate::sim::world::Trajectory;
    let step = match a.trajectory {
        Trajectory::Healthy => 2,
        Trajectory::Declining => 1,
        Trajectory::Churning => 0,
    };
    let digits: u64 = a.hubspot_id.bytes().map(u64::from).sum();
    let step: usize = match (digits % 10, step) {
        (0 | 1, 2) => 1,
        (0, s) => s + 1,
        (1, 0) => 1,
        (1, s) => s - 1,
        (_, s) => s,
    };
    [("red", 3), ("amber", 7), ("green", 9)][step]
}

/// Comparable value of a property: datetimes as epoch ms, numbers as numbers, else lowercase text.
#[derive(PartialEq, PartialOrd)]
pub(super) enum Key {
    Num(f64),
    Text(String),
}

fn is_numeric(name: &str) -> bool {
    const NUMERIC: [&str; 14] = [
        "hs_object_id",
        "numberofemployees",
        "hubspot_owner_id",
        "createdate",
        "hs_lastmodifieddate",
        "notes_last_contacted",
        "hs_last_sales_activity_timestamp",
        // Contacts, deals and engagements (`hubspot_objects`).
        "lastmodifieddate",
        "hs_createdate",
        "hs_timestamp",
        "closedate",
        "amount",
        "associatedcompanyid",
        "hs_call_duration",
    ];
    NUMERIC.contains(&name)
}

fn key_of(a: &SimAccount, name: &str) -> Option<Key> {
    key_of_props(&|n| property(a, n), name)
}

/// The comparable value of an object's property, for sorting search results.
pub(super) fn key_of_props(prop: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<Key> {
    parse_value(is_numeric(name), &prop(name)?)
}

/// Parses a value in the property's type; dates accept epoch ms, RFC 3339 or YYYY-MM-DD.
fn parse_value(numeric: bool, raw: &str) -> Option<Key> {
    let raw = raw.trim();
    if !numeric {
        return Some(Key::Text(raw.to_lowercase()));
    }
    if let Ok(n) = raw.parse::<f64>() {
        return Some(Key::Num(n));
    }
    let t = DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            let d = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()?;
            Some(d.and_time(chrono::NaiveTime::MIN).and_utc())
        })?;
    Some(Key::Num(t.timestamp_millis() as f64))
}

fn company_json(a: &SimAccount, requested: &[String]) -> Value {
    let mut props = Map::new();
    let names = ALWAYS_PROPS
        .iter()
        .copied()
        .chain(requested.iter().map(String::as_str));
    for name in names {
        // Unknown names are ignored, as the spec documents for `properties`.
        if let Some(v) = property(a, name) {
            props.insert(name.to_string(), Value::String(v));
        }
    }
    json!({
        "id": a.hubspot_id,
        "properties": props,
        "createdAt": iso_ms(a.created_at),
        "updatedAt": iso_ms(a.hs_lastmodified),
        "archived": false,
    })
}

/// Requested property names; `properties=a,b` and repeated `properties=a&properties=b` both work.
pub(super) fn requested_props(pairs: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "properties")
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if out.is_empty() {
        out = DEFAULTS.iter().map(|s| s.to_string()).collect();
    }
    out
}

async fn list(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let bad = |m: &str| error(&st, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let pairs = match query_pairs(&uri) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit").map(str::parse::<usize>) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => return bad("limit must be an integer between 1 and 100"),
    };
    if get("archived") == Some("true") {
        // The sim never archives companies.
        return json_response(StatusCode::OK, json!({"results": []}));
    }
    let accounts = &st.world.accounts;
    let start = match get("after") {
        None => 0,
        Some(c) => match decode_cursor(c).filter(|id| id.parse::<u64>().is_ok()) {
            // Ids are fixed-width digits, so string order equals numeric order.
            Some(id) => accounts.partition_point(|a| a.hubspot_id < id),
            None => return bad("invalid paging cursor 'after'"),
        },
    };
    let props = requested_props(&pairs);
    let end = (start + limit).min(accounts.len());
    let results: Vec<Value> = accounts[start..end]
        .iter()
        .map(|a| company_json(a, &props))
        .collect();
    let mut body = json!({"results": results});
    if let Some(next) = accounts.get(end) {
        let after = encode_cursor(&next.hubspot_id);
        let link = format!(
            "{}/hubspot/crm/v3/objects/companies?limit={limit}&after={after}&properties={}",
            st.base,
            props.join(",")
        );
        body["paging"] = json!({"next": {"after": after, "link": link}});
    }
    json_response(StatusCode::OK, body)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct SearchRequest {
    #[serde(default)]
    pub(super) filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub(super) sorts: Vec<SortSpec>,
    #[serde(default)]
    pub(super) properties: Vec<String>,
    #[serde(default)]
    pub(super) limit: Option<Value>,
    #[serde(default)]
    pub(super) after: Option<Value>,
    #[serde(default)]
    pub(super) query: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct FilterGroup {
    #[serde(default)]
    pub(super) filters: Vec<Filter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Filter {
    pub(super) property_name: String,
    pub(super) operator: String,
    #[serde(default)]
    pub(super) value: Option<Value>,
    #[serde(default)]
    pub(super) high_value: Option<Value>,
    #[serde(default)]
    pub(super) values: Vec<Value>,
}

/// The spec types sorts as strings, the docs send objects: accept both.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum SortSpec {
    Text(String),
    #[serde(rename_all = "camelCase")]
    Object {
        property_name: String,
        #[serde(default)]
        direction: Option<String>,
    },
}

impl SortSpec {
    /// `(property, descending)`; string form allows a leading `-` for descending.
    pub(super) fn parts(&self) -> (String, bool) {
        match self {
            SortSpec::Text(s) => match s.strip_prefix('-') {
                Some(p) => (p.to_string(), true),
                None => (s.clone(), false),
            },
            SortSpec::Object {
                property_name,
                direction,
            } => (
                property_name.clone(),
                direction
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING")),
            ),
        }
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `a` passes `f`; errors are client mistakes worth a 400.
fn matches(a: &SimAccount, f: &Filter) -> Result<bool, String> {
    matches_props(&|name| property(a, name), f)
}

/// Whether an object whose properties `prop` reads passes `f` (companies and the other object types).
pub(super) fn matches_props(
    prop: &dyn Fn(&str) -> Option<String>,
    f: &Filter,
) -> Result<bool, String> {
    let op = f.operator.as_str();
    let Some(have) =
        prop(&f.property_name).and_then(|raw| parse_value(is_numeric(&f.property_name), &raw))
    else {
        // The sim's companies carry every known property; unknown ones are simply absent.
        return Ok(["NOT_HAS_PROPERTY", "NEQ", "NOT_IN", "NOT_CONTAINS_TOKEN"].contains(&op));
    };
    let parse = |v: Option<&Value>, what: &str| -> Result<Key, String> {
        let raw = v
            .map(value_text)
            .ok_or_else(|| format!("filter on {} needs {what}", f.property_name))?;
        parse_value(is_numeric(&f.property_name), &raw)
            .ok_or_else(|| format!("invalid value '{raw}' for {}", f.property_name))
    };
    let cmp = |k: &Key| have.partial_cmp(k).unwrap_or(Ordering::Equal);
    Ok(match op {
        "EQ" => cmp(&parse(f.value.as_ref(), "value")?) == Ordering::Equal,
        "NEQ" => cmp(&parse(f.value.as_ref(), "value")?) != Ordering::Equal,
        "LT" => cmp(&parse(f.value.as_ref(), "value")?) == Ordering::Less,
        "LTE" => cmp(&parse(f.value.as_ref(), "value")?) != Ordering::Greater,
        "GT" => cmp(&parse(f.value.as_ref(), "value")?) == Ordering::Greater,
        "GTE" => cmp(&parse(f.value.as_ref(), "value")?) != Ordering::Less,
        "BETWEEN" => {
            let lo = parse(f.value.as_ref(), "value")?;
            let hi = parse(f.high_value.as_ref(), "highValue")?;
            cmp(&lo) != Ordering::Less && cmp(&hi) != Ordering::Greater
        }
        "IN" | "NOT_IN" => {
            let mut any = false;
            for v in &f.values {
                any |= cmp(&parse(Some(v), "values")?) == Ordering::Equal;
            }
            any == (op == "IN")
        }
        "HAS_PROPERTY" => true,
        "NOT_HAS_PROPERTY" => false,
        "CONTAINS_TOKEN" | "NOT_CONTAINS_TOKEN" => {
            let token = value_text(f.value.as_ref().unwrap_or(&Value::Null)).to_lowercase();
            let text = prop(&f.property_name).unwrap_or_default().to_lowercase();
            text.contains(token.trim_matches('*')) == (op == "CONTAINS_TOKEN")
        }
        other => return Err(format!("unsupported operator {other}")),
    })
}

pub(super) fn int_field(v: Option<&Value>, default: usize) -> Option<usize> {
    match v {
        None | Some(Value::Null) => Some(default),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| usize::try_from(n).ok()),
        Some(Value::String(s)) if s.is_empty() => Some(default),
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    }
}

async fn search(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let bad = |m: &str| error(&st, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let req: SearchRequest = if body.is_empty() {
        SearchRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad(&format!("invalid search request: {e}")),
        }
    };
    let limit = match int_field(req.limit.as_ref(), 10) {
        Some(n) if (1..=200).contains(&n) => n,
        _ => return bad("limit must be an integer between 1 and 200"),
    };
    let Some(offset) = int_field(req.after.as_ref(), 0) else {
        return bad("invalid paging cursor 'after'");
    };
    if offset >= SEARCH_WINDOW {
        return bad("search results are limited to 10000 per query; narrow the filters instead of paging further");
    }
    let query = req.query.as_deref().map(str::to_lowercase);
    let mut hits: Vec<&SimAccount> = Vec::new();
    for a in &st.world.accounts {
        if let Some(q) = &query {
            if !a.name.to_lowercase().contains(q.as_str()) && !a.domain.contains(q.as_str()) {
                continue;
            }
        }
        // Groups are ORed, filters inside a group ANDed; no groups means everything.
        let mut pass = req.filter_groups.is_empty();
        for g in &req.filter_groups {
            let mut all = true;
            for f in &g.filters {
                match matches(a, f) {
                    Ok(m) => all &= m,
                    Err(e) => return bad(&e),
                }
            }
            pass |= all;
        }
        if pass {
            hits.push(a);
        }
    }
    if let Some(sort) = req.sorts.first() {
        let (prop, desc) = sort.parts();
        hits.sort_by(|x, y| {
            let o = key_of(x, &prop)
                .partial_cmp(&key_of(y, &prop))
                .unwrap_or(Ordering::Equal);
            let o = if desc { o.reverse() } else { o };
            o.then_with(|| x.hubspot_id.cmp(&y.hubspot_id))
        });
    }
    let props = if req.properties.is_empty() {
        DEFAULTS.iter().map(|s| s.to_string()).collect()
    } else {
        req.properties.clone()
    };
    let end = (offset + limit).min(hits.len());
    let results: Vec<Value> = hits
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|a| company_json(a, &props))
        .collect();
    let mut out = json!({"total": hits.len(), "results": results});
    if end < hits.len() {
        out["paging"] = json!({"next": {"after": end.to_string()}});
    }
    json_response(StatusCode::OK, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, start_sim, strs, Auth, Reply};
    use crate::sim::{SimRateLimits, Vendor};
    use std::collections::HashSet;

    async fn hs(method: &str, url: &str, body: Option<&Value>) -> Reply {
        call(
            method,
            url,
            Auth::Bearer(Vendor::Hubspot.credential()),
            body,
        )
        .await
    }

    #[tokio::test]
    async fn list_walks_every_company_once_in_id_order() {
        let sim = start_sim(57, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Hubspot);
        let props = "name,cs_tier,notes_last_contacted";
        let mut url = format!("{base}/crm/v3/objects/companies?limit=10&properties={props}");
        let mut seen = Vec::new();
        loop {
            let r = hs("GET", &url, None).await;
            assert_eq!(r.status, 200);
            assert_ne!(r.header("x-hubspot-ratelimit-remaining"), "");
            for c in r.body["results"].as_array().expect("results") {
                let p = &c["properties"];
                assert!(p["name"].is_string() && p["cs_tier"].is_string());
                assert!(p["hs_object_id"].is_string() && p["hs_lastmodifieddate"].is_string());
                assert!(p.get("domain").is_none(), "only requested + always-present");
                assert_eq!(c["archived"], false);
            }
            seen.extend(strs(&r.body["results"], "id"));
            match r.body["paging"]["next"]["link"].as_str() {
                Some(link) => url = link.to_string(),
                None => break,
            }
        }
        let w = sim.world();
        let ids: Vec<String> = w.accounts.iter().map(|a| a.hubspot_id.clone()).collect();
        assert_eq!(seen, ids);
    }

    #[tokio::test]
    async fn search_pages_by_modified_date_and_accepts_both_sort_forms() {
        let sim = start_sim(120, SimRateLimits::unlimited()).await;
        let w = sim.world();
        let cutoff = w.now - chrono::Duration::days(20);
        let recent = w.accounts.iter().filter(|a| a.hs_lastmodified >= cutoff);
        let expected: HashSet<String> = recent.map(|a| a.hubspot_id.clone()).collect();
        let url = format!(
            "{}/crm/v3/objects/companies/search",
            sim.base_url(Vendor::Hubspot)
        );
        let prop = "hs_lastmodifieddate";
        let ms = cutoff.timestamp_millis().to_string();
        let filter = json!({"propertyName": prop, "operator": "GTE", "value": ms});
        let object_sort = json!({"propertyName": prop, "direction": "ASCENDING"});
        for sort in [object_sort, json!(prop)] {
            let (mut after, mut seen, mut last) = (json!(null), Vec::new(), String::new());
            loop {
                let body = json!({"filterGroups": [{"filters": [filter]}], "sorts": [sort],
                                  "limit": 7, "properties": [prop, "name"], "after": after});
                let r = hs("POST", &url, Some(&body)).await;
                assert_eq!(r.body["total"].as_u64(), Some(expected.len() as u64));
                for c in r.body["results"].as_array().expect("results") {
                    let m = c["properties"][prop].as_str().expect("date").to_string();
                    assert!(m >= last, "ascending by {prop}");
                    last = m;
                }
                seen.extend(strs(&r.body["results"], "id"));
                match r.body["paging"]["next"]["after"].as_str() {
                    Some(a) => after = json!(a),
                    None => break,
                }
            }
            assert_eq!(seen.len(), expected.len());
            assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
        }
    }

    #[tokio::test]
    async fn search_rejects_paging_past_ten_thousand_and_bad_limit() {
        let sim = start_sim(5, SimRateLimits::unlimited()).await;
        let url = format!(
            "{}/crm/v3/objects/companies/search",
            sim.base_url(Vendor::Hubspot)
        );
        let past_window = json!({"after": "10000", "limit": 100});
        for body in [past_window, json!({"limit": 201})] {
            let r = hs("POST", &url, Some(&body)).await;
            assert_eq!(r.status, 400);
            assert_eq!(r.body["status"], "error");
            assert_eq!(r.body["category"], "VALIDATION_ERROR");
        }
    }

    #[tokio::test]
    async fn auth_and_rate_limit_shapes() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Hubspot, 2);
        let sim = start_sim(5, limits).await;
        let url = format!("{}/crm/v3/objects/companies", sim.base_url(Vendor::Hubspot));
        for auth in [Auth::None, Auth::Bearer("wrong")] {
            let r = call("GET", &url, auth, None).await;
            assert_eq!(r.status, 401);
            assert_eq!(r.body["category"], "INVALID_AUTHENTICATION");
            assert!(r.body["correlationId"].is_string() && r.body["message"].is_string());
        }
        assert_eq!(hs("GET", &url, None).await.status, 200);
        assert_eq!(hs("GET", &url, None).await.status, 200);
        let r = hs("GET", &url, None).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("x-hubspot-ratelimit-remaining"), "0");
        assert_eq!(r.header("x-hubspot-ratelimit-max"), "2");
        let interval = r.header("x-hubspot-ratelimit-interval-milliseconds");
        assert_eq!(interval, "10000");
        assert_eq!(r.header("retry-after"), "");
        assert_eq!(r.body["policyName"], "TEN_SECONDLY_ROLLING");
        assert_eq!(r.body["errorType"], "RATE_LIMIT");
        assert_eq!(r.body["status"], "error");
    }
}
