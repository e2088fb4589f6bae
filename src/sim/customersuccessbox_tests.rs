//! The `customersuccessbox` kind against the simulated CustomerSuccessBox: attributes land per account
//! and a bad item fails alone, playbook attributes are idempotent and cleared on recovery, and the auth
//! forms and the budget behave as documented.

use super::*;
use crate::connector::kinds::customersuccessbox::{build, parse_params, CustomerSuccessBox};
use crate::connector::kinds::sink_testkit::{
    client as http_client, close_op, num, project_op, set_fields, sink_config, text, KEY,
};
use crate::connector::{BuildContext, Built, Delivered, DeliveryError, Sink};
use crate::sim::test_support::{call, start_sim, Auth};
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use crate::vocab::AuthScheme;

fn sink(sim: &SimHandle) -> CustomerSuccessBox {
    let (cfg, s) = sink_config(
        "customersuccessbox",
        &sim.base_url(Vendor::CustomerSuccessBox),
        AuthScheme::Basic,
        None,
        SECRET_KEY,
    );
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    assert!(matches!(build(&ctx), Ok(Built::Sink(_))));
    let (http, clock) = http_client(&cfg, &s, None);
    CustomerSuccessBox::new(http, parse_params(&toml::Table::new()).unwrap(), clock)
}

fn ids(sim: &SimHandle) -> Vec<String> {
    sim.world()
        .accounts
        .iter()
        .map(|a| a.hubspot_id.clone())
        .collect()
}

#[tokio::test]
async fn attributes_land_per_account_and_a_bad_item_fails_alone() {
    let sim = start_sim(3, SimRateLimits::unlimited()).await;
    let ids = ids(&sim);
    let sink = sink(&sim);
    let ops = vec![
        set_fields(
            &ids[0],
            &[("Health Score", num(87.0)), ("Health Band", text("green"))],
        ),
        set_fields("", &[("Health Score", num(1.0))]),
        set_fields(&ids[1], &[("Health Score", num(42.5))]),
    ];
    let r = sink.deliver_batch(&ops).await;
    assert_eq!(r[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(&r[1], Err(DeliveryError::Rejected(_))),
        "{:?}",
        r[1]
    );
    assert_eq!(r[2].as_ref().unwrap(), &Delivered::Applied);
    let st = sim.state.customersuccessbox.snapshot();
    let name = sim.world().accounts[0].name.clone();
    assert_eq!(
        st["accounts"][&ids[0]],
        json!({"name": name, "Health Score": 87.0, "Health Band": "green"})
    );
    assert_eq!(st["accounts"][&ids[1]]["Health Score"], 42.5);
    assert_eq!(st["created"], json!([]), "no account was created");
    assert_eq!(sim.received().len(), 2);
}

#[tokio::test]
async fn playbook_attributes_are_idempotent_and_cleared_on_recovery() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let id = ids(&sim)[0].clone();
    let sink = sink(&sim);
    sink.deliver(&project_op(&id, KEY)).await.unwrap();
    let first = sim.state.customersuccessbox.snapshot();
    sink.deliver(&project_op(&id, KEY)).await.unwrap();
    assert_eq!(
        sim.state.customersuccessbox.snapshot(),
        first,
        "a resend changes nothing"
    );
    let attrs = &first["accounts"][&id];
    assert_eq!(
        attrs["Healthsync Playbook poor-health"],
        format!("Poor Health: usage [{KEY}]")
    );
    assert!(attrs["Healthsync Playbook poor-health Tasks"]
        .as_str()
        .unwrap()
        .contains("2. Exec sponsor (due 2026-11-23): Escalate"));
    sink.deliver(&close_op(&id, KEY)).await.unwrap();
    let after = sim.state.customersuccessbox.snapshot();
    let name = sim.world().accounts[0].name.clone();
    assert_eq!(after["accounts"][&id], json!({ "name": name }));
}

#[tokio::test]
async fn the_auth_forms_validation_and_budget_behave_as_documented() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let base = sim.base_url(Vendor::CustomerSuccessBox);
    let id = ids(&sim)[1].clone();
    let push = format!("{base}/account");
    let body = json!({"account_id": id, "Tier": "Gold"});
    let none = call("POST", &push, Auth::None, Some(&body)).await;
    assert_eq!(none.status, 401);
    let wrong = call("POST", &push, Auth::Basic("nope"), Some(&body)).await;
    assert_eq!(wrong.status, 401);
    let bearer = call("POST", &push, Auth::Bearer(SECRET_KEY), Some(&body)).await;
    assert_eq!(bearer.status, 200);
    let got = call(
        "GET",
        &format!("{base}/account/{id}"),
        Auth::Basic(SECRET_KEY),
        None,
    )
    .await;
    assert_eq!((got.status, got.body["Tier"].as_str()), (200, Some("Gold")));
    let blank = call(
        "POST",
        &push,
        Auth::Basic(SECRET_KEY),
        Some(&json!({"account_id": "", "Tier": "x"})),
    )
    .await;
    assert_eq!(blank.status, 400);
    assert_eq!(blank.body["errors"]["account_id"][0], "can't be blank");
    let nested = call(
        "POST",
        &push,
        Auth::Basic(SECRET_KEY),
        Some(&json!({"account_id": id, "Tier": {"a": 1}})),
    )
    .await;
    assert_eq!(nested.status, 400);
    let missing = call(
        "GET",
        &format!("{base}/account/nobody"),
        Auth::Basic(SECRET_KEY),
        None,
    )
    .await;
    assert_eq!(missing.status, 404);
    sim.state.customersuccessbox.budget.set(1);
    let first = call("POST", &push, Auth::Basic(SECRET_KEY), Some(&body)).await;
    let second = call("POST", &push, Auth::Basic(SECRET_KEY), Some(&body)).await;
    assert_eq!((first.status, second.status), (200, 429));
    assert!(!second.header("retry-after").is_empty());
}
