//! The `mixpanel` source kind: product events from Mixpanel's raw event export, rolled up into one record per
//! account and day (`daily_activity`).
//!
//! `GET /export?from_date=D&to_date=D[&project_id=][&event=["a","b"]]` (base URL
//! `https://data.mixpanel.com/api/2.0`, or `data-eu` / `data-in`) with HTTP Basic auth (a service account's
//! `user:secret` plus `project_id`, or the project secret as the user). The answer is JSON lines, one event
//! `{"event", "properties": {"time", "distinct_id", "$insert_id", …}}` per line; it is read line by line
//! through the engine's [`LineStream`](crate::http::LineStream) and folded into per-account counters, so
//! memory grows with the accounts and users active that day, never with the export's size.
//!
//! Paging is by day: a page is one UTC day, the page token is the next day to export (`YYYY-MM-DD`). A first
//! run starts `backfill_days` ago; later runs start [`LATE_DAYS`] before the last day stored, because Mixpanel
//! keeps ingesting late events for a day after it ends; a run ends with today (partial, re-read next run).
//! A cursor whose day is after today yields no records.
//!
//! Accounts: each event's `account_property` (default `company_domain`; a Mixpanel group key such as
//! `company_id` works too, and a list value counts the event for each listed account) becomes the record's
//! `account_key` (default `domain`, lowercased). Record `id` = `<account>:<date>`, `updated_at` = the day's
//! start; fields: `date`, `account`, `events`, `active_users` (distinct `distinct_id`), `features_used`
//! (distinct event names), `event_counts` by name, `first_event_at`, `last_event_at`. Unreadable lines and
//! events without `properties.time` are rejected one by one (naming the line), the rest of the day goes on;
//! events without the account property are counted in one rejection per day, never dropped silently.
//!
//! Limits: 60 queries per hour, 3 per second, 100 concurrent (spec); a 429 carries no `Retry-After`, so this
//! kind waits [`NO_RETRY_AFTER_WAIT`] (a minute: one hourly query's share) unless one is sent.
//!
//! Verified against Mixpanel's OpenAPI (../shared/api/specs/mixpanel): path, parameters, JSONL body, auth
//! schemes and limits. Assumed: `time` is unix seconds in UTC (true for projects created after 2023; older
//! projects use the project time zone), and gzip is not requested (the engine's reqwest has no gzip feature).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::common::{self, Mark, StreamCursor};
use crate::config::KindSpec;
use crate::connector::{BuildContext, BuildError, Built, Page, RejectedRecord, Source, SourceError};
use crate::http::{retry_after, Call, Classified, HttpClient, HttpError};
use crate::vocab::{AuthScheme, BoxFuture, Cursor, RateLimit, Record, Role};

pub static SPEC: KindSpec = KindSpec {
    name: "mixpanel",
    role: Role::Source,
    streams: &["daily_activity"],
    default_streams: &["daily_activity"],
    auth: &[AuthScheme::Basic],
    // The export API allows 60 queries per hour.
    default_rate_limit: RateLimit::per_secs(60, 3600),
    parse_params: read_params,
    limitations: &[],
};

/// Days before the last stored day that a run re-reads, for events Mixpanel ingests late.
pub const LATE_DAYS: u64 = 2;
const DEFAULT_BACKFILL_DAYS: u64 = 30;
/// The wait after a 429 without `Retry-After`.
pub const NO_RETRY_AFTER_WAIT: Duration = Duration::from_secs(60);
/// A day with more unreadable lines than this is not an export: stop instead of collecting rejections.
const MAX_REJECTED_LINES: usize = 1000;

#[derive(Clone)]
struct Params {
    project_id: Option<i64>,
    account_property: String,
    account_key: String,
    backfill_days: u64,
    events: Option<Vec<String>>,
}

fn parse_params(params: &toml::Table) -> Result<Params, String> {
    common::check_keys(
        params,
        &[
            "project_id",
            "account_property",
            "account_key",
            "backfill_days",
            "events",
        ],
    )?;
    let project_id = match params.get("project_id") {
        None => None,
        Some(toml::Value::Integer(n)) if *n > 0 => Some(*n),
        Some(_) => return Err("`project_id` must be a positive integer".into()),
    };
    let backfill_days = match params.get("backfill_days") {
        None => DEFAULT_BACKFILL_DAYS,
        Some(toml::Value::Integer(n)) if (1..=365).contains(n) => *n as u64,
        Some(_) => return Err("`backfill_days` must be an integer from 1 to 365".into()),
    };
    Ok(Params {
        project_id,
        account_property: common::string_param(params, "account_property")?
            .unwrap_or_else(|| "company_domain".into()),
        account_key: common::string_param(params, "account_key")?
            .unwrap_or_else(|| "domain".into()),
        backfill_days,
        events: common::string_list(params, "events")?,
    })
}

