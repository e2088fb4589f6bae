//! OAuth 2.0 access tokens for the HTTP engine: the client-credentials grant (RFC 6749 §4.4) and the
//! refresh-token grant (§6), with the token cached until shortly before `expires_in` runs out (or, for
//! vendors that send no expiry such as Salesforce, until the API answers 401).
//!
//! The token request is `POST token_url` with an `application/x-www-form-urlencoded` body carrying
//! `grant_type`, `client_id`, `client_secret` (and `refresh_token`, `scope`): RFC 6749 §2.3.1 allows the
//! credentials in the body, and Salesforce's token endpoint documents that form. The JSON answer's
//! `access_token` is kept as a `SecretString`; a rotated `refresh_token` in the answer replaces the stored one
//! (in memory only). Token-endpoint failures are classified like any response: 400/401 (`invalid_grant`,
//! `invalid_client`) are credential errors, 429/5xx/network errors are retried by the engine's loop. No token,
//! secret or token-endpoint success body ever reaches an error message or a log line.
//!
//! This module does not decide when to retry the API call after a 401 (that is `mod.rs`: exactly once, after
//! dropping the cached token) and knows nothing about any vendor's API.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::retry::{default_classify, Classified};
use super::{excerpt, network_error, Clock, HttpError, RequestTarget};
use crate::secrets::ResolvedSecrets;
use crate::vocab::AuthScheme;

/// A token is renewed this long before its announced expiry, so a request never leaves with a token that
/// expires in flight.
const EXPIRY_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    ClientCredentials,
    RefreshToken,
}

/// An access token and when it expires (`None`: the endpoint did not say).
pub(super) struct CachedToken {
    pub(super) access: SecretString,
    pub(super) expires_at: Option<DateTime<Utc>>,
}

impl CachedToken {
    /// A token that expires `expires_in` seconds after `now`, when the endpoint gave a positive lifetime.
    pub(super) fn new(
        access: SecretString,
        now: DateTime<Utc>,
        expires_in: Option<i64>,
    ) -> CachedToken {
        CachedToken {
            access,
            expires_at: expires_in
                .filter(|s| *s > 0)
                .map(|s| now + chrono::Duration::seconds(s)),
        }
    }
}

/// One cached token shared by a connector's requests, for OAuth2 grants and session logins alike. The lock
/// is held across a fetch, so concurrent callers wait for one fetch instead of each fetching.
#[derive(Default)]
pub(super) struct TokenCache(tokio::sync::Mutex<Option<CachedToken>>);

impl TokenCache {
    /// The cached token, or the one `fetch` returns when none is cached or it is about to expire.
    pub(super) async fn get_or_fetch<F, Fut, E>(
        &self,
        now: DateTime<Utc>,
        fetch: F,
    ) -> Result<SecretString, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, E>>,
    {
        let mut cache = self.0.lock().await;
        if let Some(t) = cache.as_ref() {
            if t.expires_at.is_none_or(|at| now + EXPIRY_MARGIN < at) {
                return Ok(t.access.clone());
            }
        }
        let fresh = fetch().await?;
        let access = fresh.access.clone();
        *cache = Some(fresh);
        Ok(access)
    }

    /// Drops the cached token: the API refused it (401), so the next request fetches a new one.
    pub(super) async fn invalidate(&self) {
        *self.0.lock().await = None;
    }
}

/// The OAuth 2.0 settings of one connector and its cached access token. `Debug` is not derived: nothing
/// here may be printed.
pub(super) struct OAuth2 {
    grant: Grant,
    token_url: Url,
    client_id: SecretString,
    client_secret: SecretString,
    /// Behind a lock because a token endpoint may rotate it with every use.
    refresh_token: Mutex<Option<SecretString>>,
    scope: Option<String>,
    cache: TokenCache,
}

impl OAuth2 {
    /// The credentials this grant sends, for redacting an answer that echoes them (`super::redact`).
    pub(super) fn secret_values(&self) -> Vec<String> {
        let mut out = vec![
            self.client_id.expose_secret().to_string(),
            self.client_secret.expose_secret().to_string(),
        ];
        if let Ok(Some(r)) = self.refresh_token.lock().as_deref() {
            out.push(r.expose_secret().to_string());
        }
        out
    }

