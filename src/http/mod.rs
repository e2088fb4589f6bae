//! The HTTP engine: the only builder of reqwest clients and the only place a secret becomes a header.
//!
//! One [`HttpClient`] per connector: rustls, the connector's timeout, user agent `healthsync/<version>`,
//! auth injected per request from the resolved secrets (bearer, basic, vendor header or query parameter, OAuth 2.0
//! client-credentials or refresh-token grants with a cached access token, `oauth2.rs`, or a vendor's own
//! username/password login with a cached session token, `login.rs`), a governor rate
//! limiter awaited before every attempt, and retries with full-jitter exponential backoff that honour
//! `Retry-After`. With OAuth 2.0 or a login, a 401 drops the cached token and the call is retried once with a
//! fresh one. Failures come back as a classified [`HttpError`] naming the connector, the method and the
//! request path (never the query string, never a header). A kind may install a [`Classifier`] to map its
//! vendor's throttle signals (HubSpot's daily quota, Vitally's `RateLimit-Reset`) onto the engine.
//!
//! This module does not know any vendor's paging or record shapes (the kinds do) and does not persist
//! anything. Time comes from an injectable [`Clock`] so retry waits are tested without sleeping.

pub mod clock;
mod lines;
pub mod local;
mod login;
mod oauth2;
mod retry;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod tests;
mod window;

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::secrets::{AuthConfig, ResolvedSecrets};
use crate::vocab::{AuthScheme, RateLimit};

pub use clock::{Clock, ManualClock, SystemClock};
pub use lines::LineStream;
pub use login::LoginSpec;
pub use retry::{default_classify, retry_after, Classified, Classifier, RetryPolicy};
pub use window::{QuotaReader, WindowQuota};

/// How much of an error body an error message keeps.
const BODY_EXCERPT_CHARS: usize = 300;

/// What a request was: the connector, the method and the path (no query string: it may carry keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTarget {
    pub connector: String,
    pub method: String,
    pub path: String,
}

impl fmt::Display for RequestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connector {}: {} {}",
            self.connector, self.method, self.path
        )
    }
}

/// A classified HTTP failure. Messages name the connector and request path, never secrets or queries.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Throttled (429, or a vendor's equivalent) and the retries ran out or the wait was too long.
    #[error("{target}: rate limited{}", wait_suffix(.retry_after))]
    RateLimited {
        target: RequestTarget,
        retry_after: Option<Duration>,
    },
    /// A quota that does not refill within this run, e.g. HubSpot's daily limit. Not retried by the
    /// engine; a later run or delivery attempt may succeed.
    #[error("{target}: quota exhausted: {reason}")]
    QuotaExhausted {
        target: RequestTarget,
        reason: String,
    },
    /// 401/403 that is not throttling: the credentials are wrong or lack a scope.
    #[error("{target}: credentials refused (http {})", .status.as_u16())]
    Auth {
        target: RequestTarget,
        status: StatusCode,
    },
    /// Another 4xx: the request is wrong and retrying cannot help.
    #[error("{target}: http {}: {body_excerpt}", .status.as_u16())]
    Permanent {
        target: RequestTarget,
        status: StatusCode,
        body_excerpt: String,
    },
    /// 5xx, 408, a timeout or a broken connection, still failing after the retries.
    #[error("{target}: {reason}")]
    Transient {
        target: RequestTarget,
        status: Option<StatusCode>,
        reason: String,
    },
    /// The response was not what the caller expected.
    #[error("{target}: expected {expected}: {reason}")]
    Decode {
        target: RequestTarget,
        expected: String,
        reason: String,
    },
    /// The client could not be built (a missing secret, an invalid header name).
    #[error("connector {connector}: {reason}")]
    Config { connector: String, reason: String },
}

fn wait_suffix(d: &Option<Duration>) -> String {
    match d {
        Some(d) => format!(" (retry after {}s)", d.as_secs_f64().ceil() as u64),
        None => String::new(),
    }
}

