//! The `hubspot` source kind: companies, contacts, deals and engagements (meetings, calls, emails) from
//! HubSpot CRM v3.
//!
//! Full runs list `GET /crm/v3/objects/{type}?limit=100&after=&properties=…&archived=false`, following
//! `paging.next.after`. Once a run has completed, every stream runs incrementally through
//! `POST /crm/v3/objects/{type}/search` (the modification date GTE the high-water mark minus the lookback,
//! as epoch milliseconds, sorted ascending; contacts call it `lastmodifieddate`, the other objects
//! `hs_lastmodifieddate`). A search query stops at 10,000 results, so a long incremental run restarts its
//! query from the last seen timestamp before reaching that.
//!
//! Which company a record belongs to (its `crm_id`): a company is its own; a contact names its primary
//! company in `associatedcompanyid`. Deals and engagements carry no company property, and search results
//! carry no associations, so each page of them is followed by one
//! `POST /crm/v4/associations/{type}/companies/batch/read` for the page's ids; the first associated
//! company wins. HubSpot answers 207 when some ids have no association; those records keep no `crm_id`
//! (a `company_id`/`associatedcompanyid` property is used if present) and are still stored.
//!
//! Records: `properties` are flattened into `fields` next to the object's own keys (which win on a clash);
//! `updated_at` is `updatedAt` (else `hs_lastmodifieddate`). Companies carry `crm_id` (the id) and `domain`.
//! A 429 whose body names `policyName: DAILY` stops the run instead of retrying. This kind does not own
//! retries or auth (the HTTP engine) nor what happens to records (the sync loop).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common::{self, RunState, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{Call, Classified, HttpClient, WindowQuota};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "hubspot",
    role: Role::Source,
    streams: &[
        "companies",
        "contacts",
        "deals",
        "meetings",
        "calls",
        "emails",
    ],
    default_streams: &["companies"],
    // A private app's access token, or a public app's OAuth refresh token (`token_url` =
    // https://api.hubapi.com/oauth/v1/token; access tokens last 30 minutes and a 401 refreshes early).
    auth: &[AuthScheme::Bearer, AuthScheme::OAuth2RefreshToken],
    // Private apps on Free/Starter: 100 requests per 10 s (Pro/Enterprise 190).
    default_rate_limit: RateLimit::per_secs(100, 10),
    parse_params: read_params,
    limitations: &[],
};

const PARAM_KEYS: &[&str] = &["properties"];
/// HubSpot's page size ceiling for list endpoints.
const MAX_PAGE: u32 = 100;
/// Restart a search query before HubSpot's 10,000-result ceiling turns the next page into a 400.
const SEARCH_CEILING: u64 = 10_000;

/// `properties`: company properties to read beyond the defaults.
struct Settings {
    properties: Vec<String>,
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    common::check_keys(params, PARAM_KEYS)?;
    let properties = common::string_list(params, "properties")?.unwrap_or_default();
    Ok(crate::config::Params::new(Settings { properties }))
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let extra = ctx.params::<Settings>()?.properties.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?
        .with_classifier(classify)
        .with_quota_reader(quota);
    Ok(Built::Source(Box::new(HubSpot::new(
        http,
        ctx.connector.streams.clone(),
        extra,
        ctx.connector.page_size,
    ))))
}

/// HubSpot's ten-secondly rolling quota as every response reports it (`X-HubSpot-RateLimit-Max` per
/// `X-HubSpot-RateLimit-Interval-Milliseconds`): the engine then never sends more in a rolling window, even
/// when the configured `rate_limit` guessed a higher tier.
pub fn quota(headers: &HeaderMap) -> Option<WindowQuota> {
    let num = |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    Some(WindowQuota {
        requests: u32::try_from(num("x-hubspot-ratelimit-max")?).ok()?,
        window: Duration::from_millis(num("x-hubspot-ratelimit-interval-milliseconds")?),
    })
}

/// HubSpot's daily quota: retrying within the run cannot help. Shared with the `hubspot_sink` kind.
pub(crate) fn classify(
    status: StatusCode,
    _: &HeaderMap,
    body: &[u8],
    _: DateTime<Utc>,
) -> Option<Classified> {
    if status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let body: Value = serde_json::from_slice(body).ok()?;
    (body.get("policyName").and_then(Value::as_str) == Some("DAILY")).then(|| {
        Classified::QuotaExhausted {
            reason:
                "hubspot daily api limit reached; it resets at midnight in the account's time zone"
                    .into(),
        }
    })
}

