//! The one list of simulated vendors, `VENDORS`, and the `Vendor` enum generated with it.
//!
//! Each entry holds what the rest of the crate needs to know about a vendor: its path prefix, the
//! credential its simulator accepts, its quota (the real vendor's by default, and the demo's), its routes
//! and `/_sim/state/<name>` route, and, for the vendors `healthsync demo` configures, the shipped connector
//! file the demo's is derived from with the connector id, schedule and the few settings the demo changes.
//! `sim::start`, `SimRateLimits`, `SimState` (each vendor's state, declared and built by its entry),
//! `healthsync demo` and `healthsync sim` iterate the list. Adding a vendor is its file (routes, wire
//! shapes, state) and one entry here; `sim/mod.rs` declares the module.

use std::sync::Arc;

use axum::routing::{get, MethodRouter};
use axum::Router;

use super::{
    chargebee, churnzero, clientsuccess, customersuccessbox, delighted, freshdesk, gainsight,
    hubspot, intercom, mixpanel, planhat, salesforce, stripe, totango, usage, vitally, zendesk,
    SimRateLimits, SimState, World,
};

/// A vendor's routes, nested under its prefix.
pub(crate) type VendorRouter = fn(&Arc<SimState>) -> Router<Arc<SimState>>;

/// A `[params]` key of a demo connector and the budget it takes its value from.
pub(crate) type DemoParam = (&'static str, fn(&SimRateLimits) -> u32);

/// One simulated vendor.
pub(crate) struct VendorSpec {
    pub(crate) vendor: Vendor,
    /// Short name: the `/_sim/state/<name>` path, and the label `healthsync sim` prints.
    pub(crate) name: &'static str,
    /// The path prefix the vendor is served under.
    pub(crate) prefix: &'static str,
    /// The credential the simulator accepts (how it is presented is noted at each entry).
    pub(crate) credential: &'static str,
    /// The window the simulator counts requests in, in seconds.
    pub(crate) per_secs: u32,
    /// Requests per window by default: the real vendor's documented quota, or the simulator's guess.
    pub(crate) quota: u32,
    /// Requests per window in the demo (and `healthsync sim --fast`): far above the real vendor's, so the
    /// demo finishes in seconds; the demo's connector files use the same numbers.
    pub(crate) demo_quota: u32,
    pub(crate) router: VendorRouter,
    /// The vendor's `/_sim/state/<name>` route, if it has one.
    pub(crate) sim_state: Option<fn() -> MethodRouter<Arc<SimState>>>,
    /// Whether `healthsync sim` prints the vendor's base URL.
    pub(crate) listed: bool,
    /// How the demo configures the vendor, if it does.
    pub(crate) demo: Option<DemoConnector>,
}

/// The demo's connector for one vendor: the shipped connector file pointed at the simulator, with the
/// simulator's URL, a `file:` secret holding the vendor's credential, the demo's quota and a schedule a
/// person can watch.
pub(crate) struct DemoConnector {
    /// The connector id: the demo writes `connectors/<id>.toml` and names the secret files after it.
    pub(crate) id: &'static str,
    /// The shipped connector file (`connectors/<id>.toml`).
    pub(crate) shipped: &'static str,
    /// The schedule; `None` keeps the shipped file's (a sink has none).
    pub(crate) schedule: Option<&'static str>,
    /// `[rate_limit]` as (requests, per_secs) when it is not the demo quota per the vendor's window.
    pub(crate) rate_limit: Option<(u32, u32)>,
    /// A `page_size` replacing the shipped file's.
    pub(crate) page_size: Option<i64>,
    /// Basic auth with this user and the credential as the password, where the shipped file's user and
    /// password are both references.
    pub(crate) basic_user: Option<&'static str>,
    /// The OAuth 2.0 client the simulator's token endpoint accepts, for a shipped file with a `token_url`.
    pub(crate) oauth: Option<DemoOAuth>,
    /// `[params]` the demo sets from the simulator's budgets.
    pub(crate) params: &'static [DemoParam],
}

/// An OAuth 2.0 client of a simulated vendor.
pub(crate) struct DemoOAuth {
    /// The token endpoint under the vendor's prefix.
    pub(crate) token_path: &'static str,
    /// `[auth]` keys and the values the simulator accepts; the demo writes those the shipped file has.
    pub(crate) secrets: &'static [(&'static str, &'static str)],
}

impl DemoConnector {
    /// A connector that changes nothing but the URL, the secret, the quota and the schedule.
    const fn new(id: &'static str, shipped: &'static str, schedule: Option<&'static str>) -> Self {
        DemoConnector {
            id,
            shipped,
            schedule,
            rate_limit: None,
            page_size: None,
            basic_user: None,
            oauth: None,
            params: &[],
        }
    }
}

/// Declares `Vendor` and `VENDORS` from one list, so the enum and the table cannot disagree: the entry of
/// a vendor sits at index `vendor as usize`.
macro_rules! vendors {
    ($($(#[$doc:meta])* $variant:ident [$state:ident: $state_ty:ty = $init:expr]
       { $($field:ident: $value:expr),+ $(,)? })+) => {
        /// A simulated vendor; its entry in `VENDORS` says everything else about it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Vendor {
            $($(#[$doc])* $variant,)+
        }

        /// How many vendors there are.
        pub(crate) const COUNT: usize = [$(Vendor::$variant),+].len();

        /// Every simulated vendor, in `Vendor`'s order.
        pub(crate) static VENDORS: [VendorSpec; COUNT] = [
            $(VendorSpec { vendor: Vendor::$variant, $($field: $value),+ },)+
        ];

        /// Each vendor's simulator state, a field per vendor named and built by its entry here.
        /// `SimState` derefs to it, so a vendor's handlers read `state.<vendor>`.
        pub(crate) struct VendorStates {
            $(pub(crate) $state: $state_ty,)+
        }

        impl VendorStates {
            pub(crate) fn new(world: &Arc<World>, limits: &SimRateLimits) -> VendorStates {
                type Init<T> = fn(&Arc<World>, &SimRateLimits) -> T;
                VendorStates {
                    $($state: {
                        let init: Init<$state_ty> = $init;
                        init(world, limits)
                    },)+
                }
            }
        }
    };
}

vendors! {
    /// HubSpot CRM v3, the demo's CRM.
    Hubspot [hubspot: hubspot::HubState = |w, l| hubspot::HubState::new(w, l.get(Vendor::Hubspot))] {
        name: "hubspot",
        prefix: "/hubspot",
        // `Authorization: Bearer <credential>`.
        credential: "pat-sim-hubspot",
        per_secs: 10,
        quota: 100,
        demo_quota: 1000,
        router: hubspot::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector::new(
            "hubspot",
            include_str!("../../connectors/hubspot.toml"),
            Some("0 * * * * *"),
        )),
    }
    /// Stripe billing.
    Stripe [stripe: stripe::StripeState = |w, l| stripe::StripeState::new(w, l.get(Vendor::Stripe))] {
        name: "stripe",
        prefix: "/stripe",
        // `Authorization: Bearer <credential>`, or HTTP Basic with it as the username.
        credential: "sk_test_sim",
        per_secs: 1,
        quota: 100,
        demo_quota: 500,
        router: stripe::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector::new(
            "stripe",
            include_str!("../../connectors/stripe.toml"),
            Some("10 * * * * *"),
        )),
    }
    /// A product-usage feed.
    Usage [usage: usage::UsageState = |w, l| usage::UsageState::new(w, l.get(Vendor::Usage))] {
        name: "usage",
        prefix: "/usage",
        // `Authorization: Bearer <credential>`.
        credential: "usage-sim",
        per_secs: 60,
        quota: 600,
        demo_quota: 30_000,
        router: usage::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector {
            page_size: Some(1000),
            ..DemoConnector::new(
                "usage",
                include_str!("../../connectors/usage.toml"),
                Some("20 * * * * *"),
            )
        }),
    }
    /// Vitally, the demo's CS platform (a sink).
    Vitally [vitally: vitally::VitallyState = |w, l| vitally::VitallyState::new(w, l.get(Vendor::Vitally))] {
        name: "vitally",
        prefix: "/vitally",
        // HTTP Basic with the credential as the username and an empty password.
        credential: "vitally-sim",
        per_secs: 60,
        quota: 1000,
        demo_quota: 60_000,
        router: vitally::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector::new(
            "vitally",
            include_str!("../../connectors/vitally.toml"),
            None,
        )),
    }
    /// Salesforce, read through SOQL and written as a sink.
    Salesforce [salesforce: salesforce::SalesforceState = |w, l| salesforce::SalesforceState::new(w, l.get(Vendor::Salesforce))] {
        name: "salesforce",
        prefix: "/salesforce",
        // The connected app's client secret, exchanged for a bearer token at the OAuth endpoint.
        credential: salesforce::CLIENT_SECRET,
        // The org-wide API allocation per 24 h (`Sforce-Limit-Info`).
        per_secs: 86_400,
        quota: 100_000,
        demo_quota: 100_000,
        router: salesforce::router,
        sim_state: None,
        listed: false,
        demo: Some(DemoConnector {
            // The org's quota is daily (enforced through Sforce-Limit-Info); this only paces bursts.
            rate_limit: Some((100, 1)),
            oauth: Some(DemoOAuth {
                token_path: "/services/oauth2/token",
                secrets: &[
                    ("client_id", salesforce::CLIENT_ID),
                    ("client_secret", salesforce::CLIENT_SECRET),
                    ("refresh_token", salesforce::REFRESH_TOKEN),
                ],
            }),
            ..DemoConnector::new(
                "salesforce",
                include_str!("../../connectors/salesforce.toml"),
                Some("30 * * * * *"),
            )
        }),
    }
    /// Chargebee billing.
    Chargebee [chargebee: chargebee::ChargebeeState = |w, l| chargebee::ChargebeeState::new(w, l.get(Vendor::Chargebee))] {
        name: "chargebee",
        prefix: "/chargebee",
        credential: chargebee::API_KEY,
        // The per-minute site limit (Performance plan: 1,000).
        per_secs: 60,
        quota: 1000,
        demo_quota: 30_000,
        router: chargebee::router,
        sim_state: None,
        listed: false,
        demo: Some(DemoConnector::new(
            "chargebee",
            include_str!("../../connectors/chargebee.toml"),
            Some("40 * * * * *"),
        )),
    }
    /// Mixpanel's raw event export.
    Mixpanel [mixpanel: mixpanel::MixpanelState = |_, l| mixpanel::MixpanelState::new(l.get(Vendor::Mixpanel))] {
        name: "mixpanel",
        // The base URL carries the API version (`https://data.mixpanel.com/api/2.0`).
        prefix: "/mixpanel/api/2.0",
        credential: mixpanel::API_SECRET,
        // The raw export budget: 60 queries per hour.
        per_secs: 3600,
        quota: 60,
        demo_quota: 36_000,
        router: mixpanel::router,
        sim_state: None,
        listed: false,
        demo: Some(DemoConnector::new(
            "mixpanel",
            include_str!("../../connectors/mixpanel.toml"),
            Some("50 * * * * *"),
        )),
    }
    /// Zendesk Support; its incremental export's own budget is `SimRateLimits::zendesk_incremental_per_min`.
    Zendesk [zendesk: zendesk::ZendeskState = |w, l| zendesk::ZendeskState::new(w, l.get(Vendor::Zendesk), l.zendesk_incremental_per_min)] {
        name: "zendesk",
        prefix: "/zendesk",
        // `Authorization: Bearer <credential>` (OAuth), or Basic `agent@healthsync.example/token:<credential>`.
        credential: "zendesk-sim",
        per_secs: 60,
        quota: 700,
        demo_quota: 30_000,
        router: zendesk::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector {
            // Basic auth with an API token: `{email}/token` is the user, the token the password.
            basic_user: Some(zendesk::API_TOKEN_USER),
            params: &[("incremental_per_min", |l| l.zendesk_incremental_per_min)],
            ..DemoConnector::new(
                "zendesk",
                include_str!("../../connectors/zendesk.toml"),
                Some("30 * * * * *"),
            )
        }),
    }
    /// Intercom.
    Intercom [intercom: intercom::IntercomState = |w, l| intercom::IntercomState::new(w, l.get(Vendor::Intercom))] {
        name: "intercom",
        prefix: "/intercom",
        // `Authorization: Bearer <credential>`.
        credential: "intercom-sim",
        // Intercom enforces its per-minute quota in 10-second slices.
        per_secs: 10,
        quota: 1666,
        demo_quota: 5000,
        router: intercom::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector::new(
            "intercom",
            include_str!("../../connectors/intercom.toml"),
            Some("40 * * * * *"),
        )),
    }
    /// Freshdesk.
    Freshdesk [freshdesk: freshdesk::FreshdeskState = |w, l| freshdesk::FreshdeskState::new(w, l.get(Vendor::Freshdesk))] {
        name: "freshdesk",
        prefix: "/freshdesk",
        // HTTP Basic with the credential (an API key) as the username (password `X` by convention).
        credential: "freshdesk-sim",
        per_secs: 60,
        quota: 100,
        demo_quota: 30_000,
        router: freshdesk::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector::new(
            "freshdesk",
            include_str!("../../connectors/freshdesk.toml"),
            Some("50 * * * * *"),
        )),
    }
    /// Delighted NPS surveys.
    Delighted [delighted: delighted::DelightedState = |w, l| delighted::DelightedState::new(w, l.get(Vendor::Delighted))] {
        name: "delighted",
        prefix: "/delighted",
        // HTTP Basic with the credential (an API key) as the username and an empty password.
        credential: "delighted-sim",
        per_secs: 60,
        quota: 200,
        demo_quota: 30_000,
        router: delighted::router,
        sim_state: None,
        listed: true,
        demo: Some(DemoConnector::new(
            "delighted",
            include_str!("../../connectors/delighted.toml"),
            Some("55 * * * * *"),
        )),
    }
    /// Planhat (a sink).
    Planhat [planhat: planhat::PlanhatState = |w, l| planhat::PlanhatState::new(w, l.get(Vendor::Planhat))] {
        name: "planhat",
        prefix: "/planhat",
        credential: planhat::API_TOKEN,
        // The quota (soft limit): 200 calls per minute.
        per_secs: 60,
        quota: 200,
        demo_quota: 30_000,
        router: planhat::router,
        sim_state: Some(|| get(planhat::sim_state)),
        listed: true,
        demo: None,
    }
    /// Gainsight (a sink).
    Gainsight [gainsight: gainsight::GainsightState = |w, l| gainsight::GainsightState::new(w, l.get(Vendor::Gainsight))] {
        name: "gainsight",
        prefix: "/gainsight",
        credential: gainsight::ACCESS_KEY,
        // The recommended synchronous limit: 100 calls per minute.
        per_secs: 60,
        quota: 100,
        demo_quota: 30_000,
        router: gainsight::router,
        sim_state: Some(|| get(gainsight::sim_state)),
        listed: true,
        demo: None,
    }
    /// Totango (a sink).
    Totango [totango: totango::TotangoState = |w, l| totango::TotangoState::new(w, l.get(Vendor::Totango))] {
        name: "totango",
        // The REST API and the collection gateway (`/pixel.gif/`) share the prefix.
        prefix: "/totango",
        credential: totango::APP_TOKEN,
        // The REST API: 100 calls per minute per token (the collection gateway is not metered).
        per_secs: 60,
        quota: 100,
        demo_quota: 30_000,
        router: totango::router,
        sim_state: Some(|| get(totango::sim_state)),
        listed: true,
        demo: None,
    }
    /// ChurnZero (a sink).
    ChurnZero [churnzero: churnzero::ChurnZeroState = |_, l| churnzero::ChurnZeroState::new(l.get(Vendor::ChurnZero))] {
        name: "churnzero",
        prefix: "/churnzero",
        credential: churnzero::APP_KEY,
        // 600 calls a minute, in the demo too (`churnzero.rs`).
        per_secs: 60,
        quota: 600,
        demo_quota: 600,
        router: |_| churnzero::router(),
        sim_state: None,
        listed: false,
        demo: None,
    }
    /// ClientSuccess (a sink).
    ClientSuccess [clientsuccess: clientsuccess::ClientSuccessState = |w, l| clientsuccess::ClientSuccessState::new(w, l.get(Vendor::ClientSuccess))] {
        name: "clientsuccess",
        prefix: "/clientsuccess",
        // The password of the API user `clientsuccess::EMAIL`, exchanged for a token.
        credential: clientsuccess::PASSWORD,
        // ClientSuccess publishes no limit; the simulator's guess.
        per_secs: 60,
        quota: 300,
        demo_quota: 30_000,
        router: clientsuccess::router,
        sim_state: Some(|| get(clientsuccess::sim_state)),
        listed: false,
        demo: None,
    }
    /// CustomerSuccessBox (a sink).
    CustomerSuccessBox [customersuccessbox: customersuccessbox::CustomerSuccessBoxState = |w, l| customersuccessbox::CustomerSuccessBoxState::new(w, l.get(Vendor::CustomerSuccessBox))] {
        name: "customersuccessbox",
        // The base URL carries the API version (`https://<domain>.customersuccessbox.com/api/v1_1`).
        prefix: "/customersuccessbox/api/v1_1",
        credential: customersuccessbox::SECRET_KEY,
        // The limit was not found in CustomerSuccessBox's docs; the simulator's guess.
        per_secs: 60,
        quota: 600,
        demo_quota: 30_000,
        router: customersuccessbox::router,
        sim_state: Some(|| get(customersuccessbox::sim_state)),
        listed: false,
        demo: None,
    }
}

