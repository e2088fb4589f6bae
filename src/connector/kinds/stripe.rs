//! The `stripe` source kind: customers, subscriptions and invoices from Stripe's list endpoints.
//!
//! `GET /v1/{stream}?limit=100&starting_after=<last id>` while `has_more` (newest first); subscriptions add
//! `status=all` (the default omits canceled ones). Stripe lists have no "updated since" filter, so
//! **customers and subscriptions re-list fully on every run**; upserts by id make that idempotent.
//! Invoices run incrementally with `created[gte]` = the high-water mark minus the lookback. Because the
//! filter is on `created`, the invoices cursor tracks `created` too, and an invoice paid or voided long
//! after it was created is not re-read by incremental runs (clear the cursor for a full re-list).
//!
//! `updated_at` is the latest lifecycle timestamp Stripe exposes: `created` for customers; the latest of
//! `created`, `canceled_at`, `ended_at` for subscriptions; the latest of `created` and
//! `status_transitions.*` for invoices. Account keys: customers → `stripe_customer` (the id) and `crm_id`
//! from `metadata[crm_id_metadata_key]` (default `hubspot_company_id`); subscriptions and invoices →
//! `stripe_customer` from `customer` (an id or an expanded object). A 429 carries no `Retry-After`, so the
//! engine backs off; `Stripe-Should-Retry: true` makes any status retryable. Auth and retries are the HTTP
//! engine's; this kind only knows Stripe's shapes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use super::common::{self, Mark, StreamCursor};
use crate::config::{AuthScheme, RateLimit};
use crate::connector::{
    BoxFuture, BuildContext, BuildError, Built, Cursor, KindSpec, Page, Record, RejectedRecord,
    Role, Source, SourceError,
};
use crate::http::{Classified, HttpClient};

pub static SPEC: KindSpec = KindSpec {
    name: "stripe",
    role: Role::Source,
    streams: &["customers", "subscriptions", "invoices"],
    default_streams: &["customers", "subscriptions", "invoices"],
    auth: &[AuthScheme::Bearer],
    // Most endpoints: 25 requests per second each (sandbox: 25/s globally).
    default_rate_limit: RateLimit::per_secs(25, 1),
    validate_params,
    build,
};

const PARAM_KEYS: &[&str] = &["crm_id_metadata_key"];
const DEFAULT_CRM_KEY: &str = "hubspot_company_id";
const MAX_PAGE: u32 = 100;

fn validate_params(params: &toml::Table) -> Result<(), String> {
    common::check_keys(params, PARAM_KEYS)?;
    common::string_param(params, "crm_id_metadata_key")?;
    Ok(())
}

fn build(ctx: &BuildContext<'_>) -> Result<Built, BuildError> {
    let crm_key = common::string_param(&ctx.connector.params, "crm_id_metadata_key")
        .map_err(|reason| BuildError::Invalid {
            connector: ctx.connector.id.clone(),
            reason,
        })?
        .unwrap_or_else(|| DEFAULT_CRM_KEY.to_string());
    let http = HttpClient::new(ctx.connector, ctx.secrets)?.with_classifier(classify);
    Ok(Built::Source(Box::new(Stripe::new(
        http,
        ctx.connector.streams.clone(),
        crm_key,
        ctx.connector.page_size,
    ))))
}

/// Stripe's own retry advice wins over the status code.
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    _: &[u8],
    _: DateTime<Utc>,
) -> Option<Classified> {
    let should_retry = headers.get("stripe-should-retry")?.to_str().ok()?;
    match (should_retry, status) {
        ("true", StatusCode::TOO_MANY_REQUESTS) => {
            Some(Classified::RateLimited { retry_after: None })
        }
        ("true", _) => Some(Classified::Transient),
        _ => None,
    }
}

pub struct Stripe {
    http: HttpClient,
    streams: Vec<String>,
    crm_key: String,
    limit: u32,
}

impl Stripe {
    pub fn new(
        http: HttpClient,
        streams: Vec<String>,
        crm_key: String,
        page_size: Option<u32>,
    ) -> Stripe {
        Stripe {
            http,
            streams,
            crm_key,
            limit: page_size.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
        }
    }

