//! The `hubspot_sink` kind against the simulated HubSpot: what lands, per-item batch errors, idempotent
//! tasks, closing, and what the simulator records.

use super::*;
use crate::connector::kinds::sink_testkit::{close_op, num, set_fields, text, KEY};
use crate::connector::{BuildContext, Built, Delivered, DeliveryError, Sink};
use crate::http::testing::{config, manual_clock, secrets};
use crate::sim::test_support::{call, start_sim, Auth};
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use crate::vocab::{AccountRef, AuthScheme, Role, TaskSpec, WriteOp};

fn sink(sim: &SimHandle) -> Box<dyn Sink> {
    let mut cfg = config(
        "hubspot_sink",
        Role::Sink,
        &sim.base_url(Vendor::Hubspot),
        AuthScheme::Bearer,
    );
    let secrets = secrets(&mut cfg, &[("token", Vendor::Hubspot.credential())]);
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &secrets,
    };
    assert!(matches!(
        crate::connector::kinds::hubspot_sink::build(&ctx),
        Ok(Built::Sink(_))
    ));
    // The same kind with a manual clock, so due dates are fixed.
    let clock = manual_clock();
    let http = crate::http::HttpClient::new(&cfg, &secrets)
        .unwrap()
        .with_classifier(crate::connector::kinds::hubspot::classify)
        .with_clock(clock.clone());
    Box::new(crate::connector::kinds::hubspot_sink::HubSpotSink::new(
        http, clock,
    ))
}

fn project(company: &str) -> WriteOp {
    WriteOp::CreateProject {
        account: AccountRef {
            account_id: "a".into(),
            external_id: company.into(),
            name: "Acme".into(),
        },
        key: KEY.into(),
        playbook: "poor-health".into(),
        name: "Poor Health: usage".into(),
        description: "Usage dropped".into(),
        tasks: vec![
            TaskSpec {
                name: "Call champion".into(),
                description: "Ask why".into(),
                due_days: 7,
            },
            TaskSpec {
                name: "Exec sponsor".into(),
                description: "Escalate".into(),
                due_days: 0,
            },
        ],
        owner: None,
    }
}

