//! Pieces the kinds share: the incremental cursor every source kind stores, `[params]` checks, and
//! converters for vendor timestamps and ids.
//!
//! The cursor is JSON the store keeps opaque: `{"hwm": {updated_at, id}, "run": {token, prev, since, max,
//! fetched}}`. `hwm` is the high-water mark of the last *completed* run; `run` is the run in progress (the
//! next page's token, the filter it started with, the highest mark seen so far). Resuming from a mid-run
//! cursor re-requests exactly the page after the last one stored. This module owns no vendor knowledge;
//! which field is the page token and which timestamp is filtered on is each kind's business.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::connector::{Page, RejectedRecord, SourceError};
use crate::vocab::{Cursor, Record};

/// How far before the last high-water mark an incremental run starts, to absorb clock skew and records
/// committed late on the vendor's side. Upserts by id make the re-read harmless.
pub const LOOKBACK: chrono::Duration = chrono::Duration::minutes(5);

/// A position in a stream ordered by (updated_at, id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mark {
    pub updated_at: DateTime<Utc>,
    pub id: String,
}

/// The run in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The token of the next page to request; `None` means the run's first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The token of the page just stored, to catch a vendor handing the same token back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
    /// The incremental filter the run started with; kept so every page of a run uses the same query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// The highest mark seen in this run so far; becomes `hwm` when the run completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Mark>,
    /// Records fetched under the current query (HubSpot search stops at 10,000).
    #[serde(default)]
    pub fetched: u64,
}

/// The cursor of one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamCursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwm: Option<Mark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<RunState>,
}

impl StreamCursor {
    /// Reads a stored cursor; `None` (or JSON null) is a fresh stream.
    pub fn load(
        cursor: Option<&Cursor>,
        stream: &str,
        connector: &str,
    ) -> Result<StreamCursor, SourceError> {
        match cursor.map(|c| &c.0) {
            None | Some(Value::Null) => Ok(StreamCursor::default()),
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
                malformed(
                    stream,
                    connector,
                    format!("stored cursor is not this kind's cursor ({e})"),
                )
            }),
        }
    }

    /// The run to continue, or a new one whose filter starts `LOOKBACK` before the high-water mark.
    pub fn current_run(&self) -> RunState {
        match &self.run {
            Some(run) => run.clone(),
            None => RunState {
                since: self.hwm.as_ref().map(|m| m.updated_at - LOOKBACK),
                ..RunState::default()
            },
        }
    }

    /// Records a fetched page of `run`: `page_max` is the highest mark among its records, `count` how many
    /// records it held, `next` the vendor's token for the following page (`None` at the end). Returns the
    /// cursor to store and whether the run is done. A token equal to the one just used, or the one before,
    /// would loop forever, so it is an error.
    pub fn advance(
        &self,
        run: RunState,
        page_max: Option<Mark>,
        count: usize,
        next: Option<String>,
    ) -> Result<(StreamCursor, bool), String> {
        let max = match (run.max.clone(), page_max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        match next {
            Some(token) => {
                if run.token.as_deref() == Some(token.as_str())
                    || run.prev.as_deref() == Some(token.as_str())
                {
                    return Err(format!(
                        "the vendor returned page token `{token}` again; stopping to avoid a loop"
                    ));
                }
                let run = RunState {
                    prev: run.token,
                    token: Some(token),
                    since: run.since,
                    max,
                    fetched: run.fetched + count as u64,
                };
                Ok((
                    StreamCursor {
                        hwm: self.hwm.clone(),
                        run: Some(run),
                    },
                    false,
                ))
            }
            None => {
                let hwm = match (self.hwm.clone(), max) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                Ok((StreamCursor { hwm, run: None }, true))
            }
        }
    }

    pub fn to_cursor(&self) -> Cursor {
        Cursor(serde_json::to_value(self).unwrap_or(Value::Null))
    }

    /// The step every paged fetch ends with: advances past a page of `count` vendor items whose records are
    /// already in `page` (highest mark `page_max`, from [`map_page`]) to `next` (the vendor's token, URL or
    /// offset; `None` at the end), and puts the cursor to store on the page. How `next` is found is the
    /// kind's business; the loop guard, the high-water mark and completion are decided here.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_page(
        &self,
        run: RunState,
        mut page: Page,
        page_max: Option<Mark>,
        count: usize,
        next: Option<String>,
        stream: &str,
        connector: &str,
    ) -> Result<Page, SourceError> {
        let (state, done) = self
            .advance(run, page_max, count, next)
            .map_err(|e| malformed(stream, connector, e))?;
        page.cursor = state.to_cursor();
        page.done = done;
        Ok(page)
    }
}