impl HttpError {
    /// Whether a later attempt may succeed: throttling, quota, 5xx, timeouts, resets. The contract's
    /// `From<HttpError> for DeliveryError` turns these into `Transient` (the outbox retries later) and the
    /// rest into `Rejected`. Note that the engine itself does not retry `QuotaExhausted`.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            HttpError::RateLimited { .. }
                | HttpError::QuotaExhausted { .. }
                | HttpError::Transient { .. }
        )
    }

    /// Whether the request may have been received and acted on: a 5xx, or a network failure after the
    /// connection was made (a timeout, a reset, a broken answer). A throttle or a failed connect was not.
    pub fn may_have_reached_the_vendor(&self) -> bool {
        match self {
            HttpError::Transient {
                status: Some(_), ..
            } => true,
            HttpError::Transient {
                status: None,
                reason,
                ..
            } => reason != CONNECT_FAILED,
            HttpError::Decode { .. } => true,
            _ => false,
        }
    }

    /// The HTTP status behind the error, when there was a response.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            HttpError::Auth { status, .. } | HttpError::Permanent { status, .. } => Some(*status),
            HttpError::Transient { status, .. } => *status,
            _ => None,
        }
    }

    /// The request the error is about; none for a client that could not be built.
    fn target(&self) -> Option<&RequestTarget> {
        match self {
            HttpError::RateLimited { target, .. }
            | HttpError::QuotaExhausted { target, .. }
            | HttpError::Auth { target, .. }
            | HttpError::Permanent { target, .. }
            | HttpError::Transient { target, .. }
            | HttpError::Decode { target, .. } => Some(target),
            HttpError::Config { .. } => None,
        }
    }

    /// Whether the engine should retry now (within this call).
    fn retry_now(&self) -> bool {
        matches!(
            self,
            HttpError::RateLimited { .. } | HttpError::Transient { .. }
        )
    }
}

/// Credentials, held as secrets until the moment a request is built. `Debug` shows the scheme only.
enum Auth {
    Bearer(SecretString),
    Basic {
        username: SecretString,
        password: Option<SecretString>,
    },
    Header {
        name: HeaderName,
        value: SecretString,
    },
    /// A query parameter (`?appKey=…`); never part of an error or log line (they name the path only).
    Query {
        name: String,
        value: SecretString,
    },
    OAuth2(Box<oauth2::OAuth2>),
    /// A session token from the vendor's own login endpoint (`login.rs`), set by `HttpClient::with_login`.
    Login(Box<login::Login>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Auth::Bearer(_) => "bearer",
            Auth::Basic { .. } => "basic",
            Auth::Header { .. } => "api_key_header",
            Auth::Query { .. } => "api_key_query",
            Auth::OAuth2(o) => o.scheme_name(),
            Auth::Login(_) => "login",
        })
    }
}

impl Auth {
    fn from_endpoint(
        endpoint: &Endpoint<'_>,
        secrets: &ResolvedSecrets,
    ) -> Result<Auth, HttpError> {
        let missing = |name: &str| HttpError::Config {
            connector: endpoint.connector.to_string(),
            reason: format!(
                "auth scheme {} needs secret `{name}`",
                endpoint.auth.scheme.name()
            ),
        };
        let get = |name: &str| secrets.get(name).cloned().ok_or_else(|| missing(name));
        Ok(match endpoint.auth.scheme {
            AuthScheme::Bearer => Auth::Bearer(get("token")?),
            AuthScheme::Basic => Auth::Basic {
                username: get("username")?,
                password: secrets.get("password").cloned(),
            },
            AuthScheme::ApiKeyHeader => {
                let header = endpoint
                    .auth
                    .header
                    .as_deref()
                    .ok_or_else(|| HttpError::Config {
                        connector: endpoint.connector.to_string(),
                        reason: "auth scheme api_key_header needs `header`".into(),
                    })?;
                let name =
                    HeaderName::from_bytes(header.as_bytes()).map_err(|_| HttpError::Config {
                        connector: endpoint.connector.to_string(),
                        reason: format!("auth header `{header}` is not a valid header name"),
                    })?;
                let value = get("token")?;
                // Check once here that the value can be a header, so requests cannot fail on it later.
                HeaderValue::from_str(value.expose_secret()).map_err(|_| HttpError::Config {
                    connector: endpoint.connector.to_string(),
                    reason: "auth token contains characters not allowed in a header".into(),
                })?;
                Auth::Header { name, value }
            }
            AuthScheme::ApiKeyQuery => Auth::Query {
                name: endpoint
                    .auth
                    .param
                    .clone()
                    .ok_or_else(|| HttpError::Config {
                        connector: endpoint.connector.to_string(),
                        reason: "auth scheme api_key_query needs `param`".into(),
                    })?,
                value: get("token")?,
            },
            AuthScheme::OAuth2ClientCredentials | AuthScheme::OAuth2RefreshToken => {
                Auth::OAuth2(Box::new(oauth2::OAuth2::from_endpoint(endpoint, secrets)?))
            }
        })
    }