    pub(super) fn scheme_name(&self) -> &'static str {
        match self.grant {
            Grant::ClientCredentials => AuthScheme::OAuth2ClientCredentials.name(),
            Grant::RefreshToken => AuthScheme::OAuth2RefreshToken.name(),
        }
    }

    pub(super) fn from_endpoint(
        config: &super::Endpoint<'_>,
        secrets: &ResolvedSecrets,
    ) -> Result<OAuth2, HttpError> {
        let err = |reason: String| HttpError::Config {
            connector: config.connector.to_string(),
            reason,
        };
        let grant = match config.auth.scheme {
            AuthScheme::OAuth2RefreshToken => Grant::RefreshToken,
            _ => Grant::ClientCredentials,
        };
        let settings = config.auth.oauth2.as_ref().ok_or_else(|| {
            err(format!(
                "auth scheme {} needs token_url, client_id and client_secret",
                config.auth.scheme.name()
            ))
        })?;
        let get = |name: &str| {
            secrets.get(name).cloned().ok_or_else(|| {
                err(format!(
                    "auth scheme {} needs secret `{name}`",
                    config.auth.scheme.name()
                ))
            })
        };
        let refresh_token = match grant {
            Grant::RefreshToken => Some(get("refresh_token")?),
            Grant::ClientCredentials => None,
        };
        Ok(OAuth2 {
            grant,
            token_url: settings.token_url.clone(),
            client_id: get("client_id")?,
            client_secret: get("client_secret")?,
            refresh_token: Mutex::new(refresh_token),
            scope: settings.scope.clone(),
            cache: TokenCache::default(),
        })
    }

    /// The current access token, fetching a new one when none is cached or the cached one is about to
    /// expire. On failure also returns how long the token endpoint asked us to wait, if it did.
    pub(super) async fn access_token(
        &self,
        client: &reqwest::Client,
        clock: &dyn Clock,
        connector: &str,
    ) -> Result<SecretString, (HttpError, Option<Duration>)> {
        let now = clock.now();
        self.cache
            .get_or_fetch(now, || self.fetch(client, now, connector))
            .await
    }

    /// Drops the cached token: the API refused it (401), so the next request fetches a new one.
    pub(super) async fn invalidate(&self) {
        self.cache.invalidate().await;
    }

    async fn fetch(
        &self,
        client: &reqwest::Client,
        now: DateTime<Utc>,
        connector: &str,
    ) -> Result<CachedToken, (HttpError, Option<Duration>)> {
        let target = RequestTarget {
            connector: connector.to_string(),
            method: "POST".into(),
            path: self.token_url.path().to_string(),
        };
        let body = self.form_body();
        let content_type = HeaderValue::from_static("application/x-www-form-urlencoded");
        let request = client
            .post(self.token_url.clone())
            .header(CONTENT_TYPE, content_type)
            .body(body);
        let expected = "an oauth2 token response";
        let (json, access, expires_in) = request_token(
            request,
            &target,
            expected,
            QuoteErrors::Redacted(&self.secret_values()),
            now,
        )
        .await?;
        if let Some(kind) = json.get("token_type").and_then(Value::as_str) {
            if !kind.eq_ignore_ascii_case("bearer") {
                let err = HttpError::Decode {
                    target,
                    expected: expected.into(),
                    reason: format!("token_type `{kind}` is not bearer"),
                };
                return Err((err, None));
            }
        }
        if let Some(Value::String(rotated)) = json.get("refresh_token") {
            if self.grant == Grant::RefreshToken && !rotated.is_empty() {
                if let Ok(mut r) = self.refresh_token.lock() {
                    *r = Some(SecretString::from(rotated.clone()));
                }
            }
        }
        tracing::debug!(
            connector,
            scheme = self.scheme_name(),
            expires_in,
            "fetched an oauth2 access token"
        );
        Ok(CachedToken::new(access, now, expires_in))
    }

    /// The form body of the grant, percent-encoded.
    fn form_body(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        match self.grant {
            Grant::ClientCredentials => pairs.push(("grant_type", "client_credentials".into())),
            Grant::RefreshToken => {
                pairs.push(("grant_type", "refresh_token".into()));
                let token = self
                    .refresh_token
                    .lock()
                    .ok()
                    .and_then(|r| r.as_ref().map(|t| t.expose_secret().to_string()))
                    .unwrap_or_default();
                pairs.push(("refresh_token", token));
            }
        }
        pairs.push(("client_id", self.client_id.expose_secret().to_string()));
        pairs.push((
            "client_secret",
            self.client_secret.expose_secret().to_string(),
        ));
        if let Some(scope) = &self.scope {
            pairs.push(("scope", scope.clone()));
        }
        form_urlencode(&pairs)
    }
}

/// `application/x-www-form-urlencoded` serialisation (WHATWG URL), via `Url`'s own encoder.
fn form_urlencode(pairs: &[(&str, String)]) -> String {
    let mut url = match Url::parse("http://form.invalid/") {
        Ok(u) => u,
        Err(_) => return String::new(),
    };
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    url.query().unwrap_or_default().to_string()
}

/// Whether a token endpoint's error answer may be quoted in errors and logs: OAuth's error bodies are
/// defined (RFC 6749 §5.2: an error code) and are quoted with these credentials redacted; a vendor's own
/// login answer is not defined, may echo the user name, and is never quoted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuoteErrors<'a> {
    Redacted(&'a [String]),
    No,
}

