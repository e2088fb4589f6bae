//! The simulated Salesforce org's rows: Account, Contact, Opportunity, Task, Event and Case generated per
//! simulated account, deterministically (the account's HubSpot id seeds the generator), in Salesforce's
//! field names and datetime format. Serving them (SOQL, paging, auth, limits) is `salesforce.rs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::Row;
use crate::sim::world::{by, SimAccount, Trajectory};

pub(super) const OBJECTS: [(&str, &[&str]); 6] = [
    (
        "Account",
        &[
            "Id",
            "Name",
            "Website",
            "Industry",
            "Type",
            "NumberOfEmployees",
            "AnnualRevenue",
            "OwnerId",
            "HubSpot_Company_Id__c",
            "CreatedDate",
            "LastModifiedDate",
            "SystemModstamp",
        ],
    ),
    (
        "Contact",
        &[
            "Id",
            "AccountId",
            "FirstName",
            "LastName",
            "Email",
            "Title",
            "CreatedDate",
            "LastModifiedDate",
            "SystemModstamp",
        ],
    ),
    (
        "Opportunity",
        &[
            "Id",
            "AccountId",
            "Name",
            "StageName",
            "Amount",
            "CloseDate",
            "IsClosed",
            "IsWon",
            "Type",
            "CreatedDate",
            "LastModifiedDate",
            "SystemModstamp",
        ],
    ),
    (
        "Task",
        &[
            "Id",
            "AccountId",
            "WhatId",
            "Subject",
            "Status",
            "Priority",
            "TaskSubtype",
            "ActivityDate",
            "CreatedDate",
            "LastModifiedDate",
            "SystemModstamp",
        ],
    ),
    (
        "Event",
        &[
            "Id",
            "AccountId",
            "WhatId",
            "Subject",
            "StartDateTime",
            "EndDateTime",
            "DurationInMinutes",
            "CreatedDate",
            "LastModifiedDate",
            "SystemModstamp",
        ],
    ),
    (
        "Case",
        &[
            "Id",
            "AccountId",
            "Subject",
            "Status",
            "Priority",
            "Origin",
            "IsClosed",
            "ClosedDate",
            "CreatedDate",
            "LastModifiedDate",
            "SystemModstamp",
        ],
    ),
];

/// Salesforce's datetime rendering: `2024-01-02T03:04:05.000+0000`.
pub(crate) fn sf_ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string()
}

/// An 18-character record id with the object's key prefix.
fn sf_id(rng: &mut StdRng, prefix: &str) -> String {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let tail: String = (0..15)
        .map(|_| char::from(B62[rng.gen_range(0..B62.len())]))
        .collect();
    format!("{prefix}{tail}")
}

/// A modification stamp in the last `max_days`; a third fall on the hour, as bulk updates do (ties).
fn stamp(rng: &mut StdRng, now: DateTime<Utc>, max_days: i64) -> DateTime<Utc> {
    let t = now - Duration::seconds(rng.gen_range(60..max_days.max(1) * 86_400));
    let secs = t.timestamp();
    let secs = if rng.gen_bool(0.33) {
        secs - secs % 3600
    } else {
        secs
    };
    Utc.timestamp_opt(secs, 0).single().unwrap_or(now)
}

fn base(id: &str, created: DateTime<Utc>, modified: DateTime<Utc>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Id".into(), json!(id));
    m.insert("CreatedDate".into(), json!(sf_ts(created)));
    m.insert("LastModifiedDate".into(), json!(sf_ts(modified)));
    m.insert("SystemModstamp".into(), json!(sf_ts(modified)));
    m
}