    /// Every credential this auth puts on the wire, as it appears there: the raw values, the base64 of
    /// `user:password` a Basic header carries, and `token` (the OAuth or session token of this attempt).
    fn wire_values(&self, token: Option<&SecretString>) -> Vec<String> {
        use base64::Engine as _;
        let mut out = Vec::new();
        match self {
            Auth::Bearer(t) => out.push(t.expose_secret().to_string()),
            Auth::Basic { username, password } => {
                let (u, p) = (
                    username.expose_secret(),
                    password.as_ref().map_or("", |p| p.expose_secret()),
                );
                out.push(u.to_string());
                out.push(p.to_string());
                out.push(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")));
            }
            Auth::Header { value, .. } | Auth::Query { value, .. } => {
                out.push(value.expose_secret().to_string())
            }
            Auth::OAuth2(o) => out.extend(o.secret_values()),
            Auth::Login(l) => out.extend(l.secret_values()),
        }
        if let Some(t) = token {
            out.push(t.expose_secret().to_string());
        }
        out
    }

    fn apply(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Auth::Bearer(token) => rb.bearer_auth(token.expose_secret()),
            Auth::Basic { username, password } => rb.basic_auth(
                username.expose_secret(),
                password.as_ref().map(|p| p.expose_secret()),
            ),
            Auth::Header { name, value } => match HeaderValue::from_str(value.expose_secret()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    rb.header(name.clone(), v)
                }
                // Unreachable: checked when the client was built.
                Err(_) => rb,
            },
            Auth::Query { name, value } => rb.query(&[(name.as_str(), value.expose_secret())]),
            // The access token is fetched asynchronously; `HttpClient::execute` sets it.
            Auth::OAuth2(_) | Auth::Login(_) => rb,
        }
    }

    /// Sets a fetched session token (OAuth 2.0 access token or login token) on a request.
    fn apply_token(
        &self,
        rb: reqwest::RequestBuilder,
        token: &SecretString,
    ) -> reqwest::RequestBuilder {
        match self {
            Auth::Login(l) => match HeaderValue::from_str(&l.header_value(token)) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    rb.header(reqwest::header::AUTHORIZATION, v)
                }
                // A token that cannot be a header is sent without one; the API answers 401.
                Err(_) => rb,
            },
            _ => rb.bearer_auth(token.expose_secret()),
        }
    }
}

/// A 2xx (or explicitly accepted) response, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON; `Null` when empty. For accepted non-2xx statuses a non-JSON body becomes a string.
    pub body: Value,
}

/// One request, described; see [`HttpClient::execute`].
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub method: &'a Method,
    /// Joined onto the connector's base URL, keeping the base URL's own path prefix.
    pub path: &'a str,
    pub query: &'a [(&'a str, String)],
    pub body: Option<&'a Value>,
    /// Non-2xx statuses the caller handles itself (returned as `Ok`, never retried), e.g. 404 or 409.
    pub accept: &'a [StatusCode],
    /// Extra request headers (not secrets), e.g. Salesforce's `Sforce-Query-Options`.
    pub headers: &'a [(&'a str, String)],
    /// The call creates something (a project, a task) that a second identical request would create
    /// again. A failure after the request may have reached the vendor (a timeout, a reset, a broken
    /// answer, a 5xx) is then not retried here: the caller's write is retried by the outbox, whose
    /// next attempt looks the key up before creating. Throttling and connect failures, where nothing
    /// was received, are still retried.
    pub creates: bool,
}