#[tokio::test]
async fn fields_land_per_item_and_bad_items_carry_hubspots_message() {
    let sim = start_sim(5, SimRateLimits::unlimited()).await;
    let ids: Vec<String> = sim
        .world()
        .accounts
        .iter()
        .map(|a| a.hubspot_id.clone())
        .collect();
    let sink = sink(&sim);
    let ops = vec![
        set_fields(
            &ids[0],
            &[
                ("healthsync_score", num(87.0)),
                ("healthsync_band", text("green")),
            ],
        ),
        set_fields("999999", &[("healthsync_score", num(10.0))]),
        set_fields(&ids[1], &[("healthsync_scroe", num(50.0))]),
        set_fields(&ids[2], &[("healthsync_score", num(42.5))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(results[1], Err(DeliveryError::Rejected(ref m)) if m.contains("Could not get some COMPANY objects")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Err(DeliveryError::Invalid(ref m)) if m.contains("Property \"healthsync_scroe\" does not exist")),
        "{:?}",
        results[2]
    );
    assert_eq!(results[3].as_ref().unwrap(), &Delivered::Applied);

    let state = sim.state.hubspot.write.snapshot();
    assert_eq!(
        state["companies"][&ids[0]],
        json!({"healthsync_score": "87", "healthsync_band": "green"})
    );
    assert_eq!(
        state["companies"][&ids[2]],
        json!({"healthsync_score": "42.5"})
    );
    assert!(state["companies"].get(&ids[1]).is_none());
    let received = sim.state.hubspot.write.received();
    assert_eq!(received.len(), 1, "one batch call");
    assert_eq!(received[0].path, "/crm/v3/objects/companies/batch/update");

    // A single write goes through PATCH; an unknown company is rejected.
    let single = set_fields(&ids[3], &[("healthsync_band", text("red"))]);
    assert_eq!(sink.deliver(&single).await.unwrap(), Delivered::Applied);
    let unknown = set_fields("424242", &[("healthsync_band", text("red"))]);
    assert!(matches!(
        sink.deliver(&unknown).await,
        Err(DeliveryError::Rejected(_))
    ));
}

#[tokio::test]
async fn projects_are_created_once_and_closed_once() {
    let sim = start_sim(3, SimRateLimits::unlimited()).await;
    let company = sim.world().accounts[0].hubspot_id.clone();
    let sink = sink(&sim);
    assert_eq!(
        sink.deliver(&project(&company)).await.unwrap(),
        Delivered::Applied
    );
    assert_eq!(
        sink.deliver(&project(&company)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim.state.hubspot.write.snapshot();
    let tasks = state["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "a resend creates nothing: {tasks:?}");
    assert_eq!(tasks[0]["company"], company.as_str());
    assert_eq!(
        tasks[0]["properties"]["hs_task_subject"],
        format!("Call champion [{KEY}/task-1]")
    );
    assert_eq!(
        tasks[0]["properties"]["hs_timestamp"],
        "2026-11-30T00:00:00.000Z"
    );

    let mut close = close_op("101", KEY);
    if let WriteOp::CloseProject { account, .. } = &mut close {
        account.external_id = company.clone();
    }
    assert_eq!(sink.deliver(&close).await.unwrap(), Delivered::Applied);
    assert_eq!(
        sink.deliver(&close).await.unwrap(),
        Delivered::AlreadyPresent
    );
    let state = sim.state.hubspot.write.snapshot();
    for t in state["tasks"].as_array().unwrap() {
        assert_eq!(t["properties"]["hs_task_status"], "COMPLETED");
    }
    let writes: Vec<String> = sim
        .state
        .hubspot
        .write
        .received()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        [
            "POST /crm/v3/objects/tasks",
            "POST /crm/v3/objects/tasks",
            "POST /crm/v3/objects/tasks/batch/update",
        ]
    );

    // An unknown company cannot get a task.
    let err = sink.deliver(&project("31337")).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::Invalid(ref m) if m.contains("associations are invalid")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_gate_checks_auth_and_introspection_is_open() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let base = sim.base_url(Vendor::Hubspot);
    let r = call(
        "POST",
        &format!("{base}/crm/v3/objects/companies/batch/update"),
        Auth::Bearer("wrong"),
        Some(&json!({"inputs": []})),
    )
    .await;
    assert_eq!(
        (r.status, r.body["category"].as_str()),
        (401, Some("INVALID_AUTHENTICATION"))
    );
    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": i.to_string(), "properties": {}}))
        .collect();
    let r = call(
        "POST",
        &format!("{base}/crm/v3/objects/companies/batch/update"),
        Auth::Bearer(Vendor::Hubspot.credential()),
        Some(&json!({"inputs": too_many})),
    )
    .await;
    assert_eq!(r.status, 400);
    let log = call("GET", &format!("{base}/_sim/received"), Auth::None, None).await;
    assert_eq!(log.status, 200);
    assert_eq!(
        log.body.as_array().map(Vec::len),
        Some(1),
        "only the authenticated write is recorded"
    );
    let state = call("GET", &format!("{base}/_sim/state"), Auth::None, None).await;
    assert_eq!(state.body["tasks"], json!([]));
}

#[tokio::test]
async fn the_ten_secondly_limit_answers_hubspots_429() {
    let mut limits = SimRateLimits::unlimited();
    limits.set(Vendor::Hubspot, 1);
    let sim = start_sim(2, limits).await;
    let base = sim.base_url(Vendor::Hubspot);
    let url = format!("{base}/crm/v3/objects/tasks/search");
    let body = json!({"filterGroups": [], "limit": 10});
    assert_eq!(
        call(
            "POST",
            &url,
            Auth::Bearer(Vendor::Hubspot.credential()),
            Some(&body)
        )
        .await
        .status,
        200
    );
    let r = call(
        "POST",
        &url,
        Auth::Bearer(Vendor::Hubspot.credential()),
        Some(&body),
    )
    .await;
    assert_eq!(
        (r.status, r.body["policyName"].as_str()),
        (429, Some("TEN_SECONDLY_ROLLING"))
    );
}
