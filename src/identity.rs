//! Identity: one account across all sources.
//!
//! The model names the stream whose records *are* the accounts (the CRM's companies) and the key they are
//! known by. Every other record joins an account through any account key it shares with it (`crm_id`,
//! `domain`, …), and keys learned from a joined record join further records: an invoice carries only its
//! Stripe customer id, the Stripe customer carries the CRM id, so the invoice reaches the account in a second
//! pass. An explicit mapping in the model (`accounts.links`) joins records by a key value to a named
//! account, ahead of the keys' own joins. A numeric segment field can be banded (`segment_bands`). Records that join nothing are counted and kept as examples, never silently dropped (and
//! links to unknown accounts likewise). Pure: records in, accounts out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{AccountsSpec, StreamRef};
use crate::vocab::Record;

/// Who an account is, as the CS platform and the CSM know it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub stage: Option<String>,
    pub segment: Option<String>,
    pub owner: Option<String>,
}

/// An account with its records from every stream the model uses.
#[derive(Debug, Clone)]
pub struct AccountData {
    pub account: Account,
    pub records: BTreeMap<StreamRef, Vec<Record>>,
}

/// Records that matched no account in one stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Unmatched {
    pub count: usize,
    /// A few record ids, for `healthsync status`.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    /// Sorted by account id.
    pub accounts: Vec<AccountData>,
    pub unmatched: BTreeMap<StreamRef, Unmatched>,
}

const EXAMPLES: usize = 5;