impl Mark {
    /// A record's own position: its `updated_at` and id.
    pub fn of(record: &Record) -> Mark {
        Mark {
            updated_at: record.updated_at,
            id: record.id.clone(),
        }
    }
}

/// Pairs a mapped record with its own mark, for kinds whose records are ordered by their `updated_at`.
pub fn marked(record: Record) -> (Record, Mark) {
    let mark = Mark::of(&record);
    (record, mark)
}

/// Maps a page of vendor items: records (each with the mark the vendor orders it by) and rejections, in
/// order, plus the highest mark among the records. The cursor is left for [`StreamCursor::finish_page`].
pub fn map_page<T>(
    items: impl IntoIterator<Item = T>,
    mut map: impl FnMut(T) -> Result<(Record, Mark), RejectedRecord>,
) -> (Page, Option<Mark>) {
    let mut page = Page::default();
    let mut max: Option<Mark> = None;
    for item in items {
        match map(item) {
            Ok((record, mark)) => {
                if max.as_ref().is_none_or(|m| mark > *m) {
                    max = Some(mark);
                }
                page.records.push(record);
            }
            Err(rej) => page.rejected.push(rej),
        }
    }
    (page, max)
}

/// Takes the array under `key` out of a decoded response body, leaving an empty one, so that its items
/// can be moved into records instead of cloned. `None` when there is no array under `key`.
pub fn take_list(body: &mut Value, key: &str) -> Option<Vec<Value>> {
    match body.get_mut(key)? {
        Value::Array(items) => Some(std::mem::take(items)),
        _ => None,
    }
}

/// A vendor item's object, moved out of the item so that it becomes a record's fields without a copy.
pub fn into_object(
    item: Value,
    id: &str,
) -> Result<serde_json::Map<String, Value>, RejectedRecord> {
    match item {
        Value::Object(fields) => Ok(fields),
        _ => Err(rejected(Some(id), "record is not a json object")),
    }
}

/// The highest mark of a page's records.
pub fn page_max<'a>(marks: impl IntoIterator<Item = &'a Mark>) -> Option<Mark> {
    marks.into_iter().max().cloned()
}

/// A `SourceError::Malformed` naming the stream and the connector.
pub fn malformed(stream: &str, connector: &str, reason: impl Into<String>) -> SourceError {
    SourceError::Malformed {
        stream: stream.to_string(),
        reason: format!("{} (connector {connector})", reason.into()),
    }
}

/// Names the stream in a response that could not be decoded (malformed JSON); other errors pass through.
pub fn in_stream<T>(
    result: Result<T, crate::http::HttpError>,
    stream: &str,
) -> Result<T, SourceError> {
    result.map_err(|e| match e {
        // The engine's message already names the connector and the request path.
        crate::http::HttpError::Decode { .. } => SourceError::Malformed {
            stream: stream.to_string(),
            reason: e.to_string(),
        },
        other => SourceError::Http(other),
    })
}

pub fn rejected(id: Option<&str>, reason: impl Into<String>) -> RejectedRecord {
    RejectedRecord {
        id: id.map(str::to_string),
        reason: reason.into(),
    }
}

/// The `parse_params` of a kind that takes no `[params]`: any key is refused.
pub fn no_params(params: &toml::Table) -> Result<crate::config::Params, String> {
    check_keys(params, &[])?;
    Ok(crate::config::Params::none())
}

/// Rejects any `[params]` key not in `allowed`.
pub fn check_keys(params: &toml::Table, allowed: &[&str]) -> Result<(), String> {
    for key in params.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(if allowed.is_empty() {
                format!("unknown key `{key}`; this kind takes no params")
            } else {
                format!("unknown key `{key}`; known keys: {}", allowed.join(", "))
            });
        }
    }
    Ok(())
}

