//! Test helpers shared by the engine's and the kinds' tests: a connector config pointing at a mock server,
//! secrets resolved from throwaway files, and a manual clock. Test-only; no production code uses it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use crate::config::{ConnectorConfig, FieldMap};
use crate::secrets::{AuthConfig, OAuth2Settings, ResolvedSecrets, SecretRef};
use crate::vocab::{AuthScheme, RateLimit, Role};

use super::{HttpClient, ManualClock};

/// A config for `kind` at `base_url` with `scheme` auth, a generous rate limit and no params.
pub fn config(kind: &str, role: Role, base_url: &str, scheme: AuthScheme) -> ConnectorConfig {
    ConnectorConfig {
        id: format!("test_{kind}"),
        kind: kind.to_string(),
        role,
        enabled: true,
        schedule: None,
        base_url: reqwest::Url::parse(base_url).expect("test base url"),
        auth: AuthConfig {
            scheme,
            token: None,
            username: None,
            password: None,
            header: None,
            param: None,
            oauth2: None,
        },
        rate_limit: RateLimit::per_secs(10_000, 1),
        streams: Vec::new(),
        page_size: None,
        timeout: Duration::from_secs(10),
        max_age: Duration::from_secs(3600),
        // The kind's own defaults, as validation would have parsed an empty `[params]` table.
        params: crate::connector::kind(kind)
            .and_then(|k| (k.spec.parse_params)(&toml::Table::new()).ok())
            .unwrap_or_default(),
        fields: FieldMap::default(),
        file: PathBuf::from(format!("connectors/test_{kind}.toml")),
    }
}

/// Writes each `(role, value)` to a temp file, points the config's auth at it and resolves the secrets.
pub fn secrets(config: &mut ConnectorConfig, values: &[(&str, &str)]) -> ResolvedSecrets {
    let dir = tempfile::tempdir().expect("tempdir");
    for (role, value) in values {
        let path = dir.path().join(role);
        std::fs::write(&path, value).expect("write secret");
        let r = Some(SecretRef::File(path));
        match *role {
            "token" => config.auth.token = r,
            "username" => config.auth.username = r,
            "password" => config.auth.password = r,
            other => panic!("unknown secret role {other}"),
        }
    }
    ResolvedSecrets::resolve(&config.auth).expect("resolve secrets")
}

/// 2026-11-23T12:00:00Z, the fixed "now" of the tests.
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap(),
    ))
}

/// A bearer client for `base_url` with token `tok_test` and a manual clock.
pub fn bearer_client(base_url: &str) -> (HttpClient, Arc<ManualClock>) {
    let mut cfg = config("test", Role::Source, base_url, AuthScheme::Bearer);
    let s = secrets(&mut cfg, &[("token", "tok_test")]);
    let clock = manual_clock();
    let client = HttpClient::new(&cfg, &s)
        .expect("client")
        .with_clock(clock.clone());
    (client, clock)
}

/// The request timeout of a client behind a [`FaultProxy`]: short, because reqwest's timeout runs on real
/// time (it cannot be paused), so each hung request costs this much wall time.
pub const FAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// [`bearer_client`] with a [`FAULT_TIMEOUT`], for a `base_url` behind a [`FaultProxy`].
pub fn bearer_client_behind_proxy(base_url: &str) -> (HttpClient, Arc<ManualClock>) {
    let mut cfg = config("test", Role::Source, base_url, AuthScheme::Bearer);
    cfg.timeout = FAULT_TIMEOUT;
    let s = secrets(&mut cfg, &[("token", "tok_test")]);
    let clock = manual_clock();
    let client = HttpClient::new(&cfg, &s)
        .expect("client")
        .with_clock(clock.clone());
    (client, clock)
}

/// Asserts that every request `server` received whose path starts with `prefix` carried `name: value`,
/// and returns how many there were.
pub async fn assert_every_request_carries(
    server: &wiremock::MockServer,
    prefix: &str,
    name: &str,
    value: &str,
) -> usize {
    let received = server.received_requests().await.expect("request recording");
    let matching: Vec<_> = received
        .iter()
        .filter(|r| r.url.path().starts_with(prefix))
        .collect();
    assert!(
        !matching.is_empty(),
        "no request under {prefix} reached the server"
    );
    for r in &matching {
        let got = r.headers.get(name).map(|v| v.as_bytes());
        assert_eq!(
            got,
            Some(value.as_bytes()),
            "{} {} without the expected {name}",
            r.method,
            r.url.path()
        );
    }
    matching.len()
}

/// An OAuth 2.0 config for `kind` at `base_url` whose token endpoint is `token_url`, with client id
/// `cid_test`, client secret `csecret_test` and (for the refresh grant) refresh token `rt_test`.
pub fn oauth2_config(
    kind: &str,
    base_url: &str,
    token_url: &str,
    scheme: AuthScheme,
) -> (ConnectorConfig, ResolvedSecrets) {
    oauth2_config_with(
        kind,
        base_url,
        token_url,
        scheme,
        ["cid_test", "csecret_test", "rt_test"],
    )
}

