//! The `clientsuccess` kind against the simulated ClientSuccess: custom field values land per client and a
//! bad item fails alone, to-dos are created once and completed once (a resend after a crash finds them),
//! an expired token means one new login, and the login and token checks hold.

use super::*;
use crate::connector::kinds::clientsuccess::{build, ClientSuccess, LOGIN};
use crate::connector::kinds::sink_testkit::{close_op, num, project_op, set_fields, text, KEY};
use crate::connector::{BuildContext, Built, Delivered, DeliveryError, Sink};
use crate::http::testing::{config, manual_clock, secrets};
use crate::http::HttpClient;
use crate::sim::test_support::{call, start_sim, Auth};
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use crate::vocab::{AuthScheme, Role};

fn sink(sim: &SimHandle) -> ClientSuccess {
    let mut cfg = config(
        "clientsuccess",
        Role::Sink,
        &sim.base_url(Vendor::ClientSuccess),
        AuthScheme::Basic,
    );
    let s = secrets(&mut cfg, &[("username", EMAIL), ("password", PASSWORD)]);
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &s,
    };
    assert!(matches!(build(&ctx), Ok(Built::Sink(_))));
    let clock = manual_clock();
    let http = HttpClient::new(&cfg, &s)
        .unwrap()
        .with_clock(clock.clone())
        .with_login(LOGIN)
        .unwrap();
    ClientSuccess::new(http, clock)
}

fn ids(sim: &SimHandle) -> Vec<String> {
    sim.world()
        .accounts
        .iter()
        .map(|a| a.hubspot_id.clone())
        .collect()
}

fn custom(sim: &SimHandle, external_id: &str) -> Value {
    let st = sim.state.clientsuccess.snapshot();
    st["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["externalId"] == external_id)
        .map(|c| c["custom"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn fields_land_per_client_and_bad_items_fail_alone() {
    let sim = start_sim(3, SimRateLimits::unlimited()).await;
    let ids = ids(&sim);
    let sink = sink(&sim);
    let ops = vec![
        set_fields(
            &ids[0],
            &[("Health Score", num(87.0)), ("Health Band", text("green"))],
        ),
        set_fields("nobody", &[("Health Score", num(1.0))]),
        set_fields(&ids[1], &[("Health Score", text("high"))]),
        set_fields(&ids[1], &[("Helth Score", num(3.0))]),
        set_fields(&ids[2], &[("Health Score", num(42.5))]),
    ];
    let r = sink.deliver_batch(&ops).await;
    assert_eq!(r[0].as_ref().unwrap(), &Delivered::Applied);
    assert!(
        matches!(&r[1], Err(DeliveryError::Rejected(m)) if m.contains("no client has this external id")),
        "{:?}",
        r[1]
    );
    assert!(
        matches!(&r[2], Err(DeliveryError::Invalid(m)) if m.contains("Invalid value for custom field Health Score")),
        "{:?}",
        r[2]
    );
    assert!(
        matches!(&r[3], Err(DeliveryError::Invalid(m)) if m.contains("Unknown custom field: Helth Score")),
        "{:?}",
        r[3]
    );
    assert_eq!(r[4].as_ref().unwrap(), &Delivered::Applied);
    assert_eq!(
        custom(&sim, &ids[0]),
        json!({"Health Score": 87.0, "Health Band": "green"})
    );
    assert_eq!(
        custom(&sim, &ids[1]),
        json!({}),
        "refused writes apply nothing"
    );
    assert_eq!(custom(&sim, &ids[2]), json!({"Health Score": 42.5}));
    assert_eq!(sim.state.clientsuccess.snapshot()["logins"], 1);
    // The login (its body holds the password) is not in the received log.
    let received = sim.received();
    assert!(received.iter().all(|r| !r.path.contains("/v1/auth")));
    assert!(!serde_json::to_string(&received).unwrap().contains(PASSWORD));
}

#[tokio::test]
async fn to_dos_are_created_once_and_completed_once() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let id = ids(&sim)[0].clone();
    let sink = sink(&sim);
    assert_eq!(
        sink.deliver(&project_op(&id, KEY)).await.unwrap(),
        Delivered::Applied
    );
    let first = sim.state.clientsuccess.snapshot();
    // The outbox resends after a crash between send and confirm: nothing is created twice.
    assert_eq!(
        sink.deliver(&project_op(&id, KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    assert_eq!(sim.state.clientsuccess.snapshot()["todos"], first["todos"]);
    let todos = first["todos"].as_array().unwrap();
    assert_eq!(todos.len(), 2);
    assert_eq!(todos[0]["name"], format!("Call champion [{KEY}/task-1]"));
    assert_eq!(todos[0]["dueDate"], "2026-11-30");
    assert_eq!(todos[1]["dueDate"], "2026-11-23");
    assert_eq!(
        sink.deliver(&close_op(&id, KEY)).await.unwrap(),
        Delivered::Applied
    );
    let closed = sim.state.clientsuccess.snapshot();
    assert!(closed["todos"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["completed"] == true));
    assert_eq!(
        sink.deliver(&close_op(&id, KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
    // Closing for a client that does not exist has nothing to close.
    assert_eq!(
        sink.deliver(&close_op("nobody", KEY)).await.unwrap(),
        Delivered::AlreadyPresent
    );
}

#[tokio::test]
async fn an_expired_token_means_one_new_login() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let id = ids(&sim)[0].clone();
    let sink = sink(&sim);
    let op = set_fields(&id, &[("Health Score", num(10.0))]);
    sink.deliver(&op).await.unwrap();
    sim.state.clientsuccess.expire_tokens();
    sink.deliver(&set_fields(&id, &[("Health Score", num(11.0))]))
        .await
        .unwrap();
    assert_eq!(sim.state.clientsuccess.snapshot()["logins"], 2);
    assert_eq!(custom(&sim, &id), json!({"Health Score": 11.0}));
}

#[tokio::test]
async fn the_login_and_the_token_are_checked_and_the_budget_answers_429() {
    let sim = start_sim(2, SimRateLimits::unlimited()).await;
    let base = sim.base_url(Vendor::ClientSuccess);
    let bad = call(
        "POST",
        &format!("{base}/v1/auth"),
        Auth::None,
        Some(&json!({"username": EMAIL, "password": "wrong"})),
    )
    .await;
    assert_eq!(bad.status, 401);
    let good = call(
        "POST",
        &format!("{base}/v1/auth"),
        Auth::None,
        Some(&json!({"username": EMAIL, "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (good.status, good.body["expires_in"].as_i64()),
        (200, Some(43200))
    );
    let token = good.body["access_token"].as_str().unwrap().to_string();
    let none = call("GET", &format!("{base}/v1/clients"), Auth::None, None).await;
    assert_eq!(
        (none.status, none.body["error"].as_str()),
        (401, Some("invalidToken"))
    );
    // ClientSuccess wants the bare token; `Bearer <token>` is refused.
    let bearer = call(
        "GET",
        &format!("{base}/v1/clients"),
        Auth::Bearer(&token),
        None,
    )
    .await;
    assert_eq!(bearer.status, 401);
    let ok = crate::sim::test_support::client()
        .get(format!("{base}/v1/clients"))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    sim.state.clientsuccess.budget.set(1);
    let id = ids(&sim)[0].clone();
    let get = || {
        crate::sim::test_support::client()
            .get(format!("{base}/v1/clients?externalId={id}"))
            .header("authorization", &token)
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    let limited = get().await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}
