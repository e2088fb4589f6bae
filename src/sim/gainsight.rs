//! Simulated Gainsight CS (NXT), under `/gainsight`: the Company API (`PUT /v1/data/objects/Company?keys=`,
//! `POST /v1/data/objects/query/Company`) and the Cockpit CTA API (`POST /v2/cockpit/cta/`,
//! `PUT /v2/cockpit/cta/`, `POST /v2/cockpit/cta/list`), the `accessKey` header ([`ACCESS_KEY`]), a
//! per-minute budget answered with 429 and `Retry-After`, the envelope `{"result","errorCode","errorDesc",
//! "requestId","data"}` on every answer, and the CS-side state behind `/_sim/state/gainsight`. Writes go
//! to the shared `/_sim/received` log as `/gainsight/...`. One Company per simulated account, its CRM id in
//! [`MATCH_FIELD`].
//!
//! Like Gainsight, an update validates every record before writing any: one bad record refuses the whole
//! call with 400, a `GSOBJ_` code and the column and value in `errorDesc`. The Company schema is fixed
//! here: [`NUMBER_FIELDS`] and [`TEXT_FIELDS`] are the custom fields "created in Data Management"; any
//! other field is `GSOBJ_1002`, a non-number in a number field `GSOBJ_1008`. Ours, not Gainsight's
//! (unverified): an update whose key matches no company is refused (`GSOBJ_1010`), the 401 and 429 codes,
//! the CTA request fields (`TypeName`, `StatusName`, …, `IsClosed` on reads), and that a CTA create does
//! not refuse a duplicate key.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::sim::sink_log::{record, MinuteBudget};
use crate::sim::world::World;
use crate::sim::{ceil_secs, iso_ms, json_response, lock, query_pairs, SimState};

/// The access key the simulated tenant accepts.
pub const ACCESS_KEY: &str = "gainsight-sim";
/// The Company field holding the CRM (HubSpot) id.
pub const MATCH_FIELD: &str = "HubSpot_Id__gc";
/// Custom Number fields on Company.
pub const NUMBER_FIELDS: &[&str] = &[
    "Healthsync_Score__gc",
    "Healthsync_Coverage__gc",
    "Healthsync_Usage__gc",
    "Healthsync_Engagement__gc",
    "Healthsync_Financial__gc",
];
/// Custom String fields on Company.
pub const TEXT_FIELDS: &[&str] = &["Healthsync_Band__gc", "Healthsync_Top_Risk__gc", "Name"];
const MAX_RECORDS: usize = 50;
const CTA_TYPES: &[&str] = &["Risk", "Expansion", "Lifecycle", "Activity", "Objective"];
const CLOSED: &[&str] = &["Closed Success", "Closed Lost", "Closed Won"];

pub(crate) struct GainsightState {
    pub(crate) budget: MinuteBudget,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    companies: Vec<Map<String, Value>>,
    ctas: Vec<Map<String, Value>>,
    seq: u64,
}

impl Store {
    fn gsid(&mut self) -> String {
        self.seq += 1;
        format!("1P02{:016X}", self.seq)
    }
}