/// Sends a token request and reads the answer: the decoded JSON, its `access_token` and `expires_in`
/// (seconds, as a number or a string). A refusal is classified like any token endpoint's
/// ([`classify_token_error`]); an answer without an access token is a decode error naming `expected`.
pub(super) async fn request_token(
    request: reqwest::RequestBuilder,
    target: &RequestTarget,
    expected: &str,
    quote: QuoteErrors<'_>,
    now: DateTime<Utc>,
) -> Result<(Value, SecretString, Option<i64>), (HttpError, Option<Duration>)> {
    let network = |e: reqwest::Error| (network_error(target, &e), None);
    let resp = request.send().await.map_err(network)?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map_err(network)?;
    if !status.is_success() {
        let redacted;
        let body: &[u8] = match quote {
            QuoteErrors::Redacted(secrets) => {
                redacted = super::redact(&bytes, secrets);
                &redacted
            }
            QuoteErrors::No => &[],
        };
        return Err(classify_token_error(
            target.clone(),
            status,
            &headers,
            body,
            now,
        ));
    }
    let decode = |reason: String| {
        let err = HttpError::Decode {
            target: target.clone(),
            expected: expected.into(),
            reason,
        };
        (err, None)
    };
    // serde_json's messages name positions and field names, never the values.
    let json: Value = serde_json::from_slice(&bytes).map_err(|e| decode(e.to_string()))?;
    let access = match json.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => SecretString::from(s.clone()),
        _ => return Err(decode("no `access_token` string".into())),
    };
    let expires_in = match json.get("expires_in") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse::<i64>().ok(),
        _ => None,
    };
    Ok((json, access, expires_in))
}

