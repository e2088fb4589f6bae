//! The kind catalog: what loading and validating a config needs to know of each connector kind (its name,
//! role, streams, auth schemes, documented quota, the check of its `[params]`, and what its platform cannot
//! do), handed to [`crate::config::load`] by its caller.
//!
//! The catalog is pure data and plain functions: nothing here builds a connector or makes a request.
//! The kinds themselves, and the factory that builds them from a validated config, are in
//! `crate::connector::kinds`, which fills the catalog from its one list; config never imports them, so
//! the config layer stays below the kinds that read it.

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use crate::vocab::{AuthScheme, RateLimit, Role};

/// One kind as validation sees it. Each kind's module declares its `SPEC`; `connector::kinds::KINDS`
/// lists them once.
pub struct KindSpec {
    pub name: &'static str,
    pub role: Role,
    /// Streams a source kind can sync (empty for sinks).
    pub streams: &'static [&'static str],
    /// Streams synced when the connector file does not list any.
    pub default_streams: &'static [&'static str],
    /// Auth schemes the kind accepts, e.g. `bearer`, `basic`.
    pub auth: &'static [AuthScheme],
    /// Default rate limit (requests per period) when the file does not set one: the vendor's documented quota.
    pub default_rate_limit: RateLimit,
    /// Parses the kind-specific `[params]` table into the kind's own settings type, refusing keys it does
    /// not know. Pure: no network, no secrets. Run once, while the config is validated; the kind's factory
    /// reads the result back (`connector::BuildContext::params`) instead of parsing the table again.
    pub parse_params: fn(&toml::Table) -> Result<Params, String>,
    /// What a sink kind's platform cannot do through its API, and the nearest thing healthsync does
    /// instead. `healthsync validate` prints these for every enabled sink, so an admin learns them before
    /// a CSM does; each kind's module doc has the details. Empty for sources.
    pub limitations: &'static [&'static str],
}

/// A connector's `[params]` as its kind parsed them: the kind's own settings type, behind `Any` so the
/// config layer can carry it without knowing it.
#[derive(Clone)]
pub struct Params(Arc<dyn Any + Send + Sync>);

impl Params {
    pub fn new<T: Any + Send + Sync>(settings: T) -> Params {
        Params(Arc::new(settings))
    }

    /// The settings of a kind that takes no `[params]`.
    pub fn none() -> Params {
        Params::new(())
    }

    /// The settings, if they are of type `T` (they are, when read by the kind that parsed them).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl Default for Params {
    fn default() -> Params {
        Params::none()
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Params(..)")
    }
}

/// Every kind a config may name, in the order the caller lists them.
#[derive(Clone)]
pub struct Catalog {
    kinds: Vec<&'static KindSpec>,
}

impl Catalog {
    pub fn new(kinds: impl IntoIterator<Item = &'static KindSpec>) -> Catalog {
        Catalog {
            kinds: kinds.into_iter().collect(),
        }
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&'static KindSpec> {
        self.kinds.iter().copied().find(|k| k.name == name)
    }

    /// Every kind, for "unknown kind" messages and listings.
    pub fn iter(&self) -> impl Iterator<Item = &'static KindSpec> + '_ {
        self.kinds.iter().copied()
    }

    /// The names of every kind with `role`.
    pub fn names_with_role(&self, role: Role) -> Vec<&'static str> {
        self.iter()
            .filter(|k| k.role == role)
            .map(|k| k.name)
            .collect()
    }
}
