//! The one explicit list of connector kinds. Adding a kind means adding its module here and one line to
//! `KINDS` (its catalog entry and its factory); an unknown kind in a connector file is answered with the
//! names in this list, which reaches `config::load` as [`catalog`]. `common` holds
//! what the kinds share (the incremental cursor, params checks); it is not a kind.

use super::Kind;
use crate::config::Catalog;

pub mod chargebee;
pub mod churnzero;
pub mod clientsuccess;
pub mod common;
pub mod customersuccessbox;
pub mod delighted;
pub mod file_export;
pub mod freshdesk;
pub mod gainsight;
pub mod hubspot;
pub mod hubspot_sink;
pub mod intercom;
pub mod mixpanel;
pub mod planhat;
pub mod quota_pause;
pub mod salesforce;
pub mod salesforce_sink;
pub mod sink_support;
#[cfg(test)]
pub mod sink_testkit;
pub mod stripe;
#[cfg(test)]
pub mod support_testkit;
#[cfg(test)]
pub mod testkit;
pub mod totango;
pub mod usage_feed;
pub mod vitally;
pub mod zendesk;

/// Every kind healthsync can build, sources first.
#[rustfmt::skip]
pub static KINDS: &[Kind] = &[
    Kind { spec: &hubspot::SPEC, build: hubspot::build },
    Kind { spec: &salesforce::SPEC, build: salesforce::build },
    Kind { spec: &chargebee::SPEC, build: chargebee::build },
    Kind { spec: &mixpanel::SPEC, build: mixpanel::build },
    Kind { spec: &stripe::SPEC, build: stripe::build },
    Kind { spec: &usage_feed::SPEC, build: usage_feed::build },
    Kind { spec: &zendesk::SPEC, build: zendesk::build },
    Kind { spec: &intercom::SPEC, build: intercom::build },
    Kind { spec: &freshdesk::SPEC, build: freshdesk::build },
    Kind { spec: &delighted::SPEC, build: delighted::build },
    Kind { spec: &vitally::SPEC, build: vitally::build },
    Kind { spec: &planhat::SPEC, build: planhat::build },
    Kind { spec: &gainsight::SPEC, build: gainsight::build },
    Kind { spec: &totango::SPEC, build: totango::build },
    Kind { spec: &hubspot_sink::SPEC, build: hubspot_sink::build },
    Kind { spec: &salesforce_sink::SPEC, build: salesforce_sink::build },
    Kind { spec: &churnzero::SPEC, build: churnzero::build },
    Kind { spec: &clientsuccess::SPEC, build: clientsuccess::build },
    Kind { spec: &customersuccessbox::SPEC, build: customersuccessbox::build },
    Kind { spec: &file_export::SPEC, build: file_export::build_as_connector },
];

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