fn field_text(r: &Record, field: &str) -> Option<String> {
    crate::vocab::lookup(&r.fields, field).and_then(|v| match v {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The band label for a numeric segment value (ARR 250000 → `mid`), when the model bands the segment;
/// otherwise, or for a value below every threshold or not a number, the value itself.
pub fn segment_band(bands: &[(f64, String)], value: String) -> String {
    let Ok(x) = value.trim().parse::<f64>() else {
        return value;
    };
    bands
        .iter()
        .rev()
        .find(|(t, _)| x >= *t)
        .map(|(_, label)| label.clone())
        .unwrap_or(value)
}

/// Where links to unknown accounts are reported in `Resolved::unmatched`.
pub fn links_stream() -> StreamRef {
    StreamRef {
        connector: "model".into(),
        stream: "accounts.links".into(),
    }
}

/// Joins `streams` onto the accounts defined by `spec.stream`'s records.
pub fn resolve(spec: &AccountsSpec, streams: BTreeMap<StreamRef, Vec<Record>>) -> Resolved {
    let mut streams = streams;
    let account_records = streams.remove(&spec.stream).unwrap_or_default();
    let mut accounts: Vec<AccountData> = Vec::new();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut unmatched: BTreeMap<StreamRef, Unmatched> = BTreeMap::new();

    let mut sorted = account_records;
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for r in sorted {
        let id = r
            .account_keys
            .get(&spec.key)
            .cloned()
            .unwrap_or_else(|| r.id.clone());
        if index.contains_key(&(spec.key.clone(), id.clone())) {
            continue; // The same account listed twice: the first (lowest record id) wins.
        }
        let n = accounts.len();
        index.insert((spec.key.clone(), id.clone()), n);
        for (k, v) in &r.account_keys {
            index.entry((k.clone(), v.clone())).or_insert(n);
        }
        let account = Account {
            name: field_text(&r, &spec.name_field).unwrap_or_else(|| id.clone()),
            stage: spec.stage_field.as_deref().and_then(|f| field_text(&r, f)),
            segment: spec
                .segment_field
                .as_deref()
                .and_then(|f| field_text(&r, f))
                .map(|v| segment_band(&spec.segment_bands, v)),
            owner: spec.owner_field.as_deref().and_then(|f| field_text(&r, f)),
            id,
        };
        let mut records = BTreeMap::new();
        records.insert(spec.stream.clone(), vec![r]);
        accounts.push(AccountData { account, records });
    }

    // Explicit links: (key, value) → account. A link wins over what the keys would join on their own; a
    // link to an account that does not exist is reported under the pseudo-stream `model.accounts.links`.
    for (k, v, to) in &spec.links {
        match index.get(&(spec.key.clone(), to.clone())).copied() {
            Some(n) => {
                index.insert((k.clone(), v.clone()), n);
            }
            None => {
                let u = unmatched.entry(links_stream()).or_default();
                u.count += 1;
                if u.examples.len() < EXAMPLES {
                    u.examples.push(format!("{k}:{v} → {to}"));
                }
            }
        }
    }

    // Join passes: each pass may learn keys that let the next one join more. Bounded by the number of
    // streams, since a chain of joins can be at most that long.
    let mut pending: Vec<(StreamRef, Record)> = streams
        .into_iter()
        .flat_map(|(s, rs)| rs.into_iter().map(move |r| (s.clone(), r)))
        .collect();
    let max_passes = pending
        .iter()
        .map(|(s, _)| s)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        + 1;
    for _ in 0..max_passes {
        let before = pending.len();
        let mut still = Vec::new();
        for (stream, r) in pending {
            let hit = r
                .account_keys
                .iter()
                .find_map(|(k, v)| index.get(&(k.clone(), v.clone())).copied());
            match hit {
                Some(n) => {
                    for (k, v) in &r.account_keys {
                        index.entry((k.clone(), v.clone())).or_insert(n);
                    }
                    accounts[n].records.entry(stream).or_default().push(r);
                }
                None => still.push((stream, r)),
            }
        }
        pending = still;
        if pending.len() == before {
            break;
        }
    }
    for (stream, r) in pending {
        let u = unmatched.entry(stream).or_default();
        u.count += 1;
        if u.examples.len() < EXAMPLES {
            u.examples.push(r.id);
        }
    }
    for a in &mut accounts {
        for records in a.records.values_mut() {
            records.sort_by(|x, y| (x.updated_at, &x.id).cmp(&(y.updated_at, &y.id)));
        }
    }
    accounts.sort_by(|a, b| a.account.id.cmp(&b.account.id));
    Resolved {
        accounts,
        unmatched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn rec(id: &str, keys: &[(&str, &str)], fields: serde_json::Value) -> Record {
        Record {
            id: id.into(),
            updated_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
            account_keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: fields.as_object().cloned().unwrap_or_default(),
        }
    }

    fn sref(c: &str, s: &str) -> StreamRef {
        StreamRef {
            connector: c.into(),
            stream: s.into(),
        }
    }

    #[test]
    fn numeric_segments_fall_into_bands() {
        let bands = vec![(0.0, "small".to_string()), (100_000.0, "mid".to_string())];
        for (value, want) in [
            ("0", "small"),
            ("99999.5", "small"),
            ("100000", "mid"),
            ("2500000", "mid"),
            ("-5", "-5"),
            ("enterprise", "enterprise"),
        ] {
            assert_eq!(segment_band(&bands, value.to_string()), want, "{value}");
        }
        assert_eq!(segment_band(&[], "7".into()), "7");
    }

    #[test]
    fn joins_transitively_and_counts_unmatched() {
        let spec = AccountsSpec {
            stream: sref("crm", "companies"),
            key: "crm_id".into(),
            name_field: "name".into(),
            stage_field: Some("stage".into()),
            segment_field: None,
            owner_field: None,
            stages: vec![],
            segments: vec![],
            segment_bands: vec![],
            links: vec![
                ("domain".into(), "acme.co.uk".into(), "1".into()),
                ("domain".into(), "gone.io".into(), "404".into()),
            ],
        };
        let mut streams = BTreeMap::new();
        streams.insert(
            sref("crm", "companies"),
            vec![rec(
                "1",
                &[("crm_id", "1"), ("domain", "acme.io")],
                serde_json::json!({"name": "Acme", "stage": "adopt"}),
            )],
        );
        // The invoice comes first in stream order but can only join after the customer taught us cus_1.
        streams.insert(
            sref("billing", "invoices"),
            vec![rec(
                "in_1",
                &[("stripe_customer", "cus_1")],
                serde_json::json!({}),
            )],
        );
        streams.insert(
            sref("billing", "customers"),
            vec![rec(
                "cus_1",
                &[("crm_id", "1"), ("stripe_customer", "cus_1")],
                serde_json::json!({}),
            )],
        );
        streams.insert(
            sref("usage", "daily"),
            vec![
                rec("u1", &[("domain", "acme.io")], serde_json::json!({})),
                rec("u2", &[("domain", "nobody.io")], serde_json::json!({})),
                // Reaches the account only through the explicit link.
                rec("u3", &[("domain", "acme.co.uk")], serde_json::json!({})),
            ],
        );
        let r = resolve(&spec, streams);
        assert_eq!(r.accounts.len(), 1);
        let a = &r.accounts[0];
        assert_eq!(a.account.name, "Acme");
        assert_eq!(a.account.stage.as_deref(), Some("adopt"));
        assert_eq!(a.records[&sref("billing", "invoices")].len(), 1);
        assert_eq!(a.records[&sref("usage", "daily")].len(), 2);
        assert_eq!(
            r.unmatched[&sref("usage", "daily")],
            Unmatched {
                count: 1,
                examples: vec!["u2".into()]
            }
        );
        assert_eq!(
            r.unmatched[&links_stream()].examples,
            ["domain:gone.io → 404"]
        );
    }
}
