//! The one explicit list of connector kinds. Adding a kind means adding its file beside this one and one
//! line to the `kinds!` list below (its module and its factory); an unknown kind in a connector file is
//! answered with the names in this list, which reaches `config::load` as [`catalog`]. What the kinds share
//! is not a kind: `common` (the incremental cursor, params checks, converters), `paged` (the loop of a
//! source that pages a JSON list), `sink_support` and `quota_pause`.

use super::{Export, Factory, Kind};
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
    ($($module:ident: $factory:ident),* $(,)?) => {
        $(pub mod $module;)*

        /// Every kind healthsync can build, sources first.
        pub static KINDS: &[Kind] = &[
            $(Kind { spec: &$module::SPEC, factory: Factory::$factory($module::build) }),*
        ];
    };
}

kinds! {
    hubspot: Connector,
    salesforce: Connector,
    chargebee: Connector,
    mixpanel: Connector,
    stripe: Connector,
    usage_feed: Connector,
    zendesk: Connector,
    intercom: Connector,
    freshdesk: Connector,
    delighted: Connector,
    vitally: Connector,
    planhat: Connector,
    gainsight: Connector,
    totango: Connector,
    hubspot_sink: Connector,
    salesforce_sink: Connector,
    churnzero: Connector,
    clientsuccess: Connector,
    customersuccessbox: Connector,
    file_export: Export,
}

/// The catalog `config::load` validates connector files against: every kind's spec, in `KINDS` order.
pub fn catalog() -> Catalog {
    Catalog::new(KINDS.iter().map(|k| k.spec))
}

/// Builds an export instance (role `export`) by its kind.
pub fn build_export(
    config: &crate::config::ExportConfig,
) -> Result<Box<dyn Export>, super::BuildError> {
    super::kind(&config.kind)
        .ok_or_else(|| super::BuildError::Invalid {
            connector: config.id.clone(),
            reason: format!("unknown export kind {}", config.kind),
        })?
        .build_export(config)
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

    #[test]
    fn an_export_kind_is_not_built_as_a_connector() {
        let cfg = crate::http::testing::config(
            "file_export",
            Role::Source,
            "http://127.0.0.1:9",
            crate::vocab::AuthScheme::Bearer,
        );
        let secrets = crate::secrets::ResolvedSecrets::default();
        let kind = super::super::kind("file_export").expect("listed");
        let ctx = super::super::BuildContext {
            connector: &cfg,
            secrets: &secrets,
        };
        match kind.build(&ctx) {
            Err(e) => assert!(e.to_string().contains("role = \"export\""), "{e}"),
            Ok(_) => panic!("file_export built as a connector"),
        }
    }
}