fn read_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    parse_params(params).map(crate::config::Params::new)
}

pub fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let params = ctx.params::<Params>()?.clone();
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(classify);
    Ok(Built::Source(Box::new(Mixpanel {
        http,
        streams: ctx.connector.streams.clone(),
        params,
    })))
}

/// Mixpanel's 429 has no `Retry-After`: wait a minute (one query's share of the hourly budget).
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    _: &[u8],
    now: DateTime<Utc>,
) -> Option<Classified> {
    (status == StatusCode::TOO_MANY_REQUESTS).then(|| Classified::RateLimited {
        retry_after: Some(retry_after(headers, now).unwrap_or(NO_RETRY_AFTER_WAIT)),
    })
}

pub struct Mixpanel {
    http: HttpClient,
    streams: Vec<String>,
    params: Params,
}

/// One account's counters for one day.
#[derive(Default)]
struct Tally {
    events: u64,
    users: HashSet<String>,
    by_event: BTreeMap<String, u64>,
    first: Option<i64>,
    last: Option<i64>,
}

impl Tally {
    fn count(&mut self, event: &str, user: Option<&str>, secs: i64) {
        self.events += 1;
        if let Some(u) = user {
            if !self.users.contains(u) {
                self.users.insert(u.to_string());
            }
        }
        match self.by_event.get_mut(event) {
            Some(n) => *n += 1,
            None => {
                self.by_event.insert(event.to_string(), 1);
            }
        }
        self.first = Some(self.first.map_or(secs, |f| f.min(secs)));
        self.last = Some(self.last.map_or(secs, |l| l.max(secs)));
    }
}

/// A domain trimmed and lowercased, borrowed when it already is.
fn normalized_domain(d: Cow<'_, str>) -> Cow<'_, str> {
    let trimmed = d.trim();
    if trimmed.len() == d.len() && !d.bytes().any(|b| b.is_ascii_uppercase()) {
        d
    } else {
        Cow::Owned(trimmed.to_ascii_lowercase())
    }
}

/// One day's export folded: a tally per account, and the lines and events that were rejected.
type DayTallies = (BTreeMap<String, Tally>, Vec<RejectedRecord>);

fn day_start(d: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN))
}

