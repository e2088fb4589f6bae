//! Simulated Vitally REST API (CS platform; shapes from `specs/vitally-unofficial/*.yml`).
//!
//! Owns, under `/vitally/resources`: accounts (`GET /accounts`, `GET|PUT /accounts/{id}`),
//! projects (`GET|POST /projects`) and tasks (`GET|POST /tasks`), Basic auth with the API key
//! as username, the 1000/min token bucket with `RateLimit-*` headers, the mutable CS-side
//! state, and the log of write requests behind `/_sim/received`. It does not own the
//! population (see `world`); it is pre-seeded with one account per simulated company.
//!
//! Assumptions (not in the unofficial spec, or not verifiable): `{id}` in `/accounts/{id}` may
//! be the Vitally id or the account's `externalId` (the HubSpot company id); trait merge is
//! shallow (top-level keys, `null` deletes); creates answer 200 as the spec documents for
//! tasks (projects have no spec; 200 for consistency); a duplicate `externalId` on a project
//! or task gives 409; an unknown `accountId`/`projectId` gives 404; the password is ignored;
//! error texts are ours. Writes are logged once they pass auth and the rate limit.

// Helpers return a ready vendor-shaped error response; boxing it would buy nothing here.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::sim::world::World;
use crate::sim::{
    basic, ceil_secs, decode_cursor, encode_cursor, iso_ms, json_response, lock, query_pairs,
    ReceivedRequest, SimState, Vendor,
};

/// Largest request body the sim buffers for the write log.
const MAX_BODY: usize = 8 * 1024 * 1024;

pub(crate) struct VitallyState {
    bucket: Mutex<TokenBucket>,
    store: Mutex<Store>,
}

/// Vitally meters with a token bucket: `limit` units, refilled evenly over a minute.
struct TokenBucket {
    limit: u32,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn per_sec(&self) -> f64 {
        f64::from(self.limit) / 60.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec()).min(f64::from(self.limit));
        self.last = now;
    }

    /// `(allowed, remaining, seconds until one unit refills)`.
    fn take(&mut self, now: Instant) -> (bool, u32, u64) {
        self.refill(now);
        let allowed = self.tokens >= 1.0;
        if allowed {
            self.tokens -= 1.0;
        }
        let reset = if self.tokens >= f64::from(self.limit) || self.per_sec() <= 0.0 {
            0
        } else {
            let need = 1.0 - self.tokens.fract();
            ceil_secs(Duration::from_secs_f64(
                (need / self.per_sec()).min(86_400.0),
            ))
        };
        (allowed, self.tokens.floor() as u32, reset)
    }
}

struct Account {
    id: String,
    external_id: String,
    name: String,
    traits: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    mrr: f64,
}

#[derive(Default)]
struct Store {
    accounts: Vec<Account>,
    by_key: HashMap<String, usize>,
    projects: Vec<Value>,
    tasks: Vec<Value>,
    notes: Vec<Value>,
}

impl Store {
    /// Resolves a path or body account reference: Vitally id first, then externalId.
    fn find(&self, key: &str) -> Option<usize> {
        self.by_key.get(key).copied()
    }
}

fn account_json(a: &Account) -> Value {
    json!({
        "id": a.id, "externalId": a.external_id, "name": a.name, "traits": a.traits,
        "createdAt": iso_ms(a.created_at), "updatedAt": iso_ms(a.updated_at),
        "organizationId": null, "accountOwnerId": null, "mrr": a.mrr, "nextRenewalDate": null,
        "churnedAt": null, "healthScore": null, "csmId": null, "accountExecutiveId": null,
        "usersCount": 0, "keyRoles": [], "segments": [],
    })
}

impl VitallyState {
    pub(crate) fn new(w: &World, per_min: u32) -> VitallyState {
        let mut store = Store::default();
        for a in &w.accounts {
            let i = store.accounts.len();
            store.by_key.insert(a.vitally_id.clone(), i);
            store.by_key.entry(a.hubspot_id.clone()).or_insert(i);
            store.accounts.push(Account {
                id: a.vitally_id.clone(),
                external_id: a.hubspot_id.clone(),
                name: a.name.clone(),
                traits: Map::new(),
                created_at: a.created_at,
                updated_at: a.created_at,
                mrr: a.mrr_cents as f64 / 100.0,
            });
        }
        VitallyState {
            bucket: Mutex::new(TokenBucket {
                limit: per_min,
                tokens: f64::from(per_min),
                last: Instant::now(),
            }),
            store: Mutex::new(store),
        }
    }

