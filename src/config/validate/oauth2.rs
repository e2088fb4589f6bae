//! Validation of the OAuth 2.0 keys of a connector's `[auth]` table (`token_url`, `client_id`,
//! `client_secret`, `refresh_token`, `scope`): required with file:line for the `oauth2_*` schemes, refused
//! for the others. Pure; secret references are parsed, never read. The rest of `[auth]` is `mod.rs`'s.

use std::ops::Range;

use toml::Spanned;

use super::super::raw::RawAuth;
use super::{Diagnostics, SourceFile};
use crate::secrets::{OAuth2Settings, SecretRef};
use crate::vocab::AuthScheme;

/// The `oauth2_*` keys: required (with file:line) for the OAuth 2.0 schemes, refused for the others.
pub(super) fn check_oauth2(
    f: &SourceFile,
    raw: &RawAuth,
    scheme: Option<AuthScheme>,
    span: Range<usize>,
    out: &mut Diagnostics,
) -> Option<OAuth2Settings> {
    let keys = [
        ("token_url", &raw.token_url),
        ("client_id", &raw.client_id),
        ("client_secret", &raw.client_secret),
        ("refresh_token", &raw.refresh_token),
        ("scope", &raw.scope),
    ];
    let is_oauth = matches!(
        scheme,
        Some(AuthScheme::OAuth2ClientCredentials | AuthScheme::OAuth2RefreshToken)
    );
    if !is_oauth {
        if scheme.is_some() {
            for (key, v) in keys {
                if let Some(v) = v {
                    f.err(
                        out,
                        v.span(),
                        format!("auth.{key} is only used by the oauth2_client_credentials and oauth2_refresh_token schemes"),
                    );
                }
            }
        }
        return None;
    }
    let scheme_name = scheme.map(AuthScheme::name).unwrap_or("oauth2");
    let before = out.errors.len();
    let token_url = match &raw.token_url {
        None => {
            f.err(out, span.clone(), format!("auth scheme {scheme_name} needs `token_url`, the token endpoint such as https://login.salesforce.com/services/oauth2/token"));
            None
        }
        Some(v) => match reqwest::Url::parse(v.get_ref()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                f.err(
                    out,
                    v.span(),
                    "auth.token_url must be an http or https URL with a host",
                );
                None
            }
        },
    };
    let mut secret = |key: &str, v: &Option<Spanned<String>>, needed: bool| -> Option<SecretRef> {
        match v {
            None => {
                if needed {
                    f.err(out, span.clone(), format!("auth scheme {scheme_name} needs `{key}`, a secret reference such as env:{}", key.to_ascii_uppercase()));
                }
                None
            }
            Some(v) => match SecretRef::parse(v.get_ref()) {
                Ok(r) => Some(r),
                Err(e) => {
                    f.err(out, v.span(), format!("auth.{key}: {e}"));
                    None
                }
            },
        }
    };
    let refresh_needed = scheme == Some(AuthScheme::OAuth2RefreshToken);
    let client_id = secret("client_id", &raw.client_id, true);
    let client_secret = secret("client_secret", &raw.client_secret, true);
    let refresh_token = secret("refresh_token", &raw.refresh_token, refresh_needed);
    if !refresh_needed {
        if let Some(v) = &raw.refresh_token {
            f.err(
                out,
                v.span(),
                "auth.refresh_token is only used by the oauth2_refresh_token scheme",
            );
        }
    }
    if let Some(v) = &raw.scope {
        if v.get_ref().trim().is_empty() {
            f.err(
                out,
                v.span(),
                "auth.scope must not be empty; leave it out instead",
            );
        }
    }
    if out.errors.len() > before {
        return None;
    }
    Some(OAuth2Settings {
        token_url: token_url?,
        client_id: client_id?,
        client_secret: client_secret?,
        refresh_token,
        scope: raw.scope.as_ref().map(|s| s.get_ref().trim().to_string()),
    })
}
