//! Simulated HubSpot contacts, deals and engagements (meetings, calls, emails), and the v4 association
//! reads that tie them to companies. Shapes from `specs/hubspot/crm-contacts-v3.json` and
//! `crm-deals-v3.json` (SimplePublicObject, CollectionResponse…ForwardPaging, the search request); the
//! engagement objects share that shape. Served under `/hubspot` behind the same auth and rate-limit gate as
//! companies (`hubspot.rs`, which owns the search filter grammar this module reuses).
//!
//! - `GET /crm/v3/objects/{type}` lists in id order with an `after` cursor; `POST /crm/v3/objects/{type}/search`
//!   filters, sorts and pages by offset within a 10,000-result window, like companies.
//! - `POST /crm/v4/associations/{type}/companies/batch/read` with `{"inputs":[{"id"}]}` returns
//!   `{"status":"COMPLETE","results":[{"from":{"id"},"to":[{"toObjectId",…,"associationTypes":[…]}]}]}`;
//!   an id with no company comes back under `errors` with HTTP 207 (multi-status), as HubSpot's batch
//!   endpoints do. `toObjectId` is a number, as the v4 API sends it (the 2026-03 docs show a string; the
//!   connector reads both).
//!
//! Objects are generated per company from its id (deterministic), with counts that follow the hidden
//! trajectory: healthy accounts meet, call and email more. Contacts carry `associatedcompanyid` (their
//! primary company); deals and engagements carry no company property, only associations. Assumed, not
//! from the spec: the association type ids (HubSpot's documented defaults: deal→company 5, meeting 188,
//! call 182, email 186), the 207 error body's wording, and the batch limit of 1,000 inputs.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::hubspot::{error, int_field, key_of_props, matches_props, SearchRequest, SEARCH_WINDOW};
use crate::sim::world::{by, SimAccount, Trajectory, World};
use crate::sim::{decode_cursor, encode_cursor, iso_ms, json_response, query_pairs, SimState};

/// The object types served here, each with its id base (ids are fixed-width digits, so string order is
/// numeric order), its modification-date property and the association type id to companies.
const TYPES: [(&str, u64, &str, u32); 5] = [
    ("contacts", 1_000_000_000, "lastmodifieddate", 1),
    ("deals", 2_000_000_000, "hs_lastmodifieddate", 5),
    ("meetings", 3_000_000_000, "hs_lastmodifieddate", 188),
    ("calls", 4_000_000_000, "hs_lastmodifieddate", 182),
    ("emails", 5_000_000_000, "hs_lastmodifieddate", 186),
];

/// The most ids one association batch read accepts.
const BATCH_LIMIT: usize = 1000;

/// One CRM object: its id, company and properties as HubSpot renders them (strings).
pub(crate) struct HubObject {
    id: String,
    company: String,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    props: BTreeMap<&'static str, String>,
}

impl HubObject {
    fn prop(&self, name: &str) -> Option<String> {
        match name {
            "hs_object_id" => Some(self.id.clone()),
            _ => self.props.get(name).cloned(),
        }
    }

    fn to_json(&self, requested: &[String], modified_prop: &str) -> Value {
        let mut props = Map::new();
        let always = ["hs_object_id", "hs_createdate", "createdate", modified_prop];
        for name in always
            .iter()
            .copied()
            .chain(requested.iter().map(String::as_str))
        {
            if let Some(v) = self.prop(name) {
                props.insert(name.to_string(), Value::String(v));
            }
        }
        json!({
            "id": self.id,
            "properties": props,
            "createdAt": iso_ms(self.created),
            "updatedAt": iso_ms(self.modified),
            "archived": false,
        })
    }
}

/// Every generated object, by type, in id order.
pub(crate) struct HubObjects {
    by_type: BTreeMap<&'static str, Vec<HubObject>>,
}

impl HubObjects {
    pub(crate) fn new(w: &World) -> HubObjects {
        let mut by_type: BTreeMap<&'static str, Vec<HubObject>> = BTreeMap::new();
        for a in &w.accounts {
            gen_account(a, w.now, &mut by_type);
        }
        // Number ids per type in generation order (accounts are in id order).
        for (ty, base, _, _) in TYPES {
            for (n, o) in by_type.entry(ty).or_default().iter_mut().enumerate() {
                o.id = (base + n as u64).to_string();
            }
        }
        HubObjects { by_type }
    }

    fn of(&self, ty: &str) -> Option<(&[HubObject], &'static str, u32)> {
        let (_, _, modified, assoc) = TYPES.iter().find(|t| t.0 == ty)?;
        Some((self.by_type.get(ty)?.as_slice(), modified, *assoc))
    }
}