    /// `/_sim/state`: every account's current traits plus created projects, tasks and notes.
    pub(crate) fn snapshot(&self) -> Value {
        let s = lock(&self.store);
        let accounts: Vec<Value> = s
            .accounts
            .iter()
            .map(|a| json!({"id": a.id, "externalId": a.external_id, "name": a.name, "traits": a.traits, "updatedAt": iso_ms(a.updated_at)}))
            .collect();
        json!({"accounts": accounts, "projects": s.projects, "tasks": s.tasks, "notes": s.notes})
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    Router::new()
        .route("/resources/accounts", get(list_accounts))
        .route(
            "/resources/accounts/{id}",
            get(get_account).put(put_account),
        )
        .route(
            "/resources/projects",
            get(list_projects).post(create_project),
        )
        .route("/resources/tasks", get(list_tasks).post(create_task))
        .route("/resources/notes", get(list_notes).post(create_note))
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate))
}

fn err(status: StatusCode, msg: &str) -> Response {
    json_response(status, json!({ "error": msg }))
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    if basic(req.headers()).map(|(user, _)| user).as_deref() != Some(Vendor::Vitally.credential()) {
        return err(
            StatusCode::UNAUTHORIZED,
            "unauthorized: invalid or missing api key",
        );
    }
    let (allowed, remaining, reset, limit) = {
        let mut b = lock(&st.vitally.bucket);
        let (allowed, remaining, reset) = b.take(Instant::now());
        (allowed, remaining, reset, b.limit)
    };
    let mut resp = if !allowed {
        err(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded")
    } else if req.method() == Method::GET || req.method() == Method::HEAD {
        next.run(req).await
    } else {
        let (parts, body) = req.into_parts();
        let bytes = match to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(_) => return err(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
        };
        let logged = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        lock(&st.received).push(ReceivedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            body: logged,
        });
        next.run(Request::from_parts(parts, Body::from(bytes)))
            .await
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("{limit}, {limit};window=60")) {
        h.insert("ratelimit-limit", v);
    }
    h.insert("ratelimit-remaining", HeaderValue::from(remaining));
    h.insert("ratelimit-reset", HeaderValue::from(reset));
    resp
}

/// Paging parameters shared by the list endpoints; `limit` is 1..=100, default 100.
fn paging(uri: &Uri) -> Result<(Vec<(String, String)>, usize), Response> {
    let pairs = query_pairs(uri).map_err(|e| err(StatusCode::BAD_REQUEST, &e))?;
    let limit = match pairs
        .iter()
        .find(|(k, _)| k == "limit")
        .map(|(_, v)| v.parse::<usize>())
    {
        None => 100,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return Err(err(
                StatusCode::BAD_REQUEST,
                "limit must be an integer between 1 and 100",
            ))
        }
    };
    Ok((pairs, limit))
}

fn param<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
    pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

async fn list_accounts(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    let (pairs, limit) = match paging(&uri) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let by_created = match param(&pairs, "sortBy") {
        None | Some("updatedAt") => false,
        Some("createdAt") => true,
        Some(_) => {
            return err(
                StatusCode::BAD_REQUEST,
                "sortBy must be createdAt or updatedAt",
            )
        }
    };
    // No simulated account has churned yet, so `churned` is empty and the rest list all.
    let status = param(&pairs, "status").unwrap_or("active");
    if !["active", "churned", "activeOrChurned"].contains(&status) {
        return err(
            StatusCode::BAD_REQUEST,
            "status must be active, churned or activeOrChurned",
        );
    }
    let s = lock(&st.vitally.store);
    let key = |a: &Account| {
        let t = if by_created {
            a.created_at
        } else {
            a.updated_at
        };
        (t.timestamp_millis(), a.id.clone())
    };
    // Newest first; the cursor is the (time, id) of the last account served.
    let mut order: Vec<&Account> = if status == "churned" {
        Vec::new()
    } else {
        s.accounts.iter().collect()
    };
    order.sort_by_key(|a| std::cmp::Reverse(key(a)));
    let mut start = 0;
    if let Some(from) = param(&pairs, "from") {
        let parsed = decode_cursor(from).and_then(|raw| {
            let (ms, id) = raw.split_once('|')?;
            Some((ms.parse::<i64>().ok()?, id.to_string()))
        });
        let Some(cur) = parsed else {
            return err(StatusCode::BAD_REQUEST, "invalid from cursor");
        };
        start = order.partition_point(|a| key(a) >= cur);
    }
    let end = (start + limit).min(order.len());
    let page = order.get(start..end).unwrap_or_default();
    let next = match page.last() {
        Some(a) if end < order.len() => {
            let (ms, id) = key(a);
            Value::String(encode_cursor(&format!("{ms}|{id}")))
        }
        _ => Value::Null,
    };
    let results: Vec<Value> = page.iter().map(|a| account_json(a)).collect();
    json_response(StatusCode::OK, json!({"results": results, "next": next}))
}