/// A failed token request. `invalid_grant`/`invalid_client` (400 or 401) mean the stored credentials are
/// wrong, expired or revoked: an auth error that no retry can fix. The body of an error answer is the RFC
/// 6749 §5.2 `{"error","error_description"}`, which carries no secret, so its `error` code is kept.
fn classify_token_error(
    target: RequestTarget,
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    bytes: &[u8],
    now: DateTime<Utc>,
) -> (HttpError, Option<Duration>) {
    let code = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    match (status.as_u16(), default_classify(status, headers, now)) {
        (400 | 401 | 403, _) => {
            let reason = code.unwrap_or_else(|| excerpt(bytes));
            tracing::warn!(connector = %target.connector, status = status.as_u16(), error = %reason, "token request refused");
            (HttpError::Auth { target, status }, None)
        }
        (_, Classified::RateLimited { retry_after }) => (
            HttpError::RateLimited {
                target,
                retry_after,
            },
            retry_after,
        ),
        (_, Classified::Transient) => {
            let hint = super::retry_after(headers, now);
            let reason = format!("token endpoint: http {}", status.as_u16());
            let err = HttpError::Transient {
                target,
                status: Some(status),
                reason,
            };
            (err, hint)
        }
        _ => (
            HttpError::Permanent {
                target,
                status,
                body_excerpt: code.unwrap_or_else(|| excerpt(bytes)),
            },
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::http::testing::{manual_clock, oauth2_config};
    use crate::http::{HttpClient, ManualClock};

    fn client(server: &MockServer, scheme: AuthScheme) -> (HttpClient, Arc<ManualClock>) {
        let token_url = format!("{}/services/oauth2/token", server.uri());
        let (cfg, secrets) = oauth2_config("salesforce", &server.uri(), &token_url, scheme);
        let clock = manual_clock();
        let http = HttpClient::new(&cfg, &secrets)
            .expect("client")
            .with_clock(clock.clone());
        (http, clock)
    }

    /// The token endpoint hands out `at-1`, `at-2`, … in order, each valid for `expires_in` if given.
    async fn mount_tokens(server: &MockServer, grant: &str, expires_in: Option<i64>, count: usize) {
        for i in 1..=count {
            let mut body = json!({
                "access_token": format!("at-{i}"),
                "instance_url": server.uri(),
                "id": "https://login.salesforce.com/id/00D/005",
                "token_type": "Bearer",
                "issued_at": "1700000000000",
                "signature": "sig",
            });
            if let Some(e) = expires_in {
                body["expires_in"] = json!(e);
            }
            Mock::given(method("POST"))
                .and(path("/services/oauth2/token"))
                .and(header("content-type", "application/x-www-form-urlencoded"))
                .and(body_string_contains(format!("grant_type={grant}")))
                .and(body_string_contains("client_id=cid_test"))
                .and(body_string_contains("client_secret=csecret_test"))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .up_to_n_times(1)
                .expect(1)
                .mount(server)
                .await;
        }
    }

    async fn api_ok(server: &MockServer, token: &str) {
        Mock::given(method("GET"))
            .and(path("/api"))
            .and(header("authorization", format!("Bearer {token}").as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": token})))
            .mount(server)
            .await;
    }

    #[tokio::test]
    async fn client_credentials_token_is_cached_across_calls() {
        let server = MockServer::start().await;
        mount_tokens(&server, "client_credentials", None, 1).await;
        api_ok(&server, "at-1").await;
        let (http, _) = client(&server, AuthScheme::OAuth2ClientCredentials);
        for _ in 0..3 {
            assert_eq!(
                http.get_json("/api", &[]).await.unwrap(),
                json!({"ok": "at-1"})
            );
        }
        // `expect(1)` on the token mock is verified when the server drops.
    }

    #[tokio::test]
    async fn a_401_refreshes_the_token_and_retries_once() {
        let server = MockServer::start().await;
        mount_tokens(&server, "refresh_token", None, 2).await;
        Mock::given(path("/api"))
            .and(header("authorization", "Bearer at-1"))
            .respond_with(ResponseTemplate::new(401).set_body_json(json!([
                {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
            ])))
            .expect(1)
            .mount(&server)
            .await;
        api_ok(&server, "at-2").await;
        let (http, clock) = client(&server, AuthScheme::OAuth2RefreshToken);
        assert_eq!(
            http.get_json("/api", &[]).await.unwrap(),
            json!({"ok": "at-2"})
        );
        assert!(
            clock.sleeps().is_empty(),
            "a token refresh is not a backoff"
        );
        let token_calls = server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == "/services/oauth2/token")
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .collect::<Vec<_>>();
        assert_eq!(token_calls.len(), 2);
        assert!(
            token_calls[0].contains("refresh_token=rt_test"),
            "{}",
            token_calls[0]
        );
    }

    #[tokio::test]
    async fn a_second_401_is_an_auth_error_without_looping() {
        let server = MockServer::start().await;
        mount_tokens(&server, "client_credentials", None, 2).await;
        Mock::given(path("/api"))
            .respond_with(ResponseTemplate::new(401))
            .expect(2)
            .mount(&server)
            .await;
        let (http, _) = client(&server, AuthScheme::OAuth2ClientCredentials);
        let err = http.get_json("/api", &[]).await.unwrap_err();
        assert!(
            matches!(err, HttpError::Auth { status, .. } if status == 401),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_expiring_token_is_renewed_before_use() {
        let server = MockServer::start().await;
        mount_tokens(&server, "client_credentials", Some(3600), 2).await;
        api_ok(&server, "at-1").await;
        let (http, clock) = client(&server, AuthScheme::OAuth2ClientCredentials);
        http.get_json("/api", &[]).await.unwrap();
        clock.sleep(Duration::from_secs(3550)).await;
        server.reset().await;
        mount_tokens(&server, "client_credentials", Some(3600), 1).await;
        Mock::given(method("GET"))
            .and(path("/api"))
            .and(header("authorization", "Bearer at-1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": "renewed"})))
            .expect(1)
            .mount(&server)
            .await;
        // 50 s before expiry is inside the 60 s margin: a new token (the reset server's `at-1`) is fetched.
        assert_eq!(
            http.get_json("/api", &[]).await.unwrap(),
            json!({"ok": "renewed"})
        );
    }

    #[tokio::test]
    async fn refused_credentials_are_an_auth_error_that_names_no_secret() {
        let server = MockServer::start().await;
        Mock::given(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant", "error_description": "authentication failure"
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(path("/api"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&server)
            .await;
        let (http, _) = client(&server, AuthScheme::OAuth2RefreshToken);
        let err = http.get_json("/api", &[]).await.unwrap_err();
        assert!(matches!(err, HttpError::Auth { .. }), "{err:?}");
        let text = format!("{err} {err:?} {http:?}");
        assert!(text.contains("/services/oauth2/token"), "{text}");
        for secret in ["cid_test", "csecret_test", "rt_test"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[tokio::test]
    async fn a_token_endpoint_outage_is_retried_with_backoff() {
        let server = MockServer::start().await;
        Mock::given(path("/services/oauth2/token"))
            .respond_with(ResponseTemplate::new(503))
            .up_to_n_times(2)
            .mount(&server)
            .await;
        mount_tokens(&server, "client_credentials", None, 1).await;
        api_ok(&server, "at-1").await;
        let (http, clock) = client(&server, AuthScheme::OAuth2ClientCredentials);
        assert_eq!(
            http.get_json("/api", &[]).await.unwrap(),
            json!({"ok": "at-1"})
        );
        assert_eq!(clock.sleeps().len(), 2);
    }

    #[test]
    fn form_bodies_are_percent_encoded() {
        assert_eq!(
            form_urlencode(&[
                ("a", "x y&z=1".into()),
                ("scope", "api refresh_token".into())
            ]),
            "a=x+y%26z%3D1&scope=api+refresh_token"
        );
    }
}
