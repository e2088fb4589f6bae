//! Test helpers shared by the engine's and the kinds' tests: a connector config pointing at a mock server,
//! secrets resolved from throwaway files, and a manual clock. Test-only; no production code uses it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use crate::config::{AuthConfig, AuthScheme, ConnectorConfig, FieldMap, OAuth2Settings, RateLimit};
use crate::connector::Role;
use crate::secrets::{ResolvedSecrets, SecretRef};

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
        params: toml::Table::new(),
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