async fn get_account(State(st): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let s = lock(&st.vitally.store);
    match s.find(&id) {
        Some(i) => json_response(StatusCode::OK, account_json(&s.accounts[i])),
        None => err(StatusCode::NOT_FOUND, &format!("account {id} not found")),
    }
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(err(
            StatusCode::BAD_REQUEST,
            "request body must be a json object",
        )),
        Err(e) => Err(err(
            StatusCode::BAD_REQUEST,
            &format!("invalid json body: {e}"),
        )),
    }
}

async fn put_account(
    State(st): State<Arc<SimState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body = match parse_object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let traits = match body.get("traits") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(t)) => t.clone(),
        Some(_) => return err(StatusCode::BAD_REQUEST, "traits must be an object"),
    };
    let name = match body.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return err(StatusCode::BAD_REQUEST, "name must be a string"),
    };
    let now = st.clock();
    let mut s = lock(&st.vitally.store);
    let Some(i) = s.find(&id) else {
        return err(StatusCode::NOT_FOUND, &format!("account {id} not found"));
    };
    let a = &mut s.accounts[i];
    for (k, v) in traits {
        if v.is_null() {
            a.traits.remove(&k);
        } else {
            a.traits.insert(k, v);
        }
    }
    if let Some(n) = name {
        a.name = n;
    }
    a.updated_at = now;
    json_response(StatusCode::OK, account_json(a))
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str)
}

/// Which collection a create/list targets.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Project,
    Task,
    Note,
}

fn collection(s: &mut Store, kind: Kind) -> &mut Vec<Value> {
    match kind {
        Kind::Project => &mut s.projects,
        Kind::Task => &mut s.tasks,
        Kind::Note => &mut s.notes,
    }
}