impl Mixpanel {
    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if stream != "daily_activity" {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let run = state.current_run();
        let today = self.http.clock().now().date_naive();
        let day = match &run.token {
            Some(t) => NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| {
                common::malformed(
                    stream,
                    connector,
                    format!("stored page token `{t}` is not a date"),
                )
            })?,
            None => match &state.hwm {
                Some(m) => m.updated_at.date_naive() - Days::new(LATE_DAYS),
                None => today - Days::new(self.params.backfill_days),
            },
        };
        let mut page = Page::default();
        if day > today {
            let (s, _) = state
                .advance(run, None, 0, None)
                .map_err(|e| common::malformed(stream, connector, e))?;
            page.cursor = s.to_cursor();
            page.done = true;
            return Ok(page);
        }
        let (tallies, rejected) = self.export_day(stream, day).await?;
        page.rejected = rejected;
        let date = day.format("%Y-%m-%d").to_string();
        // The day itself was read completely, records or not: an empty id sorts below any record of the
        // day, so a quiet day still moves the next run's start forward.
        let mut marks = vec![Mark {
            updated_at: day_start(day),
            id: String::new(),
        }];
        for (account, t) in tallies {
            let record = to_record(&self.params.account_key, &account, &date, day, t);
            marks.push(Mark {
                updated_at: record.updated_at,
                id: record.id.clone(),
            });
            page.records.push(record);
        }
        let next = (day < today).then(|| (day + Days::new(1)).format("%Y-%m-%d").to_string());
        let count = page.records.len();
        state.finish_page(
            run,
            page,
            common::page_max(&marks),
            count,
            next,
            stream,
            connector,
        )
    }

    /// Streams one day's export and folds it into per-account tallies. An export that breaks off
    /// partway (a reset, a timeout) is requested again from its start, with the engine's backoff and
    /// budget, and what was folded from the broken one is dropped: a day is counted whole or not at all.
    async fn export_day(&self, stream: &str, day: NaiveDate) -> Result<DayTallies, SourceError> {
        let (mut attempt, mut waited) = (0, Duration::ZERO);
        loop {
            attempt += 1;
            match self.read_day(stream, day).await {
                Ok(read) => return read,
                Err(broken) => {
                    if !self
                        .http
                        .wait_to_re_request(&broken, attempt, &mut waited)
                        .await
                    {
                        return common::in_stream(Err(broken), stream);
                    }
                }
            }
        }
    }

    /// One request for a day's export, read to its end. The outer error is the body breaking off
    /// partway, which [`Mixpanel::export_day`] may retry; the inner result is the day's outcome.
    async fn read_day(
        &self,
        stream: &str,
        day: NaiveDate,
    ) -> Result<Result<DayTallies, SourceError>, HttpError> {
        let connector = self.http.connector();
        let date = day.format("%Y-%m-%d").to_string();
        let mut query = vec![("from_date", date.clone()), ("to_date", date.clone())];
        if let Some(p) = self.params.project_id {
            query.push(("project_id", p.to_string()));
        }
        if let Some(events) = &self.params.events {
            query.push(("event", json!(events).to_string()));
        }
        let accept = [("Accept", "text/plain".to_string())];
        let call = Call {
            query: &query,
            headers: &accept,
            ..Call::new(&Method::GET, "/export")
        };
        let mut lines = match common::in_stream(self.http.execute_lines(call).await, stream) {
            Ok(lines) => lines,
            Err(e) => return Ok(Err(e)),
        };
        let (mut tallies, mut rejected) = (BTreeMap::<String, Tally>::new(), Vec::new());
        let (mut n, mut unattributed) = (0usize, 0u64);
        // Lines that decoded as events, and the first that did not: a day with none of the first and
        // some of the second is not an export at all (an HTML page or a broken body behind a 200).
        let (mut decoded, mut first_unreadable) = (0usize, None::<String>);
        let property = self.params.account_property.as_str();
        while let Some(line) = lines.next_line().await? {
            n += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Named only when a line is rejected: formatting it for every event cost more than the tally.
            let at = || format!("{date} line {n}");
            let event = match ExportEvent::decode(&line, property) {
                Ok(v) => {
                    decoded += 1;
                    v
                }
                Err(e) => {
                    if first_unreadable.is_none() {
                        first_unreadable = Some(format!("line {n}: {e}"));
                    }
                    rejected.push(common::rejected(
                        Some(&at()),
                        format!("not a json event: {e}"),
                    ));
                    if rejected.len() > MAX_REJECTED_LINES {
                        return Ok(Err(common::malformed(
                            stream,
                            connector,
                            format!("more than {MAX_REJECTED_LINES} unreadable lines in the export of {date}"),
                        )));
                    }
                    continue;
                }
            };
            let name = event.name.as_ref().and_then(Value::as_str);
            let time = event.time.as_ref().and_then(Value::as_i64);
            let (Some(name), Some(time)) = (name, time) else {
                rejected.push(common::rejected(
                    Some(&at()),
                    "event without `event` name or `properties.time`",
                ));
                continue;
            };
            let accounts = match event.account.as_ref() {
                Some(Value::Array(items)) => items.as_slice(),
                Some(v) => std::slice::from_ref(v),
                None => &[],
            };
            let user = event.user.as_ref().and_then(common::id_str);
            // `time_in_ms` is not requested, so times are seconds; tolerate milliseconds anyway.
            let secs = if time > 100_000_000_000 {
                time / 1000
            } else {
                time
            };
            let mut attributed = false;
            for account in accounts.iter().filter_map(common::id_str) {
                attributed = true;
                let key = if self.params.account_key == "domain" {
                    normalized_domain(account)
                } else {
                    account
                };
                // Look up by reference first: most events land on an account already seen that day.
                match tallies.get_mut(key.as_ref()) {
                    Some(t) => t.count(name, user.as_deref(), secs),
                    None => tallies.entry(key.into_owned()).or_default().count(
                        name,
                        user.as_deref(),
                        secs,
                    ),
                }
            }
            if !attributed {
                unattributed += 1;
            }
        }
        if let (0, Some(first)) = (decoded, first_unreadable) {
            // Counting it as rejected lines would move the cursor past the day, and later runs look
            // back only `LATE_DAYS`: its events would be lost until a full sync.
            return Ok(Err(common::malformed(
                stream,
                connector,
                format!("the export of {date} holds no readable event ({first}); not moving past the day"),
            )));
        }
        if unattributed > 0 {
            rejected.push(common::rejected(
                None,
                format!("{unattributed} event(s) on {date} carry no `{property}` property and count for no account"),
            ));
        }
        Ok(Ok((tallies, rejected)))
    }
}