impl<'a> Call<'a> {
    pub fn new(method: &'a Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            query: &[],
            body: None,
            accept: &[],
            headers: &[],
            creates: false,
        }
    }
}

/// governor's GCRA limiter, measuring time on the engine's clock.
type Limiter = RateLimiter<NotKeyed, InMemoryState, clock::LimiterClock, NoOpMiddleware<Duration>>;

/// The HTTP client of one connector.
pub struct HttpClient {
    connector: String,
    base: Url,
    client: reqwest::Client,
    auth: Auth,
    rate_limit: RateLimit,
    /// The configured rate limit as governor's quota, kept to rebuild the limiter on a new clock.
    quota: Quota,
    limiter: Limiter,
    policy: RetryPolicy,
    classifier: Option<Classifier>,
    clock: Arc<dyn Clock>,
    /// Non-secret headers a kind sends on every request (e.g. `Intercom-Version`).
    extra_headers: HeaderMap,
    /// Rolling-window guard over the configured quota and the vendor-reported one (`window.rs`).
    send_log: Mutex<window::SendLog>,
    quota_reader: Option<QuotaReader>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("connector", &self.connector)
            .field("base_url", &self.base.as_str())
            .field("auth", &self.auth)
            .field("rate_limit", &self.rate_limit)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// What the engine needs to know of one connector to build its client: a borrowed view of the connector's
/// validated config (`crate::config` provides it with `From`), so the engine does not import the config
/// layer above it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint<'a> {
    /// The connector's id, named in every error and metric.
    pub connector: &'a str,
    pub base_url: &'a Url,
    pub auth: &'a AuthConfig,
    pub rate_limit: RateLimit,
    pub timeout: Duration,
}