impl GainsightState {
    pub(crate) fn new(w: &World, per_min: u32) -> GainsightState {
        let mut store = Store::default();
        for a in &w.accounts {
            let gsid = store.gsid();
            let mut c = Map::new();
            c.insert("Gsid".into(), Value::String(gsid));
            c.insert("Name".into(), Value::String(a.name.clone()));
            c.insert(MATCH_FIELD.into(), Value::String(a.hubspot_id.clone()));
            store.companies.push(c);
        }
        GainsightState {
            budget: MinuteBudget::new(per_min),
            store: Mutex::new(store),
        }
    }

    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        json!({"companies": s.companies, "ctas": s.ctas})
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route(
            "/v1/data/objects/Company",
            axum::routing::put(update_companies),
        )
        .route("/v1/data/objects/query/Company", post(query_companies))
        .route("/v2/cockpit/cta/", post(create_cta).put(update_cta))
        .route("/v2/cockpit/cta/list", post(list_ctas))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

pub(crate) async fn sim_state(State(st): State<Arc<SimState>>) -> Response {
    json_response(StatusCode::OK, st.gainsight.snapshot())
}

fn envelope(
    st: &SimState,
    status: StatusCode,
    code: Option<&str>,
    desc: Option<&str>,
    data: Value,
) -> Response {
    json_response(
        status,
        json!({"result": code.is_none(), "errorCode": code, "errorDesc": desc,
               "requestId": st.next_uuid(), "data": data}),
    )
}

fn refuse(st: &SimState, status: StatusCode, code: &str, desc: &str) -> Response {
    envelope(st, status, Some(code), Some(desc), Value::Null)
}

fn ok(st: &SimState, data: Value) -> Response {
    envelope(st, StatusCode::OK, None, None, data)
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let key = req.headers().get("accesskey").and_then(|v| v.to_str().ok());
    if key != Some(ACCESS_KEY) {
        return refuse(
            &st,
            StatusCode::UNAUTHORIZED,
            "GS_401",
            "Invalid or missing access key",
        );
    }
    if let Err((_, wait)) = st.gainsight.budget.take() {
        let mut r = refuse(
            &st,
            StatusCode::TOO_MANY_REQUESTS,
            "GS_429",
            "API rate limit exceeded",
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(ceil_secs(wait).max(1)));
        return r;
    }
    match record(&st, "/gainsight", req).await {
        Ok(req) => next.run(req).await,
        Err(r) => r,
    }
}

fn parse_object(st: &SimState, body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(refuse(
            st,
            StatusCode::BAD_REQUEST,
            "GS_400",
            "Malformed JSON body",
        )),
    }
}

/// Why a record cannot be written: `(code, description)`.
fn check_field(name: &str, v: &Value) -> Result<(), (&'static str, String)> {
    if NUMBER_FIELDS.contains(&name) {
        if v.is_number() || v.is_null() {
            return Ok(());
        }
        return Err((
            "GSOBJ_1008",
            format!("Failed to parse value as number. ({name} = {v})"),
        ));
    }
    if TEXT_FIELDS.contains(&name) || name == MATCH_FIELD {
        if v.is_string() || v.is_null() {
            return Ok(());
        }
        return Err((
            "GSOBJ_1002",
            format!("Invalid field, please re-check data mapping ({name} = {v})"),
        ));
    }
    Err((
        "GSOBJ_1002",
        format!("Invalid field, please re-check data mapping ({name})"),
    ))
}