impl Vendor {
    /// The vendor's entry in `VENDORS`.
    pub(crate) fn spec(self) -> &'static VendorSpec {
        &VENDORS[self.index()]
    }

    /// Where the vendor sits in `VENDORS` (and in `SimRateLimits`).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The path prefix the vendor is served under.
    pub fn prefix(self) -> &'static str {
        self.spec().prefix
    }

    /// The fixed credential the simulated vendor accepts (token, API key or secret; see `VENDORS`).
    pub fn credential(self) -> &'static str {
        self.spec().credential
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn each_entry_is_at_its_vendors_index_and_names_are_distinct() {
        for (i, spec) in VENDORS.iter().enumerate() {
            assert_eq!(spec.vendor.index(), i);
        }
        let distinct = |f: fn(&VendorSpec) -> &'static str| {
            VENDORS.iter().map(f).collect::<BTreeSet<_>>().len()
        };
        assert_eq!(distinct(|s| s.name), COUNT);
        assert_eq!(distinct(|s| s.prefix), COUNT);
        let ids: BTreeSet<&str> = VENDORS
            .iter()
            .filter_map(|s| s.demo.as_ref())
            .map(|d| d.id)
            .collect();
        assert_eq!(
            ids.len(),
            VENDORS.iter().filter(|s| s.demo.is_some()).count()
        );
    }
}