impl HttpClient {
    /// Builds the connector's client. Fails when a secret the auth scheme needs was not resolved.
    pub fn new<'c>(
        endpoint: impl Into<Endpoint<'c>>,
        secrets: &ResolvedSecrets,
    ) -> Result<HttpClient, HttpError> {
        let config = endpoint.into();
        let auth = Auth::from_endpoint(&config, secrets)?;
        let config_error = |reason: String| HttpError::Config {
            connector: config.connector.to_string(),
            reason,
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .user_agent(concat!("healthsync/", env!("CARGO_PKG_VERSION")))
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .default_headers(headers)
            .build()
            .map_err(|e| config_error(format!("cannot build http client: {}", e.without_url())))?;
        let quota = quota(config.rate_limit).ok_or_else(|| {
            config_error("rate_limit must allow at least one request per period".into())
        })?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let limiter = RateLimiter::direct_with_clock(quota, clock::LimiterClock(clock.clone()));
        Ok(HttpClient {
            connector: config.connector.to_string(),
            base: config.base_url.clone(),
            client,
            auth,
            rate_limit: config.rate_limit,
            quota,
            limiter,
            policy: RetryPolicy::default(),
            classifier: None,
            clock,
            extra_headers: HeaderMap::new(),
            send_log: Mutex::new(window::SendLog::new(Some(WindowQuota {
                requests: config.rate_limit.requests,
                window: config.rate_limit.per,
            }))),
            quota_reader: None,
        })
    }

    /// Installs the kind's reader of the vendor's own quota headers: from then on no rolling window of the
    /// vendor's length holds more requests than the vendor says it allows, whatever the configured guess.
    pub fn with_quota_reader(mut self, reader: QuotaReader) -> HttpClient {
        self.quota_reader = Some(reader);
        self
    }

    /// Switches a `basic` connector to its vendor's session login (`login.rs`): the `username` and
    /// `password` secrets are posted to `spec.path` and the token it answers goes on every request instead
    /// of the Basic header. Fails when the connector is not `basic` or has no `password`.
    pub fn with_login(mut self, spec: LoginSpec) -> Result<HttpClient, HttpError> {
        let (username, password) = match &self.auth {
            Auth::Basic {
                username,
                password: Some(password),
            } => (username.clone(), password.clone()),
            _ => {
                return Err(HttpError::Config {
                    connector: self.connector.clone(),
                    reason: "a login needs auth scheme basic with a `username` and a `password`"
                        .into(),
                })
            }
        };
        let url = self.url(spec.path);
        self.auth = Auth::Login(Box::new(login::Login::new(spec, url, username, password)));
        Ok(self)
    }

    /// Installs the kind's throttle mapping, consulted before the default classification.
    pub fn with_classifier(mut self, classifier: Classifier) -> HttpClient {
        self.classifier = Some(classifier);
        self
    }

    /// Replaces the clock used for `Retry-After` dates, backoff and rate-limit waits. The rate limiter
    /// starts afresh on the new clock (this is a build-time setting; nothing has been sent yet).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> HttpClient {
        self.limiter =
            RateLimiter::direct_with_clock(self.quota, clock::LimiterClock(clock.clone()));
        self.clock = clock;
        self
    }

    /// Sends a fixed, non-secret header on every request (an API version pin such as `Intercom-Version`).
    pub fn with_header(mut self, name: &'static str, value: &'static str) -> HttpClient {
        self.extra_headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
        self
    }

    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> HttpClient {
        self.policy = policy;
        self
    }

    pub fn connector(&self) -> &str {
        &self.connector
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// `GET path?query`, expecting a JSON body.
    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> Result<Value, HttpError> {
        let call = Call {
            query,
            ..Call::new(&Method::GET, path)
        };
        Ok(self.execute(call).await?.body)
    }

    /// Sends `body` as JSON with `method` and returns the status and JSON body of the 2xx response.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: &Value,
    ) -> Result<(StatusCode, Value), HttpError> {
        let call = Call {
            body: Some(body),
            ..Call::new(&method, path)
        };
        let r = self.execute(call).await?;
        Ok((r.status, r.body))
    }

    /// The URL for `path` under the base URL: `http://h/hubspot` + `/crm/v3/x` → `http://h/hubspot/crm/v3/x`.
    pub fn url(&self, path: &str) -> Url {
        join_url(&self.base, path)
    }

    /// A request target for errors the caller raises about a response (naming connector and path).
    pub fn target(&self, method: &Method, path: &str) -> RequestTarget {
        RequestTarget {
            connector: self.connector.clone(),
            method: method.to_string(),
            path: self.url(path).path().to_string(),
        }
    }

    /// Sends one call with rate limiting and retries, returning the decoded response or a classified error.
    pub async fn execute(&self, call: Call<'_>) -> Result<JsonResponse, HttpError> {
        match self.run(call, false).await? {
            Attempted::Json(r) => Ok(r),
            Attempted::Stream(s) => Err(s.unexpected("a json body")),
        }
    }

    /// Sends one call like [`HttpClient::execute`] (rate limit, retries of throttling, 5xx and network
    /// errors before the body starts, the OAuth refresh), but hands back a 2xx body unread, to be consumed
    /// line by line: for exports too large to hold in memory. A failure while reading the body is not retried
    /// here (lines were already handed out); the caller fails the page and a later run resumes.
    pub async fn execute_lines(&self, call: Call<'_>) -> Result<LineStream, HttpError> {
        match self.run(call, true).await? {
            Attempted::Stream(s) => Ok(*s),
            Attempted::Json(r) => Err(HttpError::Decode {
                target: self.target(&Method::GET, ""),
                expected: "a streamed body".into(),
                reason: format!("got an accepted http {} instead", r.status.as_u16()),
            }),
        }
    }

    async fn run(&self, call: Call<'_>, stream: bool) -> Result<Attempted, HttpError> {
        let mut url = self.url(call.path);
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let target = RequestTarget {
            connector: self.connector.clone(),
            method: call.method.to_string(),
            path: url.path().to_string(),
        };
        let mut waited = Duration::ZERO;
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            attempt += 1;
            self.acquire(&target).await?;
            let result = match self.oauth_token().await {
                Ok(token) => {
                    self.attempt(&call, &url, &target, token.as_ref(), stream)
                        .await
                }
                Err(e) => Err(e),
            };
            let (err, hint) = match result {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            // A refused OAuth or login token: drop it and retry once with a fresh one (not counted as a
            // retry).
            if let HttpError::Auth { status, target: t } = &err {
                if *status == StatusCode::UNAUTHORIZED && !refreshed && t.path == target.path {
                    let dropped = match &self.auth {
                        Auth::OAuth2(o) => {
                            o.invalidate().await;
                            true
                        }
                        Auth::Login(l) => {
                            l.invalidate().await;
                            true
                        }
                        _ => false,
                    };
                    if dropped {
                        tracing::debug!(connector = %self.connector, path = %target.path, "access token refused; fetching a new one");
                        refreshed = true;
                        attempt -= 1;
                        continue;
                    }
                }
            }
            if call.creates && err.may_have_reached_the_vendor() {
                tracing::debug!(connector = %self.connector, path = %target.path, error = %err,
                    "not resending a create that may have landed; the outbox retries it with a lookup");
                return Err(err);
            }
            if !self.wait_to_retry(&err, hint, attempt, &mut waited).await {
                return Err(err);
            }
        }
    }

    /// Whether `err`, the `attempt`th failure of one call, earns another attempt; if it does, waits
    /// first (the vendor's `hint`, else the policy's backoff, through the clock) and adds the wait to
    /// `waited`. No when the error is not worth retrying now, the attempts are spent or the wait would
    /// take the call past its retry budget.
    async fn wait_to_retry(
        &self,
        err: &HttpError,
        hint: Option<Duration>,
        attempt: u32,
        waited: &mut Duration,
    ) -> bool {
        if !err.retry_now() || attempt >= self.policy.max_attempts {
            return false;
        }
        let wait =
            hint.unwrap_or_else(|| self.policy.backoff(attempt - 1, &mut rand::thread_rng()));
        if *waited + wait > self.policy.max_total_wait {
            return false;
        }
        tracing::debug!(
            connector = %self.connector,
            path = %err.target().map_or("", |t| t.path.as_str()),
            attempt,
            wait_ms = wait.as_millis() as u64,
            error = %err,
            "retrying request"
        );
        crate::observe::metrics()
            .http_retries
            .get_or_create(&crate::observe::connector(&self.connector))
            .inc();
        if hint.is_some() {
            crate::observe::rate_limit_wait(&self.connector, wait);
        }
        self.clock.sleep(wait).await;
        *waited += wait;
        true
    }

    /// For a streamed body ([`HttpClient::execute_lines`]) that broke off partway with `err` on the
    /// `attempt`th read of it: whether to request it again, after the same backoff and within the same
    /// budget (`waited`) as a failed request. The engine cannot replay half a body, so the caller, which
    /// knows what it folded from the lines already read, discards that and starts over.
    pub async fn wait_to_re_request(
        &self,
        err: &HttpError,
        attempt: u32,
        waited: &mut Duration,
    ) -> bool {
        self.wait_to_retry(err, None, attempt, waited).await
    }

    /// The session token to send, when the connector uses OAuth 2.0 or a vendor login.
    async fn oauth_token(&self) -> Result<Option<SecretString>, (HttpError, Option<Duration>)> {
        match &self.auth {
            Auth::OAuth2(o) => o
                .access_token(&self.client, self.clock.as_ref(), &self.connector)
                .await
                .map(Some),
            Auth::Login(l) => l
                .token(&self.client, self.clock.as_ref(), &self.connector)
                .await
                .map(Some),
            _ => Ok(None),
        }
    }

    /// Waits for the rate limiter, then for the rolling-window guard. A guard wait longer than the retry
    /// budget (a quota of 60 per hour, spent) is not slept: it comes back as `RateLimited` at once, like a
    /// `Retry-After` beyond the budget, so a run ends instead of hanging.
    async fn acquire(&self, target: &RequestTarget) -> Result<(), HttpError> {
        let now = self.clock.now();
        let ahead = self
            .send_log
            .lock()
            .map(|mut log| log.wait_at(now))
            .unwrap_or(Duration::ZERO);
        if ahead > self.policy.max_total_wait {
            return Err(HttpError::RateLimited {
                target: target.clone(),
                retry_after: Some(ahead),
            });
        }
        while let Err(not_until) = self.limiter.check() {
            let wait = not_until
                .wait_time_from(self.limiter.clock().now())
                .max(Duration::from_millis(1));
            crate::observe::rate_limit_wait(&self.connector, wait);
            self.clock.sleep(wait).await;
        }
        loop {
            let now = self.clock.now();
            let wait = match self.send_log.lock() {
                Ok(mut log) => log.try_send(now),
                // A poisoned log only loses the guard; governor still applies.
                Err(_) => Duration::ZERO,
            };
            if wait.is_zero() {
                return Ok(());
            }
            crate::observe::rate_limit_wait(&self.connector, wait);
            self.clock.sleep(wait).await;
        }
    }

    /// Adopts the quota a response reports, when the kind installed a reader.
    fn learn_quota(&self, headers: &HeaderMap) {
        if let Some(q) = self.quota_reader.and_then(|read| read(headers)) {
            if let Ok(mut log) = self.send_log.lock() {
                log.learn(q);
            }
        }
    }

    /// A 429 that says neither the quota nor when to come back (Stripe's): the rolling-window guard infers
    /// a quota from it (`SendLog::throttled`), so the next requests are paced under the vendor's limit
    /// instead of each finding it by being refused. Kinds with a quota reader learn the vendor's own
    /// figure, and a `Retry-After` (or a kind's reset time) is honoured as it is.
    fn learn_from_throttle(&self, now: DateTime<Utc>) {
        if self.quota_reader.is_some() {
            return;
        }
        if let Ok(mut log) = self.send_log.lock() {
            log.throttled(now);
            if let Some(q) = log.inferred(now) {
                tracing::debug!(
                    connector = %self.connector,
                    requests = q.requests,
                    window_ms = q.window.as_millis() as u64,
                    "throttled without a quota header; pacing under an inferred quota"
                );
            }
        }
    }

    /// One attempt. On failure, also returns how long the vendor asked us to wait, if it did.
    async fn attempt(
        &self,
        call: &Call<'_>,
        url: &Url,
        target: &RequestTarget,
        oauth_token: Option<&SecretString>,
        stream: bool,
    ) -> Result<Attempted, (HttpError, Option<Duration>)> {
        let mut rb = self.client.request(call.method.clone(), url.clone());
        rb = match oauth_token {
            Some(token) => self.auth.apply_token(rb, token),
            None => self.auth.apply(rb),
        };
        for (name, value) in call.headers {
            rb = rb.header(*name, value.as_str());
        }
        if let Some(body) = call.body {
            rb = rb.json(body);
        }
        rb = rb.headers(self.extra_headers.clone());
        let resp = rb.send().await.map_err(|e| {
            crate::observe::http_request(&self.connector, None);
            (network_error(target, &e), None)
        })?;
        let status = resp.status();
        crate::observe::http_request(&self.connector, Some(status.as_u16()));
        let headers = resp.headers().clone();
        self.learn_quota(&headers);
        if stream && status.is_success() {
            return Ok(Attempted::Stream(Box::new(LineStream::new(
                resp,
                target.clone(),
            ))));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| (network_error(target, &e), None))?;
        // A refusal may quote the request back, credentials included (a 400 echoing the API key): none
        // of it reaches an error, a log line, a status report or a kind.
        let bytes = if status.is_success() {
            bytes
        } else {
            redact(&bytes, &self.auth.wire_values(oauth_token)).into()
        };
        if status.is_success() {
            let body = if bytes.iter().all(u8::is_ascii_whitespace) {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| {
                    let err = HttpError::Decode {
                        target: target.clone(),
                        expected: "a json body".into(),
                        reason: e.to_string(),
                    };
                    (err, None)
                })?
            };
            return Ok(Attempted::Json(JsonResponse {
                status,
                headers,
                body,
            }));
        }
        if call.accept.contains(&status) {
            let body =
                serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(excerpt(&bytes)));
            return Ok(Attempted::Json(JsonResponse {
                status,
                headers,
                body,
            }));
        }
        let now = self.clock.now();
        let class = self
            .classifier
            .and_then(|c| c(status, &headers, &bytes, now))
            .unwrap_or_else(|| default_classify(status, &headers, now));
        let target = target.clone();
        Err(match class {
            Classified::RateLimited { retry_after } => {
                if retry_after.is_none() {
                    self.learn_from_throttle(now);
                }
                (
                    HttpError::RateLimited {
                        target,
                        retry_after,
                    },
                    retry_after,
                )
            }
            Classified::QuotaExhausted { reason } => {
                (HttpError::QuotaExhausted { target, reason }, None)
            }
            Classified::Transient => {
                // 503 may carry Retry-After too (RFC 9110 §10.2.3).
                let hint = retry_after(&headers, now);
                let reason = format!("http {}: {}", status.as_u16(), excerpt(&bytes));
                let err = HttpError::Transient {
                    target,
                    status: Some(status),
                    reason,
                };
                (err, hint)
            }
            Classified::Auth => (HttpError::Auth { target, status }, None),
            Classified::Permanent => (
                HttpError::Permanent {
                    target,
                    status,
                    body_excerpt: excerpt(&bytes),
                },
                None,
            ),
        })
    }
}