pub(super) fn gen_account(
    a: &SimAccount,
    now: DateTime<Utc>,
    out: &mut BTreeMap<&'static str, Vec<Row>>,
) {
    let seed = a.hubspot_id.parse::<u64>().unwrap_or(7) ^ 0x5a1e_5f0c_e000_0001;
    let rng = &mut StdRng::seed_from_u64(seed);
    let t = a.trajectory;
    let mut push = |object: &'static str, m: Map<String, Value>| {
        let id = m["Id"].as_str().unwrap_or_default().to_string();
        let at = m["SystemModstamp"]
            .as_str()
            .and_then(|s| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.3f%z").ok());
        let at = at.map(|d| d.with_timezone(&Utc)).unwrap_or(now);
        out.entry(object).or_default().push((at, id, m));
    };
    let account_id = sf_id(rng, "001");
    let modified = stamp(rng, now, 60).max(a.created_at);
    let mut acct = base(&account_id, a.created_at, modified);
    acct.insert("Name".into(), json!(a.name));
    acct.insert("Website".into(), json!(format!("https://www.{}", a.domain)));
    acct.insert(
        "Industry".into(),
        json!(["Technology", "Healthcare", "Finance", "Retail"][rng.gen_range(0..4)]),
    );
    acct.insert("Type".into(), json!("Customer - Direct"));
    acct.insert("NumberOfEmployees".into(), json!(a.employees));
    acct.insert(
        "AnnualRevenue".into(),
        json!((a.mrr_cents * 12) as f64 / 100.0),
    );
    acct.insert("OwnerId".into(), json!(format!("005{}", &a.owner_id)));
    acct.insert("HubSpot_Company_Id__c".into(), json!(a.hubspot_id));
    push("Account", acct);
    let child = |rng: &mut StdRng, prefix: &str, max_days: i64| {
        let modified = stamp(rng, now, max_days).max(a.created_at);
        let created = (modified - Duration::days(rng.gen_range(0..30))).max(a.created_at);
        let mut m = base(&sf_id(rng, prefix), created, modified);
        m.insert("AccountId".into(), json!(account_id));
        (m, created, modified)
    };
    for _ in 0..rng.gen_range(1..5) {
        let (mut m, _, _) = child(rng, "003", 120);
        let first = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fatima"][rng.gen_range(0..6)];
        m.insert("FirstName".into(), json!(first));
        m.insert(
            "LastName".into(),
            json!(["Ng", "Ortiz", "Park", "Quinn"][rng.gen_range(0..4)]),
        );
        m.insert(
            "Email".into(),
            json!(format!("{}@{}", first.to_lowercase(), a.domain)),
        );
        m.insert(
            "Title".into(),
            json!(["VP Operations", "Admin", "Champion", "CFO"][rng.gen_range(0..4)]),
        );
        push("Contact", m);
    }
    for k in 0..rng.gen_range(1..4) {
        let (mut m, created, _) = child(rng, "006", 180);
        let lost = t == Trajectory::Churning && k == 0;
        let (stage, closed, won) = match (lost, rng.gen_bool(0.6)) {
            (true, _) => ("Closed Lost", true, false),
            (false, true) => ("Closed Won", true, true),
            (false, false) => ("Negotiation/Review", false, false),
        };
        m.insert(
            "Name".into(),
            json!(format!("{} renewal {}", a.name, k + 1)),
        );
        m.insert("StageName".into(), json!(stage));
        m.insert("Amount".into(), json!((a.mrr_cents * 12) as f64 / 100.0));
        m.insert(
            "CloseDate".into(),
            json!((created + Duration::days(60))
                .format("%Y-%m-%d")
                .to_string()),
        );
        m.insert("IsClosed".into(), json!(closed));
        m.insert("IsWon".into(), json!(won));
        m.insert("Type".into(), json!("Renewal"));
        push("Opportunity", m);
    }
    for _ in 0..by(t, [8, 4, 2]) + rng.gen_range(0..3) {
        let (mut m, _, modified) = child(rng, "00T", 60);
        let account = m["AccountId"].clone();
        m.insert("WhatId".into(), account);
        m.insert(
            "Subject".into(),
            json!(["Check-in call", "QBR prep", "Follow-up email"][rng.gen_range(0..3)]),
        );
        m.insert("Status".into(), json!("Completed"));
        m.insert("Priority".into(), json!("Normal"));
        m.insert(
            "TaskSubtype".into(),
            json!(["Call", "Email", "Task"][rng.gen_range(0..3)]),
        );
        m.insert(
            "ActivityDate".into(),
            json!(modified.format("%Y-%m-%d").to_string()),
        );
        push("Task", m);
    }
    for _ in 0..by(t, [3, 2, 1]) {
        let (mut m, _, modified) = child(rng, "00U", 90);
        let account = m["AccountId"].clone();
        m.insert("WhatId".into(), account);
        m.insert(
            "Subject".into(),
            json!(["Quarterly business review", "Onboarding session"][rng.gen_range(0..2)]),
        );
        m.insert(
            "StartDateTime".into(),
            json!(sf_ts(modified - Duration::hours(1))),
        );
        m.insert("EndDateTime".into(), json!(sf_ts(modified)));
        m.insert("DurationInMinutes".into(), json!(60));
        push("Event", m);
    }
    for _ in 0..by(t, [1, 3, 6]) + rng.gen_range(0..2) {
        let (mut m, _, modified) = child(rng, "500", 90);
        let closed = rng.gen_bool(by(t, [0.9, 0.6, 0.4]));
        m.insert(
            "Subject".into(),
            json!(
                [
                    "Login issue",
                    "Billing question",
                    "Integration broken",
                    "Feature request"
                ][rng.gen_range(0..4)]
            ),
        );
        m.insert(
            "Status".into(),
            json!(if closed { "Closed" } else { "Working" }),
        );
        m.insert(
            "Priority".into(),
            json!(["Low", "Medium", "High"][rng.gen_range(0..3)]),
        );
        m.insert(
            "Origin".into(),
            json!(["Email", "Web", "Phone"][rng.gen_range(0..3)]),
        );
        m.insert("IsClosed".into(), json!(closed));
        m.insert(
            "ClosedDate".into(),
            if closed {
                json!(sf_ts(modified))
            } else {
                Value::Null
            },
        );
        push("Case", m);
    }
}