    async fn fetch(&self, stream: &str, cursor: Option<&Cursor>) -> Result<Page, SourceError> {
        if !SPEC.streams.contains(&stream) {
            return Err(SourceError::UnknownStream(stream.to_string()));
        }
        let connector = self.http.connector();
        let state = StreamCursor::load(cursor, stream, connector)?;
        let mut run = state.current_run();
        if stream != "invoices" {
            run.since = None;
        }
        let mut query = vec![("limit", self.limit.to_string())];
        if stream == "subscriptions" {
            query.push(("status", "all".to_string()));
        }
        if let Some(since) = run.since {
            query.push(("created[gte]", since.timestamp().to_string()));
        }
        if let Some(after) = &run.token {
            query.push(("starting_after", after.clone()));
        }
        let mut body = self.http.get_json(&format!("/v1/{stream}"), &query).await?;
        let data = common::take_list(&mut body, "data")
            .ok_or_else(|| common::malformed(stream, connector, "response has no `data` list"))?;
        let has_more = body
            .get("has_more")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let next = if has_more {
            let last = data.last().ok_or_else(|| {
                common::malformed(stream, connector, "`has_more` is true but `data` is empty")
            })?;
            Some(common::id_of(last.get("id")).ok_or_else(|| {
                common::malformed(
                    stream,
                    connector,
                    "the page's last object has no `id` to page after",
                )
            })?)
        } else {
            None
        };

        let count = data.len();
        let (page, max) = common::map_page(data, |obj| self.map_object(stream, obj));
        state.finish_page(run, page, max, count, next, stream, connector)
    }

    /// Maps one Stripe object; the mark is on `created`, the only time Stripe lists filter by.
    fn map_object(&self, stream: &str, obj: Value) -> Result<(Record, Mark), RejectedRecord> {
        let id =
            common::id_of(obj.get("id")).ok_or_else(|| common::rejected(None, "missing `id`"))?;
        let created = common::unix_seconds(obj.get("created"))
            .ok_or_else(|| common::rejected(Some(&id), "missing or unreadable `created`"))?;
        let later: Vec<Option<&Value>> = match stream {
            "subscriptions" => vec![obj.get("canceled_at"), obj.get("ended_at")],
            "invoices" => obj
                .get("status_transitions")
                .and_then(Value::as_object)
                .map(|t| t.values().map(Some).collect())
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let updated_at = later
            .into_iter()
            .filter_map(common::unix_seconds)
            .fold(created, DateTime::max);
        let mut account_keys = BTreeMap::new();
        if stream == "customers" {
            account_keys.insert("stripe_customer".to_string(), id.clone());
            if let Some(crm) =
                common::id_of(obj.pointer(&format!("/metadata/{}", pointer_escape(&self.crm_key))))
            {
                account_keys.insert("crm_id".to_string(), crm);
            }
        } else {
            let customer = obj.get("customer");
            let customer_id = common::id_of(customer)
                .or_else(|| common::id_of(customer.and_then(|c| c.get("id"))));
            if let Some(c) = customer_id {
                account_keys.insert("stripe_customer".to_string(), c);
            }
        }
        let fields = common::into_object(obj, &id)?;
        let mark = Mark {
            updated_at: created,
            id: id.clone(),
        };
        Ok((
            Record {
                id,
                updated_at,
                account_keys,
                fields,
            },
            mark,
        ))
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Source for Stripe {
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
mod tests {
    use super::*;
    use crate::http::testing::bearer_client;
    use serde_json::json;
    use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// A customer as in Stripe's 2023-09-12 fixtures.
    fn customer(id: &str, created: i64, crm: Option<&str>) -> Value {
        let metadata = match crm {
            Some(c) => json!({"hubspot_company_id": c}),
            None => json!({}),
        };
        json!({
            "id": id, "object": "customer", "address": null, "balance": 0, "created": created,
            "currency": "usd", "default_source": null, "delinquent": false, "description": null,
            "email": format!("billing@{id}.example"), "invoice_prefix": "F79089B", "livemode": false,
            "metadata": metadata, "name": null, "next_invoice_sequence": 1, "phone": null,
            "preferred_locales": [], "shipping": null, "tax_exempt": "none", "test_clock": null,
        })
    }

    fn invoice(id: &str, created: i64, paid_at: Option<i64>) -> Value {
        json!({
            "id": id, "object": "invoice", "amount_due": 1000, "amount_paid": 0, "created": created,
            "currency": "usd", "customer": "cus_A", "status": if paid_at.is_some() { "paid" } else { "open" },
            "status_transitions": {"finalized_at": created, "marked_uncollectible_at": null, "paid_at": paid_at, "voided_at": null},
            "livemode": false, "metadata": {},
        })
    }

    fn list(url: &str, data: Vec<Value>, has_more: bool) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "url": url, "has_more": has_more, "data": data}),
        )
    }