fn create(st: &SimState, kind: Kind, body: &Bytes) -> Response {
    let b = match parse_object(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    // Notes carry `note` (and an optional subject); projects and tasks carry `name`.
    let required = if kind == Kind::Note { "note" } else { "name" };
    let (Some(account_ref), Some(name)) = (str_field(&b, "accountId"), str_field(&b, required))
    else {
        return err(
            StatusCode::BAD_REQUEST,
            &format!("accountId and {required} are required strings"),
        );
    };
    let now = iso_ms(st.clock());
    let id = st.next_uuid();
    let mut s = lock(&st.vitally.store);
    let Some(ai) = s.find(account_ref) else {
        return err(
            StatusCode::NOT_FOUND,
            &format!("account {account_ref} not found"),
        );
    };
    let account_id = s.accounts[ai].id.clone();
    let external = str_field(&b, "externalId");
    if let Some(x) = external {
        if collection(&mut s, kind)
            .iter()
            .any(|o| o["externalId"] == x)
        {
            return err(
                StatusCode::CONFLICT,
                &format!("an object with externalId {x} already exists"),
            );
        }
    }
    let mut obj = json!({
        "id": id, "createdAt": now, "updatedAt": now, "externalId": external, "accountId": account_id,
        "organizationId": null, "name": name, "description": b.get("description").cloned().unwrap_or(Value::Null),
        "archivedAt": null, "traits": b.get("traits").cloned().unwrap_or_else(|| json!({})),
    });
    match kind {
        Kind::Note => {
            obj["note"] = Value::String(name.to_string());
            obj["name"] = b.get("subject").cloned().unwrap_or(Value::Null);
            obj["noteDate"] = b.get("noteDate").cloned().unwrap_or(Value::Null);
        }
        Kind::Project => obj["templateId"] = b.get("templateId").cloned().unwrap_or(Value::Null),
        Kind::Task => {
            let projects = match str_field(&b, "projectId") {
                None => json!([]),
                Some(pid) => match s.projects.iter().find(|p| p["id"] == pid) {
                    Some(p) => json!([{"id": p["id"], "name": p["name"]}]),
                    None => return err(StatusCode::NOT_FOUND, &format!("project {pid} not found")),
                },
            };
            obj["projects"] = projects;
            for k in [
                "dueDate",
                "assignedToId",
                "completedAt",
                "completedById",
                "categoryId",
            ] {
                obj[k] = b.get(k).cloned().unwrap_or(Value::Null);
            }
            obj["tags"] = b.get("tags").cloned().unwrap_or_else(|| json!([]));
        }
    }
    collection(&mut s, kind).push(obj.clone());
    json_response(StatusCode::OK, obj)
}

/// Lists projects or tasks in creation order, filtered by `externalId`/`accountId`.
fn list(st: &SimState, kind: Kind, uri: &Uri) -> Response {
    let (pairs, limit) = match paging(uri) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let start = match param(&pairs, "from") {
        None => 0,
        Some(c) => match decode_cursor(c).and_then(|s| s.parse::<usize>().ok()) {
            Some(n) => n,
            None => return err(StatusCode::BAD_REQUEST, "invalid from cursor"),
        },
    };
    let mut s = lock(&st.vitally.store);
    let items = collection(&mut s, kind);
    let ext = param(&pairs, "externalId");
    let acct = param(&pairs, "accountId");
    let mut results = Vec::new();
    let mut next = Value::Null;
    for (i, o) in items.iter().enumerate().skip(start) {
        if ext.is_some_and(|x| o["externalId"] != x) || acct.is_some_and(|x| o["accountId"] != x) {
            continue;
        }
        if results.len() == limit {
            next = Value::String(encode_cursor(&i.to_string()));
            break;
        }
        results.push(o.clone());
    }
    json_response(StatusCode::OK, json!({"results": results, "next": next}))
}

async fn create_project(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    create(&st, Kind::Project, &body)
}

async fn create_task(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    create(&st, Kind::Task, &body)
}

async fn create_note(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    create(&st, Kind::Note, &body)
}

async fn list_notes(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    list(&st, Kind::Note, &uri)
}

async fn list_projects(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    list(&st, Kind::Project, &uri)
}

async fn list_tasks(State(st): State<Arc<SimState>>, uri: Uri) -> Response {
    list(&st, Kind::Task, &uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::{call, start_sim, strs, Auth, Reply};
    use crate::sim::{SimHandle, SimRateLimits, Vendor};

    /// Sends to `{vitally base}/resources{path}` with valid credentials; a `null` body sends none.
    async fn vt(sim: &SimHandle, method: &str, path: &str, body: Value) -> Reply {
        let url = format!("{}/resources{path}", sim.base_url(Vendor::Vitally));
        let auth = Auth::Basic(Vendor::Vitally.credential());
        call(method, &url, auth, Some(&body).filter(|b| !b.is_null())).await
    }

    async fn sim_get(sim: &SimHandle, path: &str) -> Value {
        let url = format!("http://{}{path}", sim.addr());
        call("GET", &url, Auth::None, None).await.body
    }

    #[tokio::test]
    async fn lists_every_account_once() {
        let sim = start_sim(23, SimRateLimits::unlimited()).await;
        // Move one account to the top of updatedAt order before walking.
        let bumped = sim.world().accounts[5].hubspot_id.clone();
        let traits = json!({"traits": {"x": 1}});
        let r = vt(&sim, "PUT", &format!("/accounts/{bumped}"), traits).await;
        assert_eq!(r.status, 200);
        let (mut seen, mut from) = (Vec::new(), String::new());
        loop {
            let r = vt(
                &sim,
                "GET",
                &format!("/accounts?limit=4{from}"),
                Value::Null,
            )
            .await;
            seen.extend(strs(&r.body["results"], "externalId"));
            match r.body["next"].as_str() {
                Some(n) => from = format!("&from={n}"),
                None => break,
            }
        }
        assert_eq!(seen[0], bumped, "updatedAt desc");
        seen.sort();
        let w = sim.world();
        let all: Vec<String> = w.accounts.iter().map(|a| a.hubspot_id.clone()).collect();
        assert_eq!(seen, all);
    }

    #[tokio::test]
    async fn traits_merge_conflicts_and_write_log() {
        let sim = start_sim(4, SimRateLimits::unlimited()).await;
        let a = sim.world().accounts[0].clone();
        let path = format!("/accounts/{}", a.vitally_id);
        let first = json!({"traits": {"healthScoreExt": 87, "riskFlag": "high", "keep": true}});
        vt(&sim, "PUT", &path, first).await;
        let second = json!({"traits": {"riskFlag": null, "healthScoreExt": 55}});
        let r = vt(&sim, "PUT", &path, second).await;
        let merged = json!({"healthScoreExt": 55, "keep": true});
        assert_eq!(r.body["traits"], merged);
        assert_eq!(r.body["externalId"], a.hubspot_id.as_str());
        let by_ext = vt(
            &sim,
            "GET",
            &format!("/accounts/{}", a.hubspot_id),
            Value::Null,
        )
        .await;
        assert_eq!(by_ext.body["id"], a.vitally_id.as_str());
        assert_eq!(by_ext.body["traits"], merged);

        let r = vt(&sim, "PUT", "/accounts/nope", json!({"traits": {}})).await;
        assert_eq!((r.status, r.body["error"].is_string()), (404, true));
        let url = format!("{}/resources{path}", sim.base_url(Vendor::Vitally));
        let r = call("GET", &url, Auth::Basic("wrong"), None).await;
        assert_eq!((r.status, r.body["error"].is_string()), (401, true));

        let project = json!({"accountId": a.vitally_id, "name": "Save plan", "description": "d",
                             "externalId": "hs-p-1", "templateId": "tpl-1"});
        let p = vt(&sim, "POST", "/projects", project.clone()).await;
        assert_eq!(p.status, 200);
        assert_eq!(vt(&sim, "POST", "/projects", project).await.status, 409);
        let task = json!({"accountId": a.hubspot_id, "name": "Call", "description": "d",
                          "dueDate": "2026-12-01", "externalId": "hs-t-1", "projectId": p.body["id"]});
        let t = vt(&sim, "POST", "/tasks", task.clone()).await;
        assert_eq!(t.status, 200);
        assert_eq!(t.body["accountId"], a.vitally_id.as_str());
        assert_eq!(t.body["projects"][0]["id"], p.body["id"]);
        assert_eq!(vt(&sim, "POST", "/tasks", task.clone()).await.status, 409);
        let found = vt(&sim, "GET", "/tasks?externalId=hs-t-1", Value::Null).await;
        assert_eq!(strs(&found.body["results"], "externalId"), ["hs-t-1"]);
        assert_eq!(found.body["next"], Value::Null);
        let none = vt(&sim, "GET", "/projects?externalId=zzz", Value::Null).await;
        assert_eq!(none.body["results"], json!([]));

        // Every write that passed auth is logged in order, rejected duplicates included.
        let log = sim.received();
        let summary: Vec<String> = log
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(summary.len(), 7);
        assert_eq!(summary[0], format!("PUT /resources{path}"));
        assert_eq!(summary[3], "POST /resources/projects");
        assert_eq!(log[5].body, task);
        let over_http = sim_get(&sim, "/_sim/received").await;
        let over_http: Vec<ReceivedRequest> = serde_json::from_value(over_http).expect("log");
        assert_eq!(over_http, log);
        let state = sim_get(&sim, "/_sim/state").await;
        assert_eq!(strs(&state["projects"], "externalId"), ["hs-p-1"]);
        assert_eq!(strs(&state["tasks"], "externalId"), ["hs-t-1"]);
        let accounts = state["accounts"].as_array().expect("accounts");
        let acct = accounts.iter().find(|x| x["id"] == a.vitally_id.as_str());
        assert_eq!(acct.map(|x| &x["traits"]), Some(&merged));
    }

    #[tokio::test]
    async fn throttles_with_ratelimit_headers() {
        let mut limits = SimRateLimits::unlimited();
        limits.set(Vendor::Vitally, 2);
        let sim = start_sim(2, limits).await;
        let ok = vt(&sim, "GET", "/accounts", Value::Null).await;
        assert_eq!(
            (ok.status, ok.header("ratelimit-limit")),
            (200, "2, 2;window=60")
        );
        vt(&sim, "GET", "/accounts", Value::Null).await;
        let r = vt(&sim, "GET", "/accounts", Value::Null).await;
        assert_eq!((r.status, r.header("ratelimit-remaining")), (429, "0"));
        let reset: u64 = r.header("ratelimit-reset").parse().expect("seconds");
        assert!((1..=30).contains(&reset));
        assert!(r.body["error"].is_string());
    }
}