/// A list of non-empty strings under `key`, if present.
pub fn string_list(params: &toml::Table, key: &str) -> Result<Option<Vec<String>>, String> {
    let Some(v) = params.get(key) else {
        return Ok(None);
    };
    let items = v
        .as_array()
        .ok_or_else(|| format!("`{key}` must be a list of strings"))?;
    items
        .iter()
        .map(|i| match i.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(_) => Err(format!("`{key}` has an empty entry")),
            None => Err(format!("`{key}` must be a list of strings")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// A non-empty string under `key`, if present.
pub fn string_param(params: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match params.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(_) => Err(format!("`{key}` must be a non-empty string")),
    }
}

/// A prefix (`"Healthsync Playbook "`): a string that is not blank, kept as written, since trimming would eat
/// the trailing space that separates it from what follows.
pub fn prefix_param(params: &toml::Table, key: &str) -> Result<Option<String>, String> {
    match params.get(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a non-empty string")),
    }
}

/// A vendor id: a non-empty string, or a number written as a string.
pub fn id_of(v: Option<&Value>) -> Option<String> {
    id_str(v?).map(Cow::into_owned)
}

/// [`id_of`] without the copy where the id is a string, for loops that only look it up.
pub fn id_str(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// An RFC 3339 timestamp, or epoch milliseconds as a string or number (HubSpot uses both).
pub fn timestamp(v: Option<&Value>) -> Option<DateTime<Utc>> {
    match v? {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                s.parse::<i64>()
                    .ok()
                    .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            }),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        _ => None,
    }
}

/// Unix seconds (Stripe).
pub fn unix_seconds(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v?.as_i64().and_then(|s| Utc.timestamp_opt(s, 0).single())
}

/// A domain as an account key: trimmed and lowercased; `None` when empty.
pub fn domain_key(v: Option<&Value>) -> Option<String> {
    let d = v?
        .as_str()?
        .trim()
        .trim_end_matches('/')
        .to_ascii_lowercase();
    (!d.is_empty()).then_some(d)
}

/// `[params.owners]`: the model's account owner (e.g. a CRM owner id) → the platform's user id, for sinks
/// that assign playbook tasks. Absent means tasks stay unassigned.
pub fn owner_map(params: &toml::Table) -> Result<BTreeMap<String, String>, String> {
    let Some(v) = params.get("owners") else {
        return Ok(BTreeMap::new());
    };
    let table = v
        .as_table()
        .ok_or("`owners` must be a table of owner id = platform user id")?;
    table
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) if !s.is_empty() => Ok((k.clone(), s.to_string())),
            _ => Err(format!(
                "`owners.{k}` must be a non-empty string (the platform's user id)"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(secs: i64, id: &str) -> Mark {
        Mark {
            updated_at: Utc.timestamp_opt(secs, 0).unwrap(),
            id: id.into(),
        }
    }

    #[test]
    fn a_run_pages_then_completes_with_the_highest_mark() {
        let c = StreamCursor::default();
        let run = c.current_run();
        assert_eq!(run.since, None);
        let (c, done) = c
            .advance(run, Some(mark(10, "a")), 2, Some("t1".into()))
            .unwrap();
        assert!(!done);
        let run = c.current_run();
        assert_eq!(run.token.as_deref(), Some("t1"));
        let (c, done) = c.advance(run, Some(mark(5, "z")), 1, None).unwrap();
        assert!(done);
        assert_eq!(c.hwm, Some(mark(10, "a")));
        assert_eq!(c.run, None);
        assert_eq!(
            c.current_run().since,
            Some(mark(10, "a").updated_at - LOOKBACK)
        );
        let stored = c.to_cursor();
        assert_eq!(StreamCursor::load(Some(&stored), "s", "c").unwrap(), c);
    }

    #[test]
    fn repeated_tokens_are_refused() {
        let c = StreamCursor::default();
        let (c, _) = c
            .advance(c.current_run(), None, 0, Some("t1".into()))
            .unwrap();
        assert!(c
            .advance(c.current_run(), None, 0, Some("t1".into()))
            .is_err());
        let (c2, _) = c
            .advance(c.current_run(), None, 0, Some("t2".into()))
            .unwrap();
        assert!(c2
            .advance(c2.current_run(), None, 0, Some("t1".into()))
            .is_err());
    }

    #[test]
    fn params_helpers() {
        let t: toml::Table = toml::from_str("properties = [\"a\", \"b\"]\nkey = \"x\"").unwrap();
        assert_eq!(
            string_list(&t, "properties").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(string_list(&t, "key").is_err());
        assert_eq!(string_param(&t, "key").unwrap().as_deref(), Some("x"));
        assert!(check_keys(&t, &["properties"])
            .unwrap_err()
            .contains("unknown key `key`"));
        assert!(check_keys(&t, &[]).unwrap_err().contains("takes no params"));
    }

    #[test]
    fn timestamps() {
        let t = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            timestamp(Some(&Value::from("2024-01-02T03:04:05Z"))),
            Some(t)
        );
        assert_eq!(timestamp(Some(&Value::from("1704164645000"))), Some(t));
        assert_eq!(unix_seconds(Some(&Value::from(1704164645))), Some(t));
        assert_eq!(timestamp(Some(&Value::from("yesterday"))), None);
    }
}
