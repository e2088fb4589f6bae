//! Simulated Salesforce REST API (no official OpenAPI exists; shapes from Salesforce's REST guide:
//! the query and query-more resources, the OAuth 2.0 token endpoint and the API usage header).
//!
//! Owns, under the `/salesforce` prefix: `POST /services/oauth2/token` (client-credentials and
//! refresh-token grants, form-encoded; answers `access_token`, `instance_url`, `id`, `token_type`,
//! `issued_at`, `signature` and no `expires_in`; sessions last two simulated hours), `GET
//! /services/data/{version}/query?q=<SOQL>` and `GET /services/data/{version}/query/{locator}-{offset}`
//! (`totalSize`, `done`, `nextRecordsUrl`, `records[].attributes`; batch size from
//! `Sforce-Query-Options: batchSize=`, 200..2000, default 2000), `Sforce-Limit-Info: api-usage=N/M` on
//! every API response, 403 `REQUEST_LIMIT_EXCEEDED` once the daily allocation is spent, 401
//! `INVALID_SESSION_ID`, and error bodies as Salesforce's `[{message, errorCode}]`.
//!
//! Data: Account, Contact, Opportunity, Task, Event and Case rows generated per simulated account,
//! deterministically from the account (its ids seed the generator), so they join the HubSpot companies
//! through `HubSpot_Company_Id__c` and `Website`. Some rows share a `SystemModstamp` (bulk updates), so
//! ties at page boundaries happen. The SOQL subset understood: `SELECT <fields> FROM <object> [WHERE
//! SystemModstamp <op> <datetime>] [ORDER BY SystemModstamp [ASC][, Id [ASC]]] [LIMIT n]`; anything else is
//! a `MALFORMED_QUERY` (a deviation: the real API accepts far more). It does not own the accounts (`world`)
//! nor the write side (`salesforce_write.rs`, mounted behind the same gate).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Duration, Utc};

use data::{gen_account, OBJECTS};
use serde_json::{json, Map, Value};

use crate::sim::world::World;
use crate::sim::{bearer, json_response, lock, query_pairs, SimState};

/// The connected app's credentials the simulated org accepts.
pub const CLIENT_ID: &str = "3MVG9sim.salesforce.client";
pub const CLIENT_SECRET: &str = "sim-salesforce-secret";
/// Accepted by the refresh-token grant.
pub const REFRESH_TOKEN: &str = "5Aep861sim.refresh";
const SESSION_HOURS: i64 = 2;
const ORG_ID: &str = "00D5g00000SIMORG";

/// One row: its SystemModstamp, its Id and its fields.
type Row = (DateTime<Utc>, String, Map<String, Value>);

/// One sObject: its fields (canonical casing) and its rows.
struct Table {
    fields: &'static [&'static str],
    /// Sorted by (SystemModstamp, Id).
    rows: Vec<Row>,
}

pub(crate) struct SalesforceState {
    tables: BTreeMap<&'static str, Table>,
    sessions: Mutex<HashMap<String, DateTime<Utc>>>,
    locators: Mutex<HashMap<String, Locator>>,
    used: AtomicU64,
    daily_limit: u64,
    seq: AtomicU64,
    /// The write side (`salesforce_write.rs`): Account fields and Tasks written through the API.
    pub(crate) write: write::WriteState,
}

struct Locator {
    object: &'static str,
    fields: Vec<&'static str>,
    rows: Vec<usize>,
    batch: usize,
}

impl SalesforceState {
    pub(crate) fn new(w: &World, daily_limit: u32) -> SalesforceState {
        let mut rows = BTreeMap::new();
        for a in &w.accounts {
            gen_account(a, w.now, &mut rows);
        }
        let tables = OBJECTS
            .iter()
            .map(|(object, fields)| {
                let mut r = rows.remove(object).unwrap_or_default();
                r.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
                (*object, Table { fields, rows: r })
            })
            .collect();
        SalesforceState {
            tables,
            sessions: Mutex::new(HashMap::new()),
            locators: Mutex::new(HashMap::new()),
            used: AtomicU64::new(0),
            daily_limit: u64::from(daily_limit),
            seq: AtomicU64::new(1),
            write: Default::default(),
        }
    }

    #[cfg(test)]
    pub(crate) fn rows(&self, object: &str) -> usize {
        self.tables.get(object).map_or(0, |t| t.rows.len())
    }
}

pub(crate) fn router(state: &Arc<SimState>) -> Router<Arc<SimState>> {
    let api = Router::new()
        .route("/services/data/{version}/query", get(query))
        .route("/services/data/{version}/query/{locator}", get(query_more))
        .merge(write::routes())
        .layer(middleware::from_fn_with_state(Arc::clone(state), gate));
    Router::new()
        .route("/services/oauth2/token", post(token))
        .merge(api)
        .merge(write::introspection())
}

fn errors(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!([{"message": message, "errorCode": code}]))
}