pub struct HubSpot {
    http: HttpClient,
    streams: Vec<String>,
    extra_properties: Vec<String>,
    limit: u32,
}

impl HubSpot {
    pub fn new(
        http: HttpClient,
        streams: Vec<String>,
        extra_properties: Vec<String>,
        page_size: Option<u32>,
    ) -> HubSpot {
        HubSpot {
            http,
            streams,
            extra_properties,
            limit: page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
        }
    }

    fn properties(&self, stream: &str) -> Vec<String> {
        let base: &[&str] = match stream {
            "contacts" => &[
                "firstname",
                "lastname",
                "email",
                "jobtitle",
                "lifecyclestage",
                "associatedcompanyid",
                "lastmodifieddate",
                "createdate",
            ],
            "deals" => &[
                "dealname",
                "amount",
                "dealstage",
                "pipeline",
                "closedate",
                "hs_lastmodifieddate",
                "createdate",
            ],
            "meetings" => &[
                "hs_timestamp",
                "hs_meeting_title",
                "hs_meeting_start_time",
                "hs_meeting_end_time",
                "hs_meeting_outcome",
                "hubspot_owner_id",
                "hs_lastmodifieddate",
            ],
            "calls" => &[
                "hs_timestamp",
                "hs_call_title",
                "hs_call_direction",
                "hs_call_duration",
                "hs_call_status",
                "hubspot_owner_id",
                "hs_lastmodifieddate",
            ],
            "emails" => &[
                "hs_timestamp",
                "hs_email_subject",
                "hs_email_direction",
                "hs_email_status",
                "hubspot_owner_id",
                "hs_lastmodifieddate",
            ],
            _ => &["name", "domain", "hs_lastmodifieddate", "createdate"],
        };
        let mut out: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        for p in &self.extra_properties {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if !SPEC.streams.contains(&stream) {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let run = state.current_run();
        let properties = self.properties(stream);
        let mut body = match run.since {
            None => {
                let mut query = vec![
                    ("limit", self.limit.to_string()),
                    ("properties", properties.join(",")),
                    ("archived", "false".to_string()),
                ];
                if let Some(after) = &run.token {
                    query.push(("after", after.clone()));
                }
                common::in_stream(
                    self.http
                        .get_json(&format!("/crm/v3/objects/{stream}"), &query)
                        .await,
                    stream,
                )?
            }
            Some(since) => {
                let mut body = json!({
                    "filterGroups": [{"filters": [{
                        "propertyName": modified_property(stream),
                        "operator": "GTE",
                        "value": since.timestamp_millis().to_string(),
                    }]}],
                    "sorts": [{"propertyName": modified_property(stream), "direction": "ASCENDING"}],
                    "properties": properties,
                    "limit": self.limit,
                });
                if let Some(after) = &run.token {
                    body["after"] = Value::String(after.clone());
                }
                let path = format!("/crm/v3/objects/{stream}/search");
                let call = Call {
                    body: Some(&body),
                    ..Call::new(&Method::POST, &path)
                };
                common::in_stream(self.http.execute(call).await, stream)?.body
            }
        };
        let results = common::take_list(&mut body, "results").ok_or_else(|| {
            common::malformed(stream, connector, "response has no `results` list")
        })?;
        let next = body
            .pointer("/paging/next/after")
            .and_then(|v| common::id_of(Some(v)));

        let count = results.len();
        let (mut page, max) =
            common::map_page(results, |obj| map_object(stream, obj).map(common::marked));
        if needs_associations(stream) && !page.records.is_empty() {
            self.associate_companies(stream, &mut page.records).await?;
        }
        let searching = run.since.is_some();
        let (mut new_state, done) = state
            .advance(run.clone(), max, count, next)
            .map_err(|e| common::malformed(stream, connector, e))?;
        if let (true, false, Some(r)) = (searching, done, new_state.run.as_mut()) {
            if r.fetched + u64::from(self.limit) > SEARCH_CEILING {
                restart_search(r, run.since)
                    .map_err(|e| common::malformed(stream, connector, e))?;
            }
        }
        page.cursor = new_state.to_cursor();
        page.done = done;
        Ok(page)
    }
}

impl HubSpot {
    /// Sets each record's `crm_id` to its first associated company, from one v4 batch read for the page.
    async fn associate_companies(
        &self,
        stream: &str,
        records: &mut [Record],
    ) -> Result<(), SourceError> {
        let inputs: Vec<Value> = records.iter().map(|r| json!({"id": r.id})).collect();
        let body = json!({ "inputs": inputs });
        let path = format!("/crm/v4/associations/{stream}/companies/batch/read");
        let call = Call {
            body: Some(&body),
            ..Call::new(&Method::POST, &path)
        };
        let response = common::in_stream(self.http.execute(call).await, stream)?.body;
        let results = response
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                common::malformed(
                    stream,
                    self.http.connector(),
                    "association batch read has no `results` list",
                )
            })?;
        let mut company_of: std::collections::HashMap<String, String> =
            std::collections::HashMap::with_capacity(results.len());
        for r in results {
            let from = common::id_of(r.pointer("/from/id"));
            let to = r
                .get("to")
                .and_then(Value::as_array)
                .and_then(|to| to.iter().find_map(|t| common::id_of(t.get("toObjectId"))));
            if let (Some(from), Some(to)) = (from, to) {
                company_of.entry(from).or_insert(to);
            }
        }
        for record in records {
            if let Some(company) = company_of.remove(&record.id) {
                record.account_keys.insert("crm_id".to_string(), company);
            }
        }
        Ok(())
    }
}

