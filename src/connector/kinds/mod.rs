//! The one explicit list of connector kinds. Adding a kind means adding its file beside this one and one
//! line to the `kinds!` list below (its module and its factory); an unknown kind in a connector file is
//! answered with the names in this list, which reaches `config::load` as [`catalog`]. What the kinds share
//! is not a kind: `common` (the incremental cursor, params checks, converters), `paged` (the loop of a
//! source that pages a JSON list), `sink_support` and `quota_pause`.

use super::Kind;
use crate::config::Catalog;

pub mod common;
pub mod paged;
pub mod quota_pause;
pub mod sink_support;
#[cfg(test)]
pub mod sink_testkit;
#[cfg(test)]
pub mod support_testkit;
#[cfg(test)]
pub mod testkit;

/// Declares each kind's module and lists it, in this order, in `KINDS`: one line per kind, so the module
/// list and the registry cannot drift apart.
macro_rules! kinds {
    ($($module:ident: $build:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every kind healthsync can build, sources first.
        pub static KINDS: &[Kind] = &[$(Kind { spec: &$module::SPEC, build: $module::$build }),*];
    };
}

kinds! {
    hubspot: build,
    salesforce: build,
    chargebee: build,
    mixpanel: build,
    stripe: build,
    usage_feed: build,
    zendesk: build,
    intercom: build,
    freshdesk: build,
    delighted: build,
    vitally: build,
    planhat: build,
    gainsight: build,
    totango: build,
    hubspot_sink: build,
    salesforce_sink: build,
    churnzero: build,
    clientsuccess: build,
    customersuccessbox: build,
    file_export: build_as_connector,
}

/// The catalog `config::load` validates connector files against: every kind's spec, in `KINDS` order.
pub fn catalog() -> Catalog {
    Catalog::new(KINDS.iter().map(|k| k.spec))
}

/// Builds an export instance (role `export`). Exports have no base URL, auth or HTTP client, so they are
/// not built through `KindSpec::build` (whose context is an HTTP connector's config) but here, by kind.
pub fn build_export(
    config: &crate::config::ExportConfig,
) -> Result<Box<dyn super::Export>, super::BuildError> {
    match config.kind.as_str() {
        "file_export" => file_export::build(config),
        other => Err(super::BuildError::Invalid {
            connector: config.id.clone(),
            reason: format!("kind {other} is not an export kind"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Role;

    #[test]
    fn every_sink_kind_states_what_its_platform_cannot_do() {
        for k in KINDS.iter().map(|k| k.spec) {
            match k.role {
                Role::Sink => assert!(!k.limitations.is_empty(), "{} lists no limitation", k.name),
                Role::Source => assert!(k.limitations.is_empty(), "{} is a source", k.name),
                Role::Export => assert!(k.limitations.is_empty(), "{} is an export", k.name),
            }
        }
    }
}