async fn token(State(st): State<Arc<SimState>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    let pairs = format!("/?{text}")
        .parse::<Uri>()
        .ok()
        .and_then(|u| query_pairs(&u).ok())
        .unwrap_or_default();
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let oauth_error = |status: StatusCode, error: &str, description: &str| {
        json_response(
            status,
            json!({"error": error, "error_description": description}),
        )
    };
    match get("grant_type") {
        Some("client_credentials") => {}
        Some("refresh_token") if get("refresh_token") == Some(REFRESH_TOKEN) => {}
        Some("refresh_token") => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "expired access/refresh token",
            )
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant type not supported",
            )
        }
    }
    if get("client_id") != Some(CLIENT_ID) || get("client_secret") != Some(CLIENT_SECRET) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "invalid client credentials",
        );
    }
    let sf = &st.salesforce;
    let n = sf.seq.fetch_add(1, Ordering::Relaxed);
    let token = format!("{ORG_ID}!AQ{}", st.next_uuid().replace('-', "")) + &n.to_string();
    let now = st.clock();
    lock(&sf.sessions).insert(token.clone(), now + Duration::hours(SESSION_HOURS));
    json_response(
        StatusCode::OK,
        json!({
            "access_token": token,
            "signature": "c2ltLXNpZ25hdHVyZQ==",
            "scope": "api",
            "instance_url": format!("{}/salesforce", st.base),
            "id": format!("https://login.salesforce.com/id/{ORG_ID}/005SIMUSER00001"),
            "token_type": "Bearer",
            "issued_at": now.timestamp_millis().to_string(),
        }),
    )
}

async fn gate(State(st): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let sf = &st.salesforce;
    let valid = bearer(req.headers())
        .and_then(|t| lock(&sf.sessions).get(t).copied())
        .is_some_and(|until| st.clock() < until);
    if !valid {
        return errors(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        );
    }
    let used = sf.used.load(Ordering::Relaxed);
    let mut resp = if used >= sf.daily_limit {
        errors(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
    } else {
        sf.used.fetch_add(1, Ordering::Relaxed);
        next.run(req).await
    };
    let usage = format!(
        "api-usage={}/{}",
        sf.used.load(Ordering::Relaxed),
        sf.daily_limit
    );
    if let Ok(v) = HeaderValue::from_str(&usage) {
        resp.headers_mut().insert("sforce-limit-info", v);
    }
    resp
}

/// A parsed SOQL query of the supported subset.
struct Soql {
    object: &'static str,
    fields: Vec<&'static str>,
    filter: Option<(String, DateTime<Utc>)>,
    limit: Option<usize>,
}

fn malformed(msg: &str) -> (StatusCode, &'static str, String) {
    (StatusCode::BAD_REQUEST, "MALFORMED_QUERY", msg.to_string())
}

fn parse_soql(
    q: &str,
    tables: &BTreeMap<&'static str, Table>,
) -> Result<Soql, (StatusCode, &'static str, String)> {
    let q = q.trim();
    let upper = q.to_ascii_uppercase();
    if !upper.starts_with("SELECT ") {
        return Err(malformed("unexpected token: expected SELECT"));
    }
    let from = upper
        .find(" FROM ")
        .ok_or_else(|| malformed("unexpected token: expected FROM"))?;
    let rest = &q[from + 6..];
    let object_name = rest.split_whitespace().next().unwrap_or("");
    let (object, table) = tables
        .iter()
        .find(|(o, _)| o.eq_ignore_ascii_case(object_name))
        .ok_or_else(|| {
            (
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                format!("sObject type '{object_name}' is not supported."),
            )
        })?;
    let mut fields = Vec::new();
    for f in q[7..from].split(',').map(str::trim) {
        let canonical = table.fields.iter().find(|c| c.eq_ignore_ascii_case(f)).ok_or_else(|| {
            (StatusCode::BAD_REQUEST, "INVALID_FIELD", format!("No such column '{f}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names."))
        })?;
        fields.push(*canonical);
    }
    let tail = rest[object_name.len()..].trim();
    let tail_upper = tail.to_ascii_uppercase();
    let (mut where_part, mut order_part, mut limit_part) = ("", "", "");
    let order_at = tail_upper.find("ORDER BY");
    let limit_at = tail_upper.find("LIMIT ");
    let end_where = order_at.or(limit_at).unwrap_or(tail.len());
    if let Some(w) = tail_upper
        .strip_prefix("WHERE ")
        .map(|_| &tail[6..end_where])
    {
        where_part = w.trim();
    } else if end_where > 0 {
        return Err(malformed(&format!(
            "unexpected token: '{}'",
            tail.split_whitespace().next().unwrap_or("")
        )));
    }
    if let Some(o) = order_at {
        order_part = tail[o + 8..limit_at.unwrap_or(tail.len())].trim();
    }
    if let Some(l) = limit_at {
        limit_part = tail[l + 6..].trim();
    }
    let filter = if where_part.is_empty() {
        None
    } else {
        let parts: Vec<&str> = where_part.split_whitespace().collect();
        match parts.as_slice() {
            [field, op, lit]
                if field.eq_ignore_ascii_case("SystemModstamp")
                    && [">", ">=", "<", "<="].contains(op) =>
            {
                let at = DateTime::parse_from_rfc3339(lit)
                    .map_err(|_| (StatusCode::BAD_REQUEST, "INVALID_QUERY_FILTER_OPERATOR", format!("value of filter criterion for field 'SystemModstamp' must be of type dateTime and should not be enclosed in quotes: {lit}")))?;
                Some((op.to_string(), at.with_timezone(&Utc)))
            }
            _ => {
                return Err(malformed(
                    "the simulator supports only WHERE SystemModstamp <op> <datetime>",
                ))
            }
        }
    };
    let order = order_part.to_ascii_uppercase().replace(' ', "");
    if ![
        "",
        "SYSTEMMODSTAMP",
        "SYSTEMMODSTAMPASC",
        "SYSTEMMODSTAMPASC,IDASC",
        "SYSTEMMODSTAMP,ID",
        "SYSTEMMODSTAMPASC,ID",
        "SYSTEMMODSTAMP,IDASC",
    ]
    .contains(&order.as_str())
    {
        return Err(malformed(
            "the simulator supports only ORDER BY SystemModstamp ASC, Id ASC",
        ));
    }
    let limit = match limit_part {
        "" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| malformed("LIMIT needs a number"))?,
        ),
    };
    Ok(Soql {
        object,
        fields,
        filter,
        limit,
    })
}