/// [`oauth2_config`] with explicit `[client_id, client_secret, refresh_token]` values.
pub fn oauth2_config_with(
    kind: &str,
    base_url: &str,
    token_url: &str,
    scheme: AuthScheme,
    [client_id, client_secret, refresh_token]: [&str; 3],
) -> (ConnectorConfig, ResolvedSecrets) {
    let mut cfg = config(kind, Role::Source, base_url, scheme);
    let dir = tempfile::tempdir().expect("tempdir");
    let put = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, value).expect("write secret");
        SecretRef::File(path)
    };
    cfg.auth.oauth2 = Some(OAuth2Settings {
        token_url: reqwest::Url::parse(token_url).expect("token url"),
        client_id: put("client_id", client_id),
        client_secret: put("client_secret", client_secret),
        refresh_token: (scheme == AuthScheme::OAuth2RefreshToken)
            .then(|| put("refresh_token", refresh_token)),
        scope: None,
    });
    let secrets = ResolvedSecrets::resolve(&cfg.auth).expect("resolve secrets");
    (cfg, secrets)
}

/// What [`FaultProxy`] does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Reads the request and never answers: the client's timeout fires.
    Hang,
    /// Reads the request and closes the connection with an RST: a connection reset.
    Reset,
    /// Forwards the request and, after the first `n` bytes of the response, resets the connection: the
    /// status line and headers arrive, the body is cut short.
    CutAfter(usize),
}

/// A loopback HTTP/1.1 proxy in front of a mock server that injects network faults into chosen requests,
/// so a kind's tests can check that every request it makes (token grants and streamed exports included)
/// goes through the engine's retries. Each request travels on its own connection (the proxy adds
/// `connection: close`), so faults are numbered by request, from 1, in the order they reach the proxy.
pub struct FaultProxy {
    url: String,
    requests: Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a `http://host:port` URL) applying `faults` as (request number, fault).
    pub async fn start(upstream: &str, faults: &[(usize, Fault)]) -> FaultProxy {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let upstream = reqwest::Url::parse(upstream).expect("upstream url");
        let upstream = format!(
            "{}:{}",
            upstream.host_str().expect("upstream host"),
            upstream.port_or_known_default().expect("upstream port")
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        let faults: std::collections::HashMap<usize, Fault> = faults.iter().copied().collect();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let Some(request) = read_request(&mut client).await else {
                    continue;
                };
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                match faults.get(&n) {
                    Some(Fault::Hang) => held.push(client),
                    Some(Fault::Reset) => reset(client),
                    Some(Fault::CutAfter(bytes)) => {
                        let (upstream, bytes) = (upstream.clone(), *bytes);
                        tokio::spawn(async move {
                            forward(&upstream, &request, &mut client, Some(bytes)).await;
                            reset(client);
                        });
                    }
                    None => {
                        let upstream = upstream.clone();
                        tokio::spawn(async move {
                            forward(&upstream, &request, &mut client, None).await;
                        });
                    }
                }
            }
        });
        FaultProxy { url, requests }
    }

    /// The URL to point a connector at instead of the mock server's.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many requests reached the proxy, faulted ones included.
    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Closes `sock` with an RST: a zero linger makes the close abortive.
fn reset(sock: tokio::net::TcpStream) {
    // Deprecated because a nonzero linger blocks on drop; a zero linger closes at once, which is the point.
    #[allow(deprecated)]
    let _ = sock.set_linger(Some(Duration::ZERO));
    drop(sock);
}

/// Reads one request (head and a `content-length` body) and returns it with `connection: close` in place
/// of any connection header; `None` if the client went away first.
async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let body_len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buf.len() < head_end + body_len {
        let n = sock.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut out = Vec::with_capacity(buf.len() + 20);
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let is_connection = line
            .split_once(':')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("connection"));
        if !is_connection {
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&buf[head_end..head_end + body_len]);
    Some(out)
}

/// Sends `request` upstream and copies the response back until upstream closes, or until `limit` bytes.
async fn forward(
    upstream: &str,
    request: &[u8],
    client: &mut tokio::net::TcpStream,
    limit: Option<usize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    if up.write_all(request).await.is_err() {
        return;
    }
    let mut sent = 0;
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = up.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            let _ = client.shutdown().await;
            return;
        }
        let n = limit.map_or(n, |l| n.min(l - sent));
        if client.write_all(&chunk[..n]).await.is_err() {
            return;
        }
        sent += n;
        if limit == Some(sent) {
            let _ = client.flush().await;
            return;
        }
    }
}