/// A time in the last `max_days` (from the company's id-seeded generator), never before `floor`.
fn recent(
    rng: &mut StdRng,
    now: DateTime<Utc>,
    max_days: i64,
    floor: DateTime<Utc>,
) -> DateTime<Utc> {
    let t = now - Duration::seconds(rng.gen_range(60..max_days.max(1) * 86_400));
    t.max(floor).min(now)
}

fn gen_account(
    a: &SimAccount,
    now: DateTime<Utc>,
    out: &mut BTreeMap<&'static str, Vec<HubObject>>,
) {
    let seed = a.hubspot_id.parse::<u64>().unwrap_or(11) ^ 0x0b1e_c700_0000_0005;
    let rng = &mut StdRng::seed_from_u64(seed);
    let t = a.trajectory;
    // A churned account's activity stops when it left.
    let until = a.churn_at.map_or(now, |c| c.min(now));
    let mut push = |ty: &'static str, created, modified, props: Vec<(&'static str, String)>| {
        out.entry(ty).or_default().push(HubObject {
            id: String::new(),
            company: a.hubspot_id.clone(),
            created,
            modified,
            props: props.into_iter().collect(),
        });
    };
    for _ in 0..rng.gen_range(1..5) {
        let modified = recent(rng, until, 120, a.created_at);
        let first = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima"][rng.gen_range(0..6)];
        let props = vec![
            ("firstname", first.to_string()),
            (
                "lastname",
                ["Ng", "Ortiz", "Park", "Quinn"][rng.gen_range(0..4)].to_string(),
            ),
            ("email", format!("{}@{}", first.to_lowercase(), a.domain)),
            (
                "jobtitle",
                ["VP Operations", "Admin", "Champion", "CFO"][rng.gen_range(0..4)].to_string(),
            ),
            ("lifecyclestage", "customer".to_string()),
            ("associatedcompanyid", a.hubspot_id.clone()),
            ("createdate", iso_ms(a.created_at)),
            ("lastmodifieddate", iso_ms(modified)),
        ];
        push("contacts", a.created_at, modified, props);
    }
    for k in 0..rng.gen_range(1..4) {
        let modified = recent(rng, until, 180, a.created_at);
        let created = (modified - Duration::days(rng.gen_range(0..60))).max(a.created_at);
        let lost = t == Trajectory::Churning && k == 0;
        let stage = match (lost, rng.gen_bool(0.6)) {
            (true, _) => "closedlost",
            (false, true) => "closedwon",
            (false, false) => "contractsent",
        };
        let props = vec![
            ("dealname", format!("{} renewal {}", a.name, k + 1)),
            ("dealstage", stage.to_string()),
            ("pipeline", "default".to_string()),
            ("dealtype", "existingbusiness".to_string()),
            (
                "amount",
                format!("{:.2}", (a.mrr_cents * 12) as f64 / 100.0),
            ),
            ("closedate", iso_ms(created + Duration::days(60))),
            ("createdate", iso_ms(created)),
            ("hs_lastmodifieddate", iso_ms(modified)),
        ];
        push("deals", created, modified, props);
    }
    let mut engagement = |rng: &mut StdRng, ty: &'static str, max_days: i64| {
        let at = recent(rng, until, max_days, a.created_at);
        // Logged a little after it happened; edited later now and then.
        let created = (at + Duration::minutes(rng.gen_range(5..120))).min(now);
        let modified = if rng.gen_bool(0.2) {
            recent(rng, now, 30, created)
        } else {
            created
        };
        let mut props = vec![
            ("hs_timestamp", iso_ms(at)),
            ("hs_createdate", iso_ms(created)),
            ("hs_lastmodifieddate", iso_ms(modified)),
            ("hubspot_owner_id", a.owner_id.clone()),
        ];
        match ty {
            "meetings" => props.extend([
                (
                    "hs_meeting_title",
                    [
                        "Quarterly business review",
                        "Onboarding session",
                        "Check-in",
                    ][rng.gen_range(0..3)]
                    .to_string(),
                ),
                ("hs_meeting_start_time", iso_ms(at)),
                ("hs_meeting_end_time", iso_ms(at + Duration::hours(1))),
                ("hs_meeting_outcome", "COMPLETED".to_string()),
            ]),
            "calls" => props.extend([
                ("hs_call_title", "Check-in call".to_string()),
                (
                    "hs_call_direction",
                    ["OUTBOUND", "INBOUND"][rng.gen_range(0..2)].to_string(),
                ),
                (
                    "hs_call_duration",
                    (rng.gen_range(2..40) * 60_000).to_string(),
                ),
                ("hs_call_status", "COMPLETED".to_string()),
            ]),
            _ => props.extend([
                (
                    "hs_email_subject",
                    ["Follow-up", "Renewal", "Your usage this month"][rng.gen_range(0..3)]
                        .to_string(),
                ),
                (
                    "hs_email_direction",
                    ["EMAIL", "INCOMING_EMAIL"][rng.gen_range(0..2)].to_string(),
                ),
                ("hs_email_status", "SENT".to_string()),
            ]),
        }
        push(ty, created, modified, props);
    };
    for _ in 0..by(t, [3, 2, 1]) {
        engagement(rng, "meetings", 90);
    }
    for _ in 0..by(t, [5, 3, 1]) + rng.gen_range(0..2) {
        engagement(rng, "calls", 60);
    }
    for _ in 0..by(t, [6, 3, 1]) + rng.gen_range(0..3) {
        engagement(rng, "emails", 60);
    }
}