/// What one attempt produced: a buffered JSON response, or a 2xx body left unread for streaming.
enum Attempted {
    Json(JsonResponse),
    Stream(Box<LineStream>),
}

fn quota(rl: RateLimit) -> Option<Quota> {
    let requests = NonZeroU32::new(rl.requests)?;
    Some(Quota::with_period(rl.per / requests.get())?.allow_burst(requests))
}

/// Joins `path` (which may carry `?query`) onto `base`, keeping the base's path prefix.
fn join_url(base: &Url, path: &str) -> Url {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    let rest = path.trim_start_matches('/');
    url.set_path(&format!("{prefix}/{rest}"));
    url.set_query(query);
    url.set_fragment(None);
    url
}

/// Percent-encodes one path segment (an id that may contain `/`, spaces or `?`).
pub fn encode_segment(segment: &str) -> String {
    let mut url = match Url::parse("http://segment.invalid/") {
        Ok(u) => u,
        Err(_) => return segment.to_string(),
    };
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.clear().push(segment);
    }
    url.path().trim_start_matches('/').to_string()
}

/// A transport failure, classified. reqwest's message includes the URL (and so the query); strip it.
/// The reason of a request that never reached the vendor: the connection could not be made.
const CONNECT_FAILED: &str = "connection failed";