/// The search filter's modification-date property: contacts name it differently from other objects.
fn modified_property(stream: &str) -> &'static str {
    match stream {
        "contacts" => "lastmodifieddate",
        _ => "hs_lastmodifieddate",
    }
}

/// Streams whose company comes only from associations.
fn needs_associations(stream: &str) -> bool {
    matches!(stream, "deals" | "meetings" | "calls" | "emails")
}

/// Starts a fresh search query at the highest timestamp seen, before the 10,000-result ceiling.
fn restart_search(run: &mut RunState, old_since: Option<DateTime<Utc>>) -> Result<(), String> {
    let from = run.max.as_ref().map(|m| m.updated_at);
    if from.is_none() || from == old_since {
        return Err(format!(
            "more than {SEARCH_CEILING} records share one hs_lastmodifieddate; a search query cannot page past them"
        ));
    }
    run.since = from;
    run.token = None;
    run.prev = None;
    run.fetched = 0;
    Ok(())
}

impl Source for HubSpot {
    fn streams(&self) -> Vec<String> {
        self.streams.clone()
    }

    fn fetch_page<'a>(
        &'a self,
        stream: &'a str,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Page, SourceError>> {
        Box::pin(self.fetch(stream, cursor))
    }
}

/// Maps one CRM object onto a [`Record`]: its `properties` and its other top-level fields, moved.
fn map_object(stream: &str, obj: Value) -> Result<Record, RejectedRecord> {
    let id = common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
    let props = obj.get("properties").and_then(Value::as_object);
    let updated_at = common::timestamp(obj.get("updatedAt"))
        .or_else(|| common::timestamp(props.and_then(|p| p.get(modified_property(stream)))))
        .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `updatedAt`"))?;
    let mut account_keys = BTreeMap::new();
    match stream {
        "companies" => {
            account_keys.insert("crm_id".to_string(), id.clone());
            if let Some(d) = common::domain_key(props.and_then(|p| p.get("domain"))) {
                account_keys.insert("domain".to_string(), d);
            }
        }
        _ => {
            // Replaced by the association, when the page's batch read finds one.
            if let Some(company) = company_property(&obj) {
                account_keys.insert("crm_id".to_string(), company);
            }
        }
    }
    let mut top = common::into_object(obj, &id)?;
    let mut fields = match top.remove("properties") {
        Some(Value::Object(props)) => props,
        _ => Map::new(),
    };
    // Top-level fields win over properties of the same name, as they always have.
    fields.append(&mut top);
    Ok(Record {
        id,
        updated_at,
        account_keys,
        fields,
    })
}

/// A company named in the object's properties: a contact's primary company (`associatedcompanyid`), or a
/// `company_id` some portals keep on deals.
fn company_property(obj: &Value) -> Option<String> {
    let props = obj.get("properties")?;
    ["associatedcompanyid", "company_id"]
        .iter()
        .find_map(|k| common::id_of(props.get(*k)).filter(|id| !id.is_empty()))
}

#[cfg(test)]
#[path = "hubspot_tests.rs"]
mod tests;