fn unknown_type(st: &SimState, ty: &str) -> Response {
    error(
        st,
        StatusCode::BAD_REQUEST,
        "VALIDATION_ERROR",
        &format!("Unable to infer object type from: {ty}"),
    )
}

/// Requested property names (`properties=a,b` or repeated), or none.
fn requested(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "properties")
        .flat_map(|(_, v)| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

pub(super) async fn list(
    State(st): State<Arc<SimState>>,
    Path(ty): Path<String>,
    uri: Uri,
) -> Response {
    let Some((objects, modified, _)) = st.hubspot.objects.of(&ty) else {
        return unknown_type(&st, &ty);
    };
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
        return json_response(StatusCode::OK, json!({"results": []}));
    }
    let start = match get("after") {
        None => 0,
        Some(c) => match decode_cursor(c).filter(|id| id.parse::<u64>().is_ok()) {
            Some(id) => objects.partition_point(|o| o.id < id),
            None => return bad("invalid paging cursor 'after'"),
        },
    };
    let props = requested(&pairs);
    let end = (start + limit).min(objects.len());
    let results: Vec<Value> = objects[start..end]
        .iter()
        .map(|o| o.to_json(&props, modified))
        .collect();
    let mut body = json!({"results": results});
    if let Some(next) = objects.get(end) {
        let after = encode_cursor(&next.id);
        let link = format!(
            "{}/hubspot/crm/v3/objects/{ty}?limit={limit}&after={after}",
            st.base
        );
        body["paging"] = json!({"next": {"after": after, "link": link}});
    }
    json_response(StatusCode::OK, body)
}

pub(super) async fn search(
    State(st): State<Arc<SimState>>,
    Path(ty): Path<String>,
    body: Bytes,
) -> Response {
    let Some((objects, modified, _)) = st.hubspot.objects.of(&ty) else {
        return unknown_type(&st, &ty);
    };
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
    let mut hits: Vec<&HubObject> = Vec::new();
    for o in objects {
        let prop = |name: &str| o.prop(name);
        let mut pass = req.filter_groups.is_empty();
        for g in &req.filter_groups {
            let mut all = true;
            for f in &g.filters {
                match matches_props(&prop, f) {
                    Ok(m) => all &= m,
                    Err(e) => return bad(&e),
                }
            }
            pass |= all;
        }
        if pass {
            hits.push(o);
        }
    }
    if let Some(sort) = req.sorts.first() {
        let (name, desc) = sort.parts();
        hits.sort_by(|x, y| {
            let o = key_of_props(&|n| x.prop(n), &name)
                .partial_cmp(&key_of_props(&|n| y.prop(n), &name))
                .unwrap_or(std::cmp::Ordering::Equal);
            let o = if desc { o.reverse() } else { o };
            o.then_with(|| x.id.cmp(&y.id))
        });
    }
    let end = (offset + limit).min(hits.len());
    let results: Vec<Value> = hits
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .map(|o| o.to_json(&req.properties, modified))
        .collect();
    let mut out = json!({"total": hits.len(), "results": results});
    if end < hits.len() {
        out["paging"] = json!({"next": {"after": end.to_string()}});
    }
    json_response(StatusCode::OK, out)
}