async fn update_companies(State(st): State<Arc<SimState>>, uri: Uri, body: Bytes) -> Response {
    let keys = query_pairs(&uri)
        .ok()
        .and_then(|p| p.into_iter().find(|(k, _)| k == "keys").map(|(_, v)| v));
    let Some(key) = keys.filter(|k| !k.is_empty() && !k.contains(',')) else {
        return refuse(
            &st,
            StatusCode::BAD_REQUEST,
            "GS_400",
            "keys is required (this simulator takes one key)",
        );
    };
    let obj = match parse_object(&st, &body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(Value::Array(records)) = obj.get("records") else {
        return refuse(
            &st,
            StatusCode::BAD_REQUEST,
            "GS_400",
            "records must be an array",
        );
    };
    if records.len() > MAX_RECORDS {
        return refuse(
            &st,
            StatusCode::BAD_REQUEST,
            "GSOBJ_1011",
            "Maximum 50 records allowed per call",
        );
    }
    let mut s = lock(&st.gainsight.store);
    // Validate every record first: one bad record refuses the call.
    let mut targets = Vec::with_capacity(records.len());
    for r in records {
        let Value::Object(r) = r else {
            return refuse(
                &st,
                StatusCode::BAD_REQUEST,
                "GS_400",
                "each record must be an object",
            );
        };
        for (k, v) in r {
            if let Err((code, desc)) = check_field(k, v) {
                return refuse(&st, StatusCode::BAD_REQUEST, code, &desc);
            }
        }
        let value = r.get(&key).cloned().unwrap_or(Value::Null);
        let Some(i) = s.companies.iter().position(|c| c.get(&key) == Some(&value)) else {
            let desc = format!("No record found for the given keys ({key} = {value})");
            return refuse(&st, StatusCode::BAD_REQUEST, "GSOBJ_1010", &desc);
        };
        targets.push((i, r.clone()));
    }
    let mut updated = Vec::new();
    for (i, r) in targets {
        let c = &mut s.companies[i];
        for (k, v) in r {
            c.insert(k, v);
        }
        updated.push(json!({"Gsid": c["Gsid"]}));
    }
    ok(&st, json!({"count": updated.len(), "records": updated}))
}

/// `(field, value)` of the first `EQ` condition of a query body.
fn condition(body: &Map<String, Value>) -> Option<(String, Value)> {
    let c = body.get("where")?.get("conditions")?.as_array()?.first()?;
    let name = c.get("name")?.as_str()?.to_string();
    let value = c.get("value")?.as_array()?.first()?.clone();
    Some((name, value))
}

fn select(body: &Map<String, Value>, rec: &Map<String, Value>) -> Value {
    let fields: Vec<&str> = body
        .get("select")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut out = Map::new();
    for f in fields.into_iter().chain(["Gsid"]) {
        out.insert(f.to_string(), rec.get(f).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

fn query(st: &SimState, body: &Bytes, ctas: bool) -> Response {
    let obj = match parse_object(st, body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let cond = condition(&obj);
    let s = lock(&st.gainsight.store);
    let list = if ctas { &s.ctas } else { &s.companies };
    let records: Vec<Value> = list
        .iter()
        .filter(|r| cond.as_ref().is_none_or(|(f, v)| r.get(f) == Some(v)))
        .map(|r| select(&obj, r))
        .collect();
    ok(st, json!({"count": records.len(), "records": records}))
}

async fn query_companies(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    query(&st, &body, false)
}

async fn list_ctas(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    query(&st, &body, true)
}

fn requests(st: &SimState, body: &Bytes) -> Result<Vec<Map<String, Value>>, Response> {
    let obj = parse_object(st, body)?;
    let list = obj
        .get("requests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let reqs: Vec<Map<String, Value>> = list
        .into_iter()
        .filter_map(|r| match r {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect();
    if reqs.is_empty() {
        return Err(refuse(
            st,
            StatusCode::BAD_REQUEST,
            "GS_400",
            "requests must be a non-empty array of CTAs",
        ));
    }
    Ok(reqs)
}

async fn create_cta(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let reqs = match requests(&st, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = iso_ms(st.clock());
    let mut s = lock(&st.gainsight.store);
    let mut created = Vec::new();
    for mut r in reqs {
        let company = r
            .get("CompanyId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !s.companies.iter().any(|c| c["Gsid"] == company) {
            return refuse(
                &st,
                StatusCode::BAD_REQUEST,
                "CTA_1002",
                "CompanyId is not a valid Company Gsid",
            );
        }
        let ty = r
            .get("TypeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !CTA_TYPES.contains(&ty) || !r.get("Name").is_some_and(Value::is_string) {
            return refuse(
                &st,
                StatusCode::BAD_REQUEST,
                "CTA_1001",
                "Name and a valid TypeName are required",
            );
        }
        let gsid = s.gsid();
        r.insert("Gsid".into(), Value::String(gsid.clone()));
        r.insert("IsClosed".into(), Value::Bool(false));
        r.insert("CreatedDate".into(), Value::String(now.clone()));
        s.ctas.push(r);
        created.push(json!({"Gsid": gsid}));
    }
    ok(&st, json!({"count": created.len(), "records": created}))
}

async fn update_cta(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let reqs = match requests(&st, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let now = iso_ms(st.clock());
    let mut s = lock(&st.gainsight.store);
    let mut updated = Vec::new();
    for r in reqs {
        let gsid = r.get("Gsid").cloned().unwrap_or(Value::Null);
        let Some(cta) = s.ctas.iter_mut().find(|c| c.get("Gsid") == Some(&gsid)) else {
            return refuse(
                &st,
                StatusCode::BAD_REQUEST,
                "CTA_1004",
                "No CTA with this Gsid",
            );
        };
        for (k, v) in r {
            cta.insert(k, v);
        }
        let status = cta
            .get("StatusName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if CLOSED.contains(&status) {
            cta.insert("IsClosed".into(), Value::Bool(true));
            cta.insert("ClosedDate".into(), Value::String(now.clone()));
        }
        updated.push(json!({"Gsid": gsid}));
    }
    ok(&st, json!({"count": updated.len(), "records": updated}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{start_sim, Reply};
    use crate::sim::{SimHandle, SimRateLimits, Vendor};

    async fn gs(sim: &SimHandle, method: &str, path: &str, key: &str, body: Value) -> Reply {
        let url = format!("{}{path}", sim.base_url(Vendor::Gainsight));
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = reqwest::Client::new()
            .request(m, url)
            .header("accessKey", key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let body = resp.json().await.unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    #[tokio::test]
    async fn one_bad_record_refuses_the_call_and_throttling_answers_429() {
        let sim = start_sim(2, SimRateLimits::unlimited()).await;
        let ext = sim.world().accounts[0].hubspot_id.clone();
        let path = format!("/v1/data/objects/Company?keys={MATCH_FIELD}");
        let good = json!({MATCH_FIELD: ext, "Healthsync_Score__gc": 40});
        let bad = json!({MATCH_FIELD: ext, "Healthsync_Score__gc": "high"});
        let r = gs(
            &sim,
            "PUT",
            &path,
            ACCESS_KEY,
            json!({"records": [good, bad]}),
        )
        .await;
        assert_eq!((r.status, r.body["result"].clone()), (400, json!(false)));
        assert_eq!(r.body["errorCode"], "GSOBJ_1008");
        assert!(r.body["errorDesc"]
            .as_str()
            .unwrap()
            .contains("Healthsync_Score__gc"));
        let state = sim.state.gainsight.snapshot();
        assert!(
            state["companies"][0].get("Healthsync_Score__gc").is_none(),
            "nothing written"
        );
        let r = gs(&sim, "PUT", &path, ACCESS_KEY, json!({"records": [good]})).await;
        assert_eq!((r.status, r.body["data"]["count"].clone()), (200, json!(1)));
        let r = gs(&sim, "PUT", &path, "wrong", json!({"records": [good]})).await;
        assert_eq!(r.status, 401);
        assert_eq!(sim.received().len(), 2);
        assert!(sim.received()[0]
            .path
            .starts_with("/gainsight/v1/data/objects/Company?keys="));

        sim.state.gainsight.budget.set(1);
        let q = json!({"select": ["Gsid"], "where": {"conditions": [{"name": MATCH_FIELD, "alias": "A", "value": [ext], "operator": "EQ"}], "expression": "A"}});
        let r = gs(
            &sim,
            "POST",
            "/v1/data/objects/query/Company",
            ACCESS_KEY,
            q.clone(),
        )
        .await;
        assert_eq!(r.body["data"]["records"].as_array().map(Vec::len), Some(1));
        let r = gs(
            &sim,
            "POST",
            "/v1/data/objects/query/Company",
            ACCESS_KEY,
            q,
        )
        .await;
        assert_eq!(
            (r.status, r.body["errorCode"].clone()),
            (429, json!("GS_429"))
        );
        assert!(r.header("retry-after").parse::<u64>().is_ok());
    }
}