/// The parts of one export line the tallies read: `event`, and `time`, `distinct_id` and the account
/// property from `properties`. Decoded straight from the line, skipping every other property (an event
/// often carries dozens) instead of building them into a `Value` tree.
#[derive(Debug, Default, PartialEq)]
struct ExportEvent {
    name: Option<Value>,
    time: Option<Value>,
    user: Option<Value>,
    account: Option<Value>,
}

impl ExportEvent {
    /// Decodes one line. A line that is JSON but not shaped like an event (not an object, `properties`
    /// not an object) goes through a full `Value` and reads the same fields from it, so it is judged
    /// exactly as any other line; only a line that is not JSON at all is an error.
    fn decode(line: &[u8], property: &str) -> Result<ExportEvent, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_slice(line);
        let typed = (EventVisitor { property })
            .deserialize(&mut de)
            .and_then(|e| de.end().map(|()| e));
        typed.or_else(|_| {
            let v: Value = serde_json::from_slice(line)?;
            let props = v.get("properties");
            let prop = |k: &str| props.and_then(|p| p.get(k)).cloned();
            Ok(ExportEvent {
                name: v.get("event").cloned(),
                time: prop("time"),
                user: prop("distinct_id"),
                account: prop(property),
            })
        })
    }
}

/// Decodes an event object; anything else is an error (and [`ExportEvent::decode`] falls back).
struct EventVisitor<'p> {
    property: &'p str,
}

impl<'de> DeserializeSeed<'de> for EventVisitor<'_> {
    type Value = ExportEvent;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ExportEvent, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = ExportEvent;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ExportEvent, A::Error> {
        let mut event = ExportEvent::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_ref() {
                "event" => event.name = Some(map.next_value()?),
                "properties" => {
                    // A repeated `properties` replaces the earlier one whole, as in a `Value`.
                    let (time, user, account) = map.next_value_seed(PropsVisitor {
                        property: self.property,
                    })?;
                    (event.time, event.user, event.account) = (time, user, account);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(event)
    }
}

/// Decodes `properties` into (`time`, `distinct_id`, the account property); skips the rest.
struct PropsVisitor<'p> {
    property: &'p str,
}

type Props = (Option<Value>, Option<Value>, Option<Value>);

impl<'de> DeserializeSeed<'de> for PropsVisitor<'_> {
    type Value = Props;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Props, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PropsVisitor<'_> {
    type Value = Props;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a properties object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Props, A::Error> {
        let (mut time, mut user, mut account) = (None, None, None);
        while let Some(key) = map.next_key::<Key>()? {
            let k = key.0.as_ref();
            let wanted = [k == "time", k == "distinct_id", k == self.property];
            if !wanted.contains(&true) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let v: Value = map.next_value()?;
            for (slot, want) in [&mut time, &mut user, &mut account].into_iter().zip(wanted) {
                if want {
                    *slot = Some(v.clone());
                }
            }
        }
        Ok((time, user, account))
    }
}

/// An object key: borrowed from the line when it has no escapes (serde_json hands those over without a
/// copy), owned otherwise.
struct Key<'de>(std::borrow::Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(std::borrow::Cow::Owned(v.to_string())))
    }
}

fn to_record(account_key: &str, account: &str, date: &str, day: NaiveDate, t: Tally) -> Record {
    let iso = |s: Option<i64>| {
        s.and_then(|s| Utc.timestamp_opt(s, 0).single())
            .map(|d| Value::String(d.to_rfc3339()))
            .unwrap_or(Value::Null)
    };
    let features: BTreeSet<&String> = t.by_event.keys().collect();
    let mut fields = Map::new();
    fields.insert("date".into(), json!(date));
    fields.insert("account".into(), json!(account));
    fields.insert("events".into(), json!(t.events));
    fields.insert("active_users".into(), json!(t.users.len()));
    fields.insert("features_used".into(), json!(features.len()));
    fields.insert("event_counts".into(), json!(t.by_event));
    fields.insert("first_event_at".into(), iso(t.first));
    fields.insert("last_event_at".into(), iso(t.last));
    Record {
        id: format!("{account}:{date}"),
        updated_at: day_start(day),
        account_keys: BTreeMap::from([(account_key.to_string(), account.to_string())]),
        fields,
    }
}

impl Source for Mixpanel {
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

#[cfg(test)]
#[path = "mixpanel_tests.rs"]
mod tests;
