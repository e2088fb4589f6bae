//! The one explicit list of connector kinds. Adding a kind means adding its module here and its spec to
//! `KINDS`; an unknown kind in a connector file is answered with the names in this list. `common` holds
//! what the kinds share (the incremental cursor, params checks); it is not a kind.

use super::KindSpec;

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
pub static KINDS: &[&KindSpec] = &[
    &hubspot::SPEC,
    &salesforce::SPEC,
    &chargebee::SPEC,
    &mixpanel::SPEC,
    &stripe::SPEC,
    &usage_feed::SPEC,
    &zendesk::SPEC,
    &intercom::SPEC,
    &freshdesk::SPEC,
    &delighted::SPEC,
    &vitally::SPEC,
    &planhat::SPEC,
    &gainsight::SPEC,
    &totango::SPEC,
    &hubspot_sink::SPEC,
    &salesforce_sink::SPEC,
    &churnzero::SPEC,
    &clientsuccess::SPEC,
    &customersuccessbox::SPEC,
    &file_export::SPEC,
];

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

/// What a sink kind's platform cannot do through its API, and the nearest thing healthsync does instead.
/// `healthsync validate` prints these for every enabled sink, so an admin learns them before a CSM does;
/// each kind's module doc has the details.
pub fn limitations(kind: &str) -> &'static [&'static str] {
    match kind {
        "vitally" => &["projects cannot be completed through the API: recovery adds a closing note to the account"],
        "planhat" => &["recovery ends the project (end date); its tasks stay open for the CSM"],
        "gainsight" => &["Cockpit tasks are not created through the API: a CTA's tasks are a checklist in its comments"],
        "totango" => &[
            "attributes are not confirmed and unknown accounts are created, not refused",
            "tasks return no id, so recovery adds a closing touchpoint instead of closing them",
        ],
        "hubspot_sink" => &[
            "HubSpot has no projects: each playbook task is a task on the company, found again by a key in its subject",
            "recovery completes the tasks; no closing note is written",
        ],
        "salesforce_sink" => &["duplicate-free task creation needs a unique External ID field on Task (`key_field`)"],
        "churnzero" => &[
            "the push API cannot create tasks: a playbook sets account attributes a ChurnZero Play can act on",
            "it answers 200 to everything: unknown accounts and attribute names are not reported back",
        ],
        "clientsuccess" => &[
            "ClientSuccess's Open API has no projects: each playbook task is a to-do on the client, found again by a key in its name",
            "recovery completes the to-dos; no closing note is written, and to-dos are not assigned to the account owner",
        ],
        "customersuccessbox" => &[
            "the HTTP server API offers no tasks: a playbook sets account attributes (name and task list) that a CustomerSuccessBox playbook or alert can act on",
            "account pushes are upserts: an unknown account id creates an account rather than being refused",
        ],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::Role;

    #[test]
    fn every_sink_kind_states_what_its_platform_cannot_do() {
        for k in KINDS {
            match k.role {
                Role::Sink => assert!(
                    !limitations(k.name).is_empty(),
                    "{} lists no limitation",
                    k.name
                ),
                Role::Source => assert!(limitations(k.name).is_empty(), "{} is a source", k.name),
                Role::Export => assert!(limitations(k.name).is_empty(), "{} is an export", k.name),
            }
        }
    }
}
