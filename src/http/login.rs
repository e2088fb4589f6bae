//! Session-token logins for the HTTP engine: vendors whose API takes a token obtained by posting a
//! username (an email) and a password to a login endpoint of the API itself, then wants that token on
//! every request (ClientSuccess's `POST /v1/auth` → `{"access_token","expires_in"}`, sent back as a bare
//! `Authorization: <token>`).
//!
//! A kind opts in with [`super::HttpClient::with_login`] on a connector whose auth scheme is `basic` (so
//! the config holds a `username` and a `password` reference like any other Basic vendor); from then on
//! the Basic header is never sent, the login's token is. The token is cached as a `SecretString` until
//! shortly before its `expires_in`, and a 401 from the API drops it and retries the call once with a
//! fresh login (`mod.rs`, the same path as OAuth 2.0). The login body is JSON `{"username","password"}`.
//! Login failures are classified like OAuth token-endpoint failures (`oauth2.rs`): 400/401/403 are
//! refused credentials, 429 and 5xx are retried by the engine's loop. No credential, token or login
//! response body ever reaches an error message or a log line.
//!
//! This module knows no vendor: the path and the header's form come from the kind's [`LoginSpec`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::oauth2::{request_token, CachedToken, QuoteErrors, TokenCache};
use super::{Clock, HttpError, RequestTarget};

/// How a kind's vendor logs in: where, and how the token goes back on each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginSpec {
    /// The login endpoint, joined onto the connector's base URL like any call (`/v1/auth`).
    pub path: &'static str,
    /// Put before the token in the `Authorization` header: `None` sends the bare token (ClientSuccess),
    /// `Some("Bearer ")` a bearer token.
    pub header_prefix: Option<&'static str>,
}

/// The credentials of one connector's login and its cached token. `Debug` is not derived: nothing here
/// may be printed.
pub(super) struct Login {
    spec: LoginSpec,
    url: Url,
    username: SecretString,
    password: SecretString,
    cache: TokenCache,
}

impl Login {
    /// The credentials this login sends, for redacting an answer that echoes them (`super::redact`).
    pub(super) fn secret_values(&self) -> Vec<String> {
        vec![
            self.username.expose_secret().to_string(),
            self.password.expose_secret().to_string(),
        ]
    }

    pub(super) fn new(
        spec: LoginSpec,
        url: Url,
        username: SecretString,
        password: SecretString,
    ) -> Login {
        Login {
            spec,
            url,
            username,
            password,
            cache: TokenCache::default(),
        }
    }

    /// The `Authorization` header value for `token`.
    pub(super) fn header_value(&self, token: &SecretString) -> String {
        format!(
            "{}{}",
            self.spec.header_prefix.unwrap_or_default(),
            token.expose_secret()
        )
    }

    /// The cached token, or a fresh one when none is cached or it is about to expire.
    pub(super) async fn token(
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

    /// Drops the cached token: the API refused it (401), so the next request logs in again.
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
            path: self.url.path().to_string(),
        };
        let body = json!({
            "username": self.username.expose_secret(),
            "password": self.password.expose_secret(),
        });
        let request = client.post(self.url.clone()).json(&body);
        // A vendor's login answer has no defined error shape (unlike OAuth's RFC 6749 §5.2) and may
        // echo the user name: it is classified by status alone, its body never quoted.
        let expected = "a login response with an access token";
        let (_, access, expires_in) =
            request_token(request, &target, expected, QuoteErrors::No, now).await?;
        tracing::debug!(connector, expires_in, "logged in for a session token");
        Ok(CachedToken::new(access, now, expires_in))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::http::testing::{config, manual_clock, secrets};
    use crate::http::HttpClient;
    use crate::vocab::{AuthScheme, Role};

    const SPEC: LoginSpec = LoginSpec {
        path: "/v1/auth",
        header_prefix: None,
    };

    fn client(server: &MockServer) -> HttpClient {
        let mut cfg = config("login", Role::Sink, &server.uri(), AuthScheme::Basic);
        let s = secrets(
            &mut cfg,
            &[("username", "user@x"), ("password", "pw-secret")],
        );
        HttpClient::new(&cfg, &s)
            .unwrap()
            .with_clock(manual_clock())
            .with_login(SPEC)
            .unwrap()
    }

    #[test]
    fn only_basic_connectors_with_a_password_can_log_in() {
        let mut cfg = config(
            "login",
            Role::Sink,
            "http://127.0.0.1:9",
            AuthScheme::Bearer,
        );
        let s = secrets(&mut cfg, &[("token", "t")]);
        let err = HttpClient::new(&cfg, &s)
            .unwrap()
            .with_login(SPEC)
            .unwrap_err();
        assert!(err.to_string().contains("`password`"), "{err}");
    }

    #[tokio::test]
    async fn concurrent_calls_share_one_login_and_nothing_secret_is_printed() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/auth"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"access_token": "tok-1", "expires_in": 43200})),
            )
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api"))
            .and(header("authorization", "tok-1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
            .expect(5)
            .mount(&server)
            .await;
        let http = Arc::new(client(&server));
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let h = Arc::clone(&http);
                tokio::spawn(async move { h.get_json("/api", &[]).await })
            })
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap().unwrap(), json!({"ok": true}));
        }
        let shown = format!("{http:?}");
        assert!(shown.contains("login"), "{shown}");
        for secret in ["pw-secret", "user@x", "tok-1"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[tokio::test]
    async fn a_login_answer_without_a_token_is_a_decode_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v1/auth"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token_type": "Bearer"})))
            .mount(&server)
            .await;
        let err = client(&server).get_json("/api", &[]).await.unwrap_err();
        assert!(
            matches!(&err, HttpError::Decode { reason, .. } if reason.contains("access_token")),
            "{err:?}"
        );
        assert!(!err.to_string().contains("pw-secret"));
    }

    #[tokio::test]
    async fn a_refused_login_never_quotes_the_vendors_answer() {
        let server = MockServer::start().await;
        // Vendors' login errors have no defined shape; this one echoes the user name back.
        Mock::given(method("POST"))
            .and(path("/v1/auth"))
            .respond_with(
                ResponseTemplate::new(404)
                    .set_body_json(json!({"error": "no user user@x", "detail": "user@x unknown"})),
            )
            .mount(&server)
            .await;
        let err = client(&server).get_json("/api", &[]).await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(&err, HttpError::Permanent { .. }), "{shown}");
        assert!(!shown.contains("user@x"), "{shown}");
    }
}
