//! The `salesforce_sink` kind against the simulated org: Account fields found by the HubSpot id field,
//! per-record results, a refused collection resent record by record, idempotent Tasks, closing.

use super::*;
use crate::connector::kinds::salesforce_sink::{build, parse_params, SalesforceSink};
use crate::connector::kinds::sink_testkit::{close_op, num, project_op, set_fields, text, KEY};
use crate::connector::{BuildContext, Built, Delivered, DeliveryError, Sink};
use crate::http::testing::{manual_clock, oauth2_config_with};
use crate::http::HttpClient;
use crate::sim::test_support::start_sim;
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use crate::vocab::{AuthScheme, Role, WriteOp};

const PARAMS: &str = "account_id_field = \"HubSpot_Company_Id__c\"";

fn sink(sim: &SimHandle) -> SalesforceSink {
    let base = sim.base_url(Vendor::Salesforce);
    let (mut cfg, secrets) = oauth2_config_with(
        "salesforce_sink",
        &base,
        &format!("{base}/services/oauth2/token"),
        AuthScheme::OAuth2ClientCredentials,
        [super::CLIENT_ID, super::CLIENT_SECRET, super::REFRESH_TOKEN],
    );
    cfg.role = Role::Sink;
    cfg.params = (crate::connector::kinds::salesforce_sink::SPEC.parse_params)(
        &toml::from_str(PARAMS).unwrap(),
    )
    .unwrap();
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &secrets,
    };
    assert!(matches!(build(&ctx), Ok(Built::Sink(_))));
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &secrets)
        .unwrap()
        .with_classifier(crate::connector::kinds::salesforce::classify)
        .with_clock(clock.clone());
    SalesforceSink::new(
        http,
        parse_params(&toml::from_str(PARAMS).unwrap()).unwrap(),
        clock,
    )
}

/// The simulated Account Id of the world account with this HubSpot id.
fn account_id(sim: &SimHandle, hubspot_id: &str) -> String {
    let t = &sim.state.salesforce.tables["Account"];
    let row = t
        .rows
        .iter()
        .find(|(_, _, r)| r["HubSpot_Company_Id__c"] == hubspot_id)
        .unwrap();
    row.1.clone()
}

fn on(op: WriteOp, external_id: &str) -> WriteOp {
    match op {
        WriteOp::CreateProject {
            mut account,
            key,
            playbook,
            name,
            description,
            tasks,
            owner,
        } => {
            account.external_id = external_id.into();
            WriteOp::CreateProject {
                account,
                key,
                playbook,
                name,
                description,
                tasks,
                owner,
            }
        }
        WriteOp::CloseProject {
            mut account,
            key,
            playbook,
            name,
            note,
        } => {
            account.external_id = external_id.into();
            WriteOp::CloseProject {
                account,
                key,
                playbook,
                name,
                note,
            }
        }
        other => other,
    }
}