fn network_error(target: &RequestTarget, e: &reqwest::Error) -> HttpError {
    let reason = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        CONNECT_FAILED.to_string()
    } else if e.is_body() || e.is_decode() {
        "connection broken while reading the response".to_string()
    } else if e.is_builder() {
        return HttpError::Config {
            connector: target.connector.clone(),
            reason: format!("cannot build request for {}", target.path),
        };
    } else {
        let mut msg = String::from("request failed");
        let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(s) = source {
            msg = format!("request failed: {s}");
            source = s.source();
        }
        msg
    };
    HttpError::Transient {
        target: target.clone(),
        status: None,
        reason,
    }
}

/// Credentials shorter than this are not searched for: an empty or `X` password (Freshdesk's convention)
/// would blank every X of the body, and so short a value protects nothing.
const MIN_REDACTED_LEN: usize = 6;

/// `bytes` with every occurrence of each of `secrets` replaced by `[redacted]`.
pub(crate) fn redact(bytes: &[u8], secrets: &[String]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for secret in secrets.iter().map(String::as_bytes) {
        if secret.len() < MIN_REDACTED_LEN {
            continue;
        }
        let mut i = 0;
        let mut next = Vec::with_capacity(out.len());
        while i < out.len() {
            if out[i..].starts_with(secret) {
                next.extend_from_slice(b"[redacted]");
                i += secret.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// The start of a response body, on one line, for error messages.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = one_line.chars().take(BODY_EXCERPT_CHARS).collect();
    if one_line.chars().count() > BODY_EXCERPT_CHARS {
        out.push('…');
    }
    if out.is_empty() {
        out.push_str("(empty body)");
    }
    out
}