pub(super) async fn associations(
    State(st): State<Arc<SimState>>,
    Path((from, to)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some((objects, _, type_id)) = st.hubspot.objects.of(&from) else {
        return unknown_type(&st, &from);
    };
    if to != "companies" {
        return unknown_type(&st, &to);
    }
    let bad = |m: &str| error(&st, StatusCode::BAD_REQUEST, "VALIDATION_ERROR", m);
    let inputs: Vec<String> = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("inputs").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|i| match i.get("id") {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            None => return bad("inputs is required"),
        },
        Err(e) => return bad(&format!("invalid request body: {e}")),
    };
    if inputs.len() > BATCH_LIMIT {
        return bad(&format!("at most {BATCH_LIMIT} inputs per batch"));
    }
    let started = iso_ms(st.world.now);
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for id in inputs {
        let found = objects
            .binary_search_by(|o| o.id.as_str().cmp(&id))
            .ok()
            .and_then(|i| objects.get(i));
        match found.and_then(|o| o.company.parse::<u64>().ok()) {
            Some(company) => results.push(json!({
                "from": {"id": id},
                "to": [{
                    "toObjectId": company,
                    "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": type_id, "label": null}],
                }],
            })),
            None => errors.push(json!({
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
                "message": format!("No companies are associated with {from} {id}."),
                "context": {"fromObjectId": [id]},
            })),
        }
    }
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let mut out = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": started,
    });
    if !errors.is_empty() {
        out["numErrors"] = json!(errors.len());
        out["errors"] = Value::Array(errors);
    }
    json_response(status, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, start_sim, strs, Auth, Reply};
    use crate::sim::{SimRateLimits, Vendor};

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
    async fn every_object_type_lists_once_in_id_order_and_searches_by_its_modified_date() {
        let sim = start_sim(40, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Hubspot);
        for (ty, _, modified, _) in TYPES {
            let mut url = format!("{base}/crm/v3/objects/{ty}?limit=25");
            let mut seen = Vec::new();
            loop {
                let r = hs("GET", &url, None).await;
                assert_eq!(r.status, 200, "{ty}: {}", r.body);
                for o in r.body["results"].as_array().expect("results") {
                    assert!(o["properties"][modified].is_string(), "{ty}: {o}");
                    assert!(o["updatedAt"].is_string());
                }
                seen.extend(strs(&r.body["results"], "id"));
                match r.body["paging"]["next"]["link"].as_str() {
                    Some(link) => url = link.to_string(),
                    None => break,
                }
            }
            assert!(seen.len() > 40, "{ty}: {} objects", seen.len());
            let mut sorted = seen.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(seen, sorted, "{ty} lists each id once, in order");

            // Search: modified in the last 10 days, oldest first.
            let since = (sim.world().now - Duration::days(10)).timestamp_millis();
            let body = json!({
                "filterGroups": [{"filters": [{"propertyName": modified, "operator": "GTE", "value": since.to_string()}]}],
                "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
                "properties": [modified],
                "limit": 200,
            });
            let r = hs(
                "POST",
                &format!("{base}/crm/v3/objects/{ty}/search"),
                Some(&body),
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.body);
            let stamps: Vec<String> = r.body["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|o| {
                    o["properties"][modified]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            assert!(
                !stamps.is_empty() && stamps.len() < seen.len(),
                "{ty}: {}",
                stamps.len()
            );
            assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{ty} sorted");
        }
        let r = hs("GET", &format!("{base}/crm/v3/objects/widgets"), None).await;
        assert_eq!(r.status, 400);
        assert!(r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("widgets"));
    }

    #[tokio::test]
    async fn associations_name_each_objects_company_and_report_unknown_ids_as_207() {
        let sim = start_sim(20, SimRateLimits::unlimited()).await;
        let base = sim.base_url(Vendor::Hubspot);
        let r = hs("GET", &format!("{base}/crm/v3/objects/deals?limit=5"), None).await;
        let mut ids = strs(&r.body["results"], "id");
        let url = format!("{base}/crm/v4/associations/deals/companies/batch/read");
        let inputs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
        let r = hs("POST", &url, Some(&json!({ "inputs": inputs }))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let companies: Vec<String> = sim
            .world()
            .accounts
            .iter()
            .map(|a| a.hubspot_id.clone())
            .collect();
        for res in r.body["results"].as_array().expect("results") {
            let to = res["to"][0]["toObjectId"]
                .as_u64()
                .expect("numeric toObjectId");
            assert!(companies.contains(&to.to_string()));
            assert_eq!(res["to"][0]["associationTypes"][0]["typeId"], 5);
        }
        ids.push("2999999999".into());
        let inputs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
        let r = hs("POST", &url, Some(&json!({ "inputs": inputs }))).await;
        assert_eq!(r.status, 207);
        assert_eq!(r.body["numErrors"], 1);
        assert_eq!(r.body["results"].as_array().map(Vec::len), Some(5));
    }
}