fn batch_size(headers: &HeaderMap) -> usize {
    headers
        .get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .find_map(|p| p.trim().strip_prefix("batchSize=")?.parse::<usize>().ok())
        })
        .unwrap_or(2000)
        .clamp(200, 2000)
}

async fn query(
    State(st): State<Arc<SimState>>,
    Path(version): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let pairs = query_pairs(&uri).unwrap_or_default();
    let Some(q) = pairs
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.as_str())
    else {
        return errors(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        );
    };
    if let Some(answer) = write::query(&st, &version, q) {
        return answer;
    }
    let sf = &st.salesforce;
    let soql = match parse_soql(q, &sf.tables) {
        Ok(s) => s,
        Err((status, code, msg)) => return errors(status, code, &msg),
    };
    let table = &sf.tables[soql.object];
    let mut rows: Vec<usize> = (0..table.rows.len())
        .filter(|i| match &soql.filter {
            None => true,
            Some((op, at)) => {
                let t = table.rows[*i].0;
                match op.as_str() {
                    ">" => t > *at,
                    ">=" => t >= *at,
                    "<" => t < *at,
                    _ => t <= *at,
                }
            }
        })
        .collect();
    if let Some(l) = soql.limit {
        rows.truncate(l);
    }
    let n = sf.seq.fetch_add(1, Ordering::Relaxed);
    let locator = format!("01gSIM{n:012}");
    let loc = Locator {
        object: soql.object,
        fields: soql.fields,
        rows,
        batch: batch_size(&headers),
    };
    let resp = render(sf, &version, &locator, &loc, 0);
    lock(&sf.locators).insert(locator, loc);
    resp
}

async fn query_more(
    State(st): State<Arc<SimState>>,
    Path((version, locator)): Path<(String, String)>,
) -> Response {
    let sf = &st.salesforce;
    let parsed = locator
        .rsplit_once('-')
        .and_then(|(l, o)| Some((l.to_string(), o.parse::<usize>().ok()?)));
    let locators = lock(&sf.locators);
    match parsed.and_then(|(l, o)| locators.get(&l).map(|loc| (l, loc, o))) {
        Some((l, loc, offset)) if offset <= loc.rows.len() => render(sf, &version, &l, loc, offset),
        _ => errors(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        ),
    }
}

fn render(
    sf: &SalesforceState,
    version: &str,
    locator: &str,
    loc: &Locator,
    offset: usize,
) -> Response {
    let table = &sf.tables[loc.object];
    let end = (offset + loc.batch).min(loc.rows.len());
    let records: Vec<Value> = loc.rows[offset..end]
        .iter()
        .map(|i| {
            let (_, id, m) = &table.rows[*i];
            let mut out = Map::new();
            out.insert("attributes".into(), json!({"type": loc.object, "url": format!("/services/data/{version}/sobjects/{}/{id}", loc.object)}));
            for f in &loc.fields {
                out.insert((*f).to_string(), m.get(*f).cloned().unwrap_or(Value::Null));
            }
            Value::Object(out)
        })
        .collect();
    let done = end >= loc.rows.len();
    let mut body = json!({"totalSize": loc.rows.len(), "done": done, "records": records});
    if !done {
        body["nextRecordsUrl"] = json!(format!("/services/data/{version}/query/{locator}-{end}"));
    }
    json_response(StatusCode::OK, body)
}

#[path = "salesforce_data.rs"]
mod data;

#[path = "salesforce_write.rs"]
mod write;

#[cfg(test)]
#[path = "salesforce_tests.rs"]
mod tests;
