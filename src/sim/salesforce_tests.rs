//! Tests of the simulated Salesforce org, and of the `salesforce` kind syncing from it end to end.

use super::*;
use crate::connector::{
    kinds::common::LOOKBACK, kinds::testkit::drain, BuildContext, Built, Source, SourceError,
};
use crate::http::testing::oauth2_config_with;
use crate::http::HttpError;
use crate::sim::test_support::*;
use crate::sim::{SimHandle, SimRateLimits, Vendor};
use crate::vocab::AuthScheme;

fn source(sim: &SimHandle, scheme: AuthScheme) -> Box<dyn Source> {
    let base = sim.base_url(Vendor::Salesforce);
    let token_url = format!("{base}/services/oauth2/token");
    let (mut cfg, secrets) = oauth2_config_with(
        "salesforce",
        &base,
        &token_url,
        scheme,
        [CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN],
    );
    cfg.page_size = Some(200);
    cfg.params = (crate::connector::kinds::salesforce::SPEC.parse_params)(
        &toml::from_str("crm_id_field = \"HubSpot_Company_Id__c\"").unwrap(),
    )
    .unwrap();
    cfg.streams = crate::connector::kinds::salesforce::SPEC
        .streams
        .iter()
        .map(|s| s.to_string())
        .collect();
    let ctx = BuildContext {
        connector: &cfg,
        secrets: &secrets,
    };
    match crate::connector::kinds::salesforce::build(&ctx) {
        Ok(Built::Source(s)) => s,
        _ => panic!("salesforce builds a source"),
    }
}

#[tokio::test]
async fn token_endpoint_and_session_checks_speak_salesforce() {
    let sim = start_sim(5, SimRateLimits::unlimited()).await;
    let base = sim.base_url(Vendor::Salesforce);
    let bad = client()
        .post(format!("{base}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=wrong"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
    let r = call(
        "GET",
        &format!("{base}/services/data/v62.0/query?q=SELECT+Id+FROM+Account"),
        Auth::Bearer("nope"),
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body[0]["errorCode"], "INVALID_SESSION_ID");
}

#[tokio::test]
async fn the_kind_syncs_every_object_then_only_changes() {
    let sim = start_sim(120, SimRateLimits::unlimited()).await;
    let src = source(&sim, AuthScheme::OAuth2ClientCredentials);
    let st = &sim.state.salesforce;
    let world = sim.world();
    for (stream, object) in [
        ("accounts", "Account"),
        ("contacts", "Contact"),
        ("opportunities", "Opportunity"),
        ("tasks", "Task"),
        ("events", "Event"),
        ("cases", "Case"),
    ] {
        let d = drain(src.as_ref(), stream, None).await.unwrap();
        assert_eq!(d.records.len(), st.rows(object), "{stream}");
        assert!(d.rejected.is_empty(), "{stream}: {:?}", d.rejected);
        assert_eq!(d.pages, st.rows(object).div_ceil(200).max(1), "{stream}");
        if stream == "accounts" {
            // Every Salesforce account joins a HubSpot company by crm id and by domain.
            for r in &d.records {
                let a = world
                    .accounts
                    .iter()
                    .find(|a| a.hubspot_id == r.account_keys["crm_id"])
                    .expect("joins");
                assert_eq!(r.account_keys["domain"], a.domain);
            }
        } else {
            assert!(d
                .records
                .iter()
                .all(|r| r.account_keys.contains_key("salesforce_account_id")));
        }
        // The next run re-reads only the lookback window behind the high-water mark.
        let hwm = d.state().hwm.unwrap();
        let again = drain(src.as_ref(), stream, Some(d.cursor.clone()))
            .await
            .unwrap();
        assert!(again.records.len() < d.records.len(), "{stream}");
        assert!(again
            .records
            .iter()
            .all(|r| r.updated_at >= hwm.updated_at - LOOKBACK));
        assert!(
            again.ids().contains(&hwm.id.as_str()),
            "ties at the mark are re-read, never skipped"
        );
    }
    assert!(
        st.rows("Task") > 400,
        "tasks span at least three batches of 200"
    );
}

#[tokio::test]
async fn a_future_cursor_yields_nothing_and_the_refresh_grant_works() {
    let sim = start_sim(20, SimRateLimits::unlimited()).await;
    let src = source(&sim, AuthScheme::OAuth2RefreshToken);
    let future = serde_json::json!({"hwm": {"updated_at": "2099-01-01T00:00:00Z", "id": "001"}});
    let d = drain(src.as_ref(), "cases", Some(crate::vocab::Cursor(future)))
        .await
        .unwrap();
    assert_eq!((d.records.len(), d.pages), (0, 1));
    assert_eq!(
        d.state().hwm.unwrap().updated_at.to_rfc3339(),
        "2099-01-01T00:00:00+00:00",
        "the cursor does not move back"
    );
}

#[tokio::test]
async fn the_daily_allocation_ends_the_run_with_request_limit_exceeded() {
    let mut limits = SimRateLimits::unlimited();
    limits.set(Vendor::Salesforce, 2);
    let sim = start_sim(120, limits).await;
    let src = source(&sim, AuthScheme::OAuth2ClientCredentials);
    let p1 = src.fetch_page("tasks", None).await.unwrap();
    let p2 = src.fetch_page("tasks", Some(&p1.cursor)).await;
    // Request 2 of 2 reports api-usage=2/2, so the kind stops before asking for a third batch; a fresh
    // instance that asks anyway gets Salesforce's 403.
    assert!(p2.is_ok());
    let err = src
        .fetch_page("tasks", Some(&p2.unwrap().cursor))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SourceError::Http(HttpError::QuotaExhausted { .. })),
        "{err:?}"
    );
    let fresh = source(&sim, AuthScheme::OAuth2ClientCredentials);
    let err = fresh.fetch_page("tasks", None).await.unwrap_err();
    assert!(
        err.to_string().contains("REQUEST_LIMIT_EXCEEDED")
            || err.to_string().contains("request limit exceeded"),
        "{err}"
    );
}

#[test]
fn soql_subset_and_its_errors() {
    let w = crate::sim::World::generate(3, 1, now());
    let st = SalesforceState::new(&w, 10);
    let q = parse_soql("SELECT Id, name FROM account WHERE SystemModstamp >= 2024-01-01T00:00:00Z ORDER BY SystemModstamp ASC, Id ASC LIMIT 5", &st.tables).map_err(|e| e.2).unwrap();
    assert_eq!(
        (q.object, q.fields, q.limit),
        ("Account", vec!["Id", "Name"], Some(5))
    );
    let err = |s: &str| parse_soql(s, &st.tables).err().map(|e| e.1);
    assert_eq!(err("SELECT Foo FROM Account"), Some("INVALID_FIELD"));
    assert_eq!(err("SELECT Id FROM Lead"), Some("INVALID_TYPE"));
    assert_eq!(err("SELEC Id FROM Account"), Some("MALFORMED_QUERY"));
    assert_eq!(
        err("SELECT Id FROM Account WHERE Name = 'x'"),
        Some("MALFORMED_QUERY")
    );
}