    fn source(server: &MockServer) -> Stripe {
        let (http, _) = bearer_client(&server.uri());
        Stripe::new(
            http.with_classifier(classify),
            SPEC.streams.iter().map(|s| s.to_string()).collect(),
            DEFAULT_CRM_KEY.into(),
            None,
        )
    }

    async fn run_to_end(
        src: &Stripe,
        stream: &str,
        mut cursor: Option<Cursor>,
    ) -> (Vec<Record>, Vec<RejectedRecord>, Cursor, usize) {
        let (mut records, mut rejected, mut pages) = (Vec::new(), Vec::new(), 0);
        loop {
            let page = src.fetch_page(stream, cursor.as_ref()).await.unwrap();
            pages += 1;
            records.extend(page.records);
            rejected.extend(page.rejected);
            cursor = Some(page.cursor);
            if page.done {
                return (records, rejected, cursor.unwrap_or_default(), pages);
            }
            assert!(pages < 20, "runaway paging");
        }
    }

    #[tokio::test]
    async fn customers_across_pages_with_keys_and_a_rejected_record() {
        let server = MockServer::start().await;
        let base = || {
            Mock::given(method("GET"))
                .and(path("/v1/customers"))
                .and(header("authorization", "Bearer tok_test"))
                .and(query_param("limit", "100"))
        };
        base()
            .and(query_param_is_missing("starting_after"))
            .respond_with(list(
                "/v1/customers",
                vec![
                    customer("cus_C", 300, Some("101")),
                    customer("cus_B", 200, None),
                ],
                true,
            ))
            .mount(&server)
            .await;
        base()
            .and(query_param("starting_after", "cus_B"))
            .respond_with(list(
                "/v1/customers",
                vec![
                    json!({"object": "customer", "created": 150}),
                    customer("cus_A", 100, None),
                ],
                true,
            ))
            .mount(&server)
            .await;
        base()
            .and(query_param("starting_after", "cus_A"))
            .respond_with(list(
                "/v1/customers",
                vec![customer("cus_0", 50, None)],
                false,
            ))
            .mount(&server)
            .await;
        let src = source(&server);
        let (records, rejected, cursor, pages) = run_to_end(&src, "customers", None).await;
        assert_eq!(pages, 3);
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["cus_C", "cus_B", "cus_A", "cus_0"]
        );
        assert_eq!(rejected, vec![common::rejected(None, "missing `id`")]);
        assert_eq!(
            records[0].account_keys.get("crm_id").map(String::as_str),
            Some("101")
        );
        assert_eq!(
            records[0]
                .account_keys
                .get("stripe_customer")
                .map(String::as_str),
            Some("cus_C")
        );
        assert!(!records[1].account_keys.contains_key("crm_id"));
        assert_eq!(records[0].fields["email"], json!("billing@cus_C.example"));

