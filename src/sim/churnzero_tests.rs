//! The `churnzero` kind against the simulated ChurnZero: attributes land, a refused batch is resent
//! item by item, playbook attributes are idempotent, and the three request forms are understood.

use super::*;
use crate::connector::kinds::churnzero::{build, parse_params, ChurnZero};
use crate::connector::kinds::sink_testkit::{close_op, num, project_op, set_fields, text, KEY};
use crate::connector::{BuildContext, Built, Delivered, DeliveryError, Sink};
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::HttpClient;
use crate::sim::test_support::{call, client, start_sim, Auth};
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use crate::vocab::{AuthScheme, Role, WriteOp};

fn sink(sim: &SimHandle) -> ChurnZero {
    let mut cfg = config(
        "churnzero",
        Role::Sink,
        &sim.base_url(Vendor::ChurnZero),
        AuthScheme::ApiKeyQuery,
    );
    cfg.auth.param = Some("appKey".into());
    let s = secrets(&mut cfg, &[("token", APP_KEY)]);
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    assert!(matches!(build(&ctx), Ok(Built::Sink(_))));
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &s).unwrap().with_clock(clock.clone());
    ChurnZero::new(http, parse_params(&toml::Table::new()).unwrap(), clock)
}

fn on(op: WriteOp, id: &str) -> WriteOp {
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
            account.external_id = id.into();
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
            account.external_id = id.into();
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
async fn attributes_land_and_an_unknown_account_is_rejected_alone() {
    let sim = start_sim(3, SimRateLimits::unlimited()).await;
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
            &[("Health Score", num(87.0)), ("Health Band", text("green"))],
        ),
        set_fields("nobody", &[("Health Score", num(1.0))]),
        set_fields(&ids[1], &[("Health Score", num(42.5))]),
    ];
    let results = sink.deliver_batch(&ops).await;
    assert_eq!(results[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(&results[1], Err(DeliveryError::Rejected(m)) if m.contains("account nobody not found")),
        "{:?}",
        results[1]
    );
    assert_eq!(results[2].as_ref().unwrap(), &Delivered::Applied);
    let state = sim.state.churnzero.snapshot();
    assert_eq!(
        state["accounts"][&ids[0]],
        json!({"Health Score": "87", "Health Band": "green"})
    );
    assert_eq!(state["accounts"][&ids[1]], json!({"Health Score": "42.5"}));
    // The refused batch of three, then each item alone.
    let sizes: Vec<usize> = sim
        .state
        .churnzero
        .received()
        .iter()
        .map(|r| r.body.as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [3, 1, 1, 1]);
}

#[tokio::test]
async fn playbook_attributes_are_set_once_in_effect_and_cleared_on_recovery() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let id = sim.world().accounts[0].hubspot_id.clone();
    let sink = sink(&sim);
    sink.deliver(&on(project_op("101", KEY), &id))
        .await
        .unwrap();
    let after_first = sim.state.churnzero.snapshot();
    sink.deliver(&on(project_op("101", KEY), &id))
        .await
        .unwrap();
    assert_eq!(
        sim.state.churnzero.snapshot(),
        after_first,
        "a resend changes nothing"
    );
    let attrs = &after_first["accounts"][&id];
    assert_eq!(
        attrs["Healthsync Playbook poor-health"],
        format!("Poor Health: usage [{KEY}]")
    );
    assert!(attrs["Healthsync Playbook poor-health Tasks"]
        .as_str()
        .unwrap()
        .contains("1. Call champion (due 2026-11-30): Ask why"));
    sink.deliver(&on(close_op("101", KEY), &id)).await.unwrap();
    assert_eq!(sim.state.churnzero.snapshot()["accounts"][&id], json!({}));
}

#[tokio::test]
async fn get_form_and_json_are_understood_and_the_app_key_is_checked() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let id = sim.world().accounts[1].hubspot_id.clone();
    let base = sim.base_url(Vendor::ChurnZero);
    let get = format!("{base}/i?appKey={APP_KEY}&accountExternalId={id}&contactExternalId=c1&action=setAttribute&entity=account&name=Tier&value=Gold");
    let r = call("GET", &get, Auth::None, None).await;
    assert_eq!((r.status, r.header("content-type")), (200, "image/gif"));
    let form = client()
        .post(format!("{base}/i"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("appKey={APP_KEY}&accountExternalId={id}&contactExternalId=c1&action=trackEvent&eventName=Login"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let wrong = call("GET", &get.replace(APP_KEY, "nope"), Auth::None, None).await;
    assert_eq!(
        (wrong.status, wrong.body["status"].as_str()),
        (403, Some("error"))
    );
    let state = call("GET", &format!("{base}/_sim/state"), Auth::None, None).await;
    assert_eq!(state.body["accounts"][&id], json!({"Tier": "Gold"}));
    assert_eq!(state.body["events"][0]["eventName"], "Login");
    let bad = call("POST", &format!("{base}/i?appKey={APP_KEY}"), Auth::None, Some(&json!([{"action": "setAttribute", "entity": "Account", "accountExternalId": id, "attr_X": "1"}]))).await;
    assert_eq!(bad.status, 400, "entity names are case-sensitive");
}