#[tokio::test]
async fn account_fields_land_per_record_with_salesforces_errors() {
    let sim = start_sim(4, SimRateLimits::unlimited()).await;
    let hs: Vec<String> = sim
        .world()
        .accounts
        .iter()
        .map(|a| a.hubspot_id.clone())
        .collect();
    let sink = sink(&sim);
    let ops = vec![
        set_fields(
            &hs[0],
            &[
                ("Health_Score__c", num(87.0)),
                ("Health_Band__c", text("green")),
            ],
        ),
        set_fields("no-such-company", &[("Health_Score__c", num(10.0))]),
        set_fields(&hs[1], &[("Health_Score__c", num(150.0))]),
        set_fields(&hs[2], &[("Health_Top_Risk__c", text("usage"))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(&results[1], Err(DeliveryError::Rejected(m)) if m.contains("no Account has HubSpot_Company_Id__c = no-such-company")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(DeliveryError::Invalid(m)) if m.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION: Health_Score__c must be a number from 0 to 100")),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap(), &Delivered::Applied);
    let state = sim.state.salesforce.write.snapshot();
    assert_eq!(
        state["accounts"][account_id(&sim, &hs[0])],
        json!({"Health_Score__c": 87.0, "Health_Band__c": "green"})
    );
    assert_eq!(
        state["accounts"][account_id(&sim, &hs[2])],
        json!({"Health_Top_Risk__c": "usage"})
    );
    assert!(state["accounts"].get(account_id(&sim, &hs[1])).is_none());
    let writes = sim.state.salesforce.write.received();
    assert_eq!(writes.len(), 1, "one collection call");
    assert_eq!(writes[0].path, "/services/data/v62.0/composite/sobjects");
}

#[tokio::test]
async fn an_unknown_field_fails_the_collection_and_the_rest_still_land() {
    let sim = start_sim(3, SimRateLimits::unlimited()).await;
    let hs: Vec<String> = sim
        .world()
        .accounts
        .iter()
        .map(|a| a.hubspot_id.clone())
        .collect();
    let sink = sink(&sim);
    let ops = vec![
        set_fields(&hs[0], &[("Health_Score__c", num(50.0))]),
        set_fields(&hs[1], &[("Helth_Score__c", num(50.0))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(&results[1], Err(DeliveryError::Invalid(m)) if m.contains("INVALID_FIELD: No such column 'Helth_Score__c'")),
        "{:?}",
        results[1]
    );
    let paths: Vec<String> = sim
        .state
        .salesforce
        .write
        .received()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths[1].ends_with(&format!("/sobjects/Account/{}", account_id(&sim, &hs[0]))));
}

#[tokio::test]
async fn tasks_are_created_once_and_completed_once() {
    let sim = start_sim(3, SimRateLimits::unlimited()).await;
    let hs = sim.world().accounts[0].hubspot_id.clone();
    let sink = sink(&sim);
    assert_eq!(
        sink.deliver(&on(project_op("101", KEY), &hs))
            .await
            .unwrap(),
        Delivered::Applied
    );
    assert_eq!(
        sink.deliver(&on(project_op("101", KEY), &hs))
            .await
            .unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim.state.salesforce.write.snapshot();
    let tasks = state["tasks"].as_object().unwrap();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    let first = tasks
        .values()
        .find(|t| t["Healthsync_Key__c"] == format!("{KEY}/task-1"))
        .unwrap();
    assert_eq!(first["WhatId"], account_id(&sim, &hs).as_str());
    assert_eq!(first["ActivityDate"], "2026-11-30");
    assert_eq!(first["Subject"], "Call champion");

    assert_eq!(
        sink.deliver(&on(close_op("101", KEY), &hs)).await.unwrap(),
        Delivered::Applied
    );
    assert_eq!(
        sink.deliver(&on(close_op("101", KEY), &hs)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim.state.salesforce.write.snapshot();
    for t in state["tasks"].as_object().unwrap().values() {
        assert_eq!(t["Status"], "Completed");
    }
    let unknown = sink
        .deliver(&on(project_op("101", KEY), "nobody"))
        .await
        .unwrap_err();
    assert!(matches!(unknown, DeliveryError::Rejected(_)), "{unknown:?}");
}

#[tokio::test]
async fn the_org_quota_stops_writes() {
    let mut limits = SimRateLimits::unlimited();
    limits.set(Vendor::Salesforce, 2);
    let sim = start_sim(2, limits).await;
    let hs = sim.world().accounts[0].hubspot_id.clone();
    let sink = sink(&sim);
    let op = set_fields(&hs, &[("Health_Score__c", num(1.0))]);
    // Query (1/2) and PATCH (2/2): usage reaches 100%, so the next write is held back without a call.
    assert_eq!(sink.deliver(&op).await.unwrap(), Delivered::Applied);
    let err = sink.deliver(&op).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Transient(ref m) if m.contains("api usage is 2/2")),
        "{err:?}"
    );
    assert_eq!(sim.state.salesforce.write.received().len(), 1);
}