        // Customers have no updated filter: the next run re-lists from the start.
        let (records, _, _, _) = run_to_end(&src, "customers", Some(cursor)).await;
        assert_eq!(records.len(), 4);
        let reqs = server.received_requests().await.unwrap();
        assert!(reqs
            .iter()
            .all(|r| !r.url.query().unwrap_or("").contains("created")));
    }

    #[tokio::test]
    async fn invoices_second_run_filters_on_created() {
        let server = MockServer::start().await;
        Mock::given(path("/v1/invoices"))
            .and(query_param_is_missing("created[gte]"))
            .respond_with(list(
                "/v1/invoices",
                vec![
                    invoice("in_2", 1_700_000_000, Some(1_700_100_000)),
                    invoice("in_1", 1_690_000_000, None),
                ],
                false,
            ))
            .expect(1)
            .mount(&server)
            .await;
        // High-water mark: created 1_700_000_000, minus 300 s of lookback.
        Mock::given(path("/v1/invoices"))
            .and(query_param("created[gte]", "1699999700"))
            .respond_with(list(
                "/v1/invoices",
                vec![invoice("in_3", 1_700_500_000, None)],
                false,
            ))
            .expect(1)
            .mount(&server)
            .await;
        let src = source(&server);
        let (records, _, cursor, _) = run_to_end(&src, "invoices", None).await;
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].updated_at.timestamp(),
            1_700_100_000,
            "paid_at is the latest transition"
        );
        assert_eq!(
            records[0]
                .account_keys
                .get("stripe_customer")
                .map(String::as_str),
            Some("cus_A")
        );
        let (records, _, _, _) = run_to_end(&src, "invoices", Some(cursor)).await;
        assert_eq!(
            records.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["in_3"]
        );
    }

    #[tokio::test]
    async fn subscriptions_resume_mid_run_and_include_canceled() {
        let server = MockServer::start().await;
        let sub = |id: &str, canceled: Option<i64>| {
            json!({"id": id, "object": "subscription", "created": 1_000, "canceled_at": canceled, "ended_at": canceled,
                   "customer": {"id": "cus_X", "object": "customer"}, "status": if canceled.is_some() { "canceled" } else { "active" }})
        };
        Mock::given(path("/v1/subscriptions"))
            .and(query_param("status", "all"))
            .and(query_param_is_missing("starting_after"))
            .respond_with(list("/v1/subscriptions", vec![sub("sub_3", None)], true))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v1/subscriptions"))
            .and(query_param("status", "all"))
            .and(query_param("starting_after", "sub_3"))
            .respond_with(list(
                "/v1/subscriptions",
                vec![sub("sub_2", Some(5_000))],
                true,
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/v1/subscriptions"))
            .and(query_param("starting_after", "sub_2"))
            .respond_with(list("/v1/subscriptions", vec![sub("sub_1", None)], false))
            .expect(1)
            .mount(&server)
            .await;
        let src = source(&server);
        let p1 = src.fetch_page("subscriptions", None).await.unwrap();
        let (records, _, _, pages) =
            run_to_end(&source(&server), "subscriptions", Some(p1.cursor)).await;
        assert_eq!(pages, 2);
        assert_eq!(records[0].id, "sub_2");
        assert_eq!(records[0].updated_at.timestamp(), 5_000);
        assert_eq!(
            records[0]
                .account_keys
                .get("stripe_customer")
                .map(String::as_str),
            Some("cus_X")
        );
    }

    #[tokio::test]
    async fn repeated_starting_after_is_an_error() {
        let server = MockServer::start().await;
        Mock::given(path("/v1/customers"))
            .respond_with(list(
                "/v1/customers",
                vec![customer("cus_same", 1, None)],
                true,
            ))
            .mount(&server)
            .await;
        let src = source(&server);
        let p1 = src.fetch_page("customers", None).await.unwrap();
        let err = src
            .fetch_page("customers", Some(&p1.cursor))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("page token `cus_same` again"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn rate_limit_without_retry_after_backs_off() {
        let server = MockServer::start().await;
        Mock::given(path("/v1/customers"))
            .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {
                "type": "invalid_request_error", "code": "rate_limit",
                "message": "Too many requests hit the API too quickly."}})))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        Mock::given(path("/v1/customers"))
            .respond_with(list(
                "/v1/customers",
                vec![customer("cus_1", 1, None)],
                false,
            ))
            .mount(&server)
            .await;
        let (http, clock) = bearer_client(&server.uri());
        let src = Stripe::new(
            http.with_classifier(classify),
            vec!["customers".into()],
            DEFAULT_CRM_KEY.into(),
            None,
        );
        let page = src.fetch_page("customers", None).await.unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(clock.sleeps().len(), 2);
    }

    #[test]
    fn params_are_validated() {
        let ok: toml::Table = toml::from_str("crm_id_metadata_key = \"crm_id\"").unwrap();
        assert!(validate_params(&ok).is_ok());
        let bad: toml::Table = toml::from_str("crm_id_metadata_key = 3").unwrap();
        assert!(validate_params(&bad).is_err());
        let unknown: toml::Table = toml::from_str("api_version = \"2023-09-12\"").unwrap();
        assert!(validate_params(&unknown).is_err());
    }
}
