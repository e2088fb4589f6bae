//! The one explicit list of connector kinds. Adding a kind means adding its module here and its spec to
//! `KINDS`; an unknown kind in a connector file is answered with the names in this list. `common` holds
//! what the kinds share (the incremental cursor, params checks); it is not a kind.

use super::KindSpec;

pub mod chargebee;
pub mod churnzero;
pub mod common;
pub mod delighted;
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
];
