//! Secret references and their resolution into `SecretString`.
//!
//! Config files hold only references: `env:NAME`, `file:/path` or `credential:NAME` (a file in systemd's
//! `$CREDENTIALS_DIRECTORY`, from `LoadCredential=`). This module parses references (pure, used by
//! `validate`) and reads their values at build time. A value leaves `SecretString` only in `crate::http`,
//! where it becomes a header. Nothing here logs, prints or stores a value; errors name the reference only.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::vocab::AuthScheme;

/// Where a secret lives. Holds no secret itself, so it is safe to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
    Credential(String),
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Credential(name) => write!(f, "credential:{name}"),
        }
    }
}

/// Why a reference could not be parsed. The message never repeats the value: a plaintext secret pasted into a
/// config file must not be echoed into logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretRefError {
    #[error("secret values do not belong in config files; use a reference: env:NAME, file:/path or credential:NAME")]
    Plaintext,
    #[error("empty name after `{0}:`")]
    EmptyName(&'static str),
    #[error("`file:` needs an absolute path")]
    RelativePath,
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<SecretRef, SecretRefError> {
        let (scheme, rest) = s.split_once(':').ok_or(SecretRefError::Plaintext)?;
        match scheme {
            "env" => {
                if rest.is_empty() {
                    return Err(SecretRefError::EmptyName("env"));
                }
                Ok(SecretRef::Env(rest.to_string()))
            }
            "file" => {
                if rest.is_empty() {
                    return Err(SecretRefError::EmptyName("file"));
                }
                let path = PathBuf::from(rest);
                if !path.is_absolute() {
                    return Err(SecretRefError::RelativePath);
                }
                Ok(SecretRef::File(path))
            }
            "credential" => {
                if rest.is_empty() || rest.contains('/') {
                    return Err(SecretRefError::EmptyName("credential"));
                }
                Ok(SecretRef::Credential(rest.to_string()))
            }
            _ => Err(SecretRefError::Plaintext),
        }
    }

    /// Reads the value. Trailing newlines of files are trimmed (editors add them).
    pub fn resolve(&self) -> Result<SecretString, SecretError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::Unset(self.clone()))?
            }
            SecretRef::File(path) => read_trimmed(path, self)?,
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(self.clone()))?;
                read_trimmed(&PathBuf::from(dir).join(name), self)?
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty(self.clone()));
        }
        Ok(SecretString::from(value))
    }
}

fn read_trimmed(path: &std::path::Path, r: &SecretRef) -> Result<String, SecretError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| SecretError::Unreadable(r.clone(), e.kind()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Why a reference could not be read. Names the reference, never a value.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0}: environment variable is not set")]
    Unset(SecretRef),
    #[error("secret {0}: cannot read ({1})")]
    Unreadable(SecretRef, std::io::ErrorKind),
    #[error(
        "secret {0}: $CREDENTIALS_DIRECTORY is not set (run under systemd with LoadCredential=)"
    )]
    NoCredentialsDirectory(SecretRef),
    #[error("secret {0}: value is empty")]
    Empty(SecretRef),
}

/// The resolved secrets of one connector, by role in its `[auth]` table (`token`, `username`, `password`,
/// and for OAuth 2.0 `client_id`, `client_secret`, `refresh_token`).
#[derive(Default)]
pub struct ResolvedSecrets {
    values: BTreeMap<&'static str, SecretString>,
}

impl fmt::Debug for ResolvedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl ResolvedSecrets {
    /// Resolves every reference of a connector's auth table, failing on the first that cannot be read.
    pub fn resolve(auth: &crate::secrets::AuthConfig) -> Result<ResolvedSecrets, SecretError> {
        let mut values = BTreeMap::new();
        for (name, r) in auth.secret_refs() {
            values.insert(name, r.resolve()?);
        }
        Ok(ResolvedSecrets { values })
    }

    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.values.get(name)
    }
}

/// Auth settings: the scheme and *references* to secrets, never their values.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub scheme: AuthScheme,
    pub token: Option<SecretRef>,
    pub username: Option<SecretRef>,
    pub password: Option<SecretRef>,
    pub header: Option<String>,
    /// For `api_key_query`: the query parameter that carries the key.
    pub param: Option<String>,
    /// Set for the `oauth2_*` schemes.
    pub oauth2: Option<OAuth2Settings>,
}

/// Where and how an OAuth 2.0 access token is obtained. Secrets are references, as everywhere in config.
#[derive(Debug, Clone)]
pub struct OAuth2Settings {
    pub token_url: reqwest::Url,
    pub client_id: SecretRef,
    pub client_secret: SecretRef,
    /// Required by `oauth2_refresh_token`, unused by `oauth2_client_credentials`.
    pub refresh_token: Option<SecretRef>,
    pub scope: Option<String>,
}

impl AuthConfig {
    /// Every secret reference of this auth table, by role (`token`, `client_secret`, …).
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretRef)> {
        let mut out: Vec<(&'static str, &SecretRef)> = [
            ("token", &self.token),
            ("username", &self.username),
            ("password", &self.password),
        ]
        .into_iter()
        .filter_map(|(n, r)| r.as_ref().map(|r| (n, r)))
        .collect();
        if let Some(o) = &self.oauth2 {
            out.push(("client_id", &o.client_id));
            out.push(("client_secret", &o.client_secret));
            if let Some(r) = &o.refresh_token {
                out.push(("refresh_token", r));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_refuses_plaintext() {
        assert_eq!(
            SecretRef::parse("env:HUBSPOT_TOKEN"),
            Ok(SecretRef::Env("HUBSPOT_TOKEN".into()))
        );
        assert_eq!(
            SecretRef::parse("file:/run/secrets/stripe"),
            Ok(SecretRef::File("/run/secrets/stripe".into()))
        );
        assert_eq!(
            SecretRef::parse("credential:vitally"),
            Ok(SecretRef::Credential("vitally".into()))
        );
        assert_eq!(
            SecretRef::parse("sk_live_abc123"),
            Err(SecretRefError::Plaintext)
        );
        assert_eq!(
            SecretRef::parse("Bearer: xyz"),
            Err(SecretRefError::Plaintext)
        );
        assert_eq!(
            SecretRef::parse("env:"),
            Err(SecretRefError::EmptyName("env"))
        );
        assert_eq!(
            SecretRef::parse("file:relative/path"),
            Err(SecretRefError::RelativePath)
        );
    }

    #[test]
    fn plaintext_error_does_not_echo_the_value() {
        let err = SecretRef::parse("sk_live_abc123").unwrap_err().to_string();
        assert!(!err.contains("sk_live"), "{err}");
    }

    #[test]
    fn resolves_files_and_trims_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let r = SecretRef::File(path);
        use secrecy::ExposeSecret;
        assert_eq!(r.resolve().unwrap().expose_secret(), "s3cret");
        let missing = SecretRef::File(dir.path().join("nope"));
        let err = missing.resolve().unwrap_err().to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
