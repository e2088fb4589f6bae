//! The simulated support history every help-desk vendor renders (Zendesk tickets, Freshdesk tickets,
//! Intercom conversations): per account, a deterministic list of tickets with status, priority, times and
//! an optional satisfaction answer, shaped by the account's hidden trajectory (churning accounts open more
//! and more urgent tickets and rate them worse).
//!
//! Generated from the world alone (each account's RNG is seeded from its HubSpot id), so it needs no change
//! to `world` and is identical for identical worlds. This file owns no wire format.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::sim::world::{by, World};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TicketState {
    Open,
    Pending,
    Solved,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Priority {
    Low,
    Normal,
    High,
    Urgent,
}

/// A satisfaction answer to a solved ticket.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Csat {
    pub good: bool,
    pub comment: Option<&'static str>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SupportTicket {
    /// Index into `World::accounts`.
    pub account: usize,
    /// 1-based, in creation order across all accounts: vendors' ticket numbers derive from it.
    pub seq: u64,
    pub subject: &'static str,
    /// The requester's mailbox at the account's domain, before the `@`.
    pub requester: &'static str,
    pub state: TicketState,
    pub priority: Priority,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub csat: Option<Csat>,
}

const SUBJECTS: [&str; 8] = [
    "Cannot export report",
    "SSO login fails",
    "Invoice question",
    "Dashboard is slow",
    "How do I add seats?",
    "Integration stopped syncing",
    "Data looks wrong",
    "Feature request: bulk edit",
];
const REQUESTERS: [&str; 5] = ["ops", "admin", "jane.doe", "it", "finance"];
const GOOD: [&str; 2] = ["Quick and helpful, thanks!", "Solved on the first reply"];
const BAD: [&str; 3] = [
    "Took days to get an answer",
    "Still broken",
    "Nobody understood the problem",
];

/// A seed per (account, purpose) from the account's HubSpot id, so vendors do not share draws.
pub(crate) fn account_rng(hubspot_id: &str, salt: u64) -> StdRng {
    let id: u64 = hubspot_id.parse().unwrap_or_default();
    StdRng::seed_from_u64(crate::sim::splitmix64(id ^ salt))
}

/// Every account's tickets of the last 90 days, numbered in creation order, newest changes no later than
/// two minutes before `world.now` (Zendesk leaves out the last minute).
pub(crate) fn tickets(world: &World) -> Vec<SupportTicket> {
    let mut out = Vec::new();
    for (i, a) in world.accounts.iter().enumerate() {
        let mut rng = account_rng(&a.hubspot_id, 0x5u64 << 40);
        let (lo, hi) = by(a.trajectory, [(0, 4), (1, 7), (3, 10)]);
        let n = rng.gen_range(lo..=hi);
        let latest = world.now - Duration::minutes(2);
        for _ in 0..n {
            let created = (latest - Duration::minutes(rng.gen_range(10..90 * 24 * 60)))
                .max(a.created_at)
                .min(latest);
            let age = (latest - created).num_minutes().max(1);
            let updated = created + Duration::minutes(rng.gen_range(0..=age.min(14 * 24 * 60)));
            let open_p = by(a.trajectory, [0.15, 0.3, 0.45]);
            let state = if rng.gen_bool(open_p) {
                if rng.gen_bool(0.6) {
                    TicketState::Open
                } else {
                    TicketState::Pending
                }
            } else if (latest - updated) > Duration::days(4) {
                TicketState::Closed
            } else {
                TicketState::Solved
            };
            let urgent_p = by(a.trajectory, [0.05, 0.15, 0.3]);
            let priority = if rng.gen_bool(urgent_p) {
                Priority::Urgent
            } else {
                [
                    Priority::Low,
                    Priority::Normal,
                    Priority::Normal,
                    Priority::High,
                ][rng.gen_range(0..4)]
            };
            let solved = matches!(state, TicketState::Solved | TicketState::Closed);
            let csat = (solved && rng.gen_bool(0.6)).then(|| {
                let good = rng.gen_bool(by(a.trajectory, [0.9, 0.65, 0.35]));
                let comment = rng.gen_bool(0.5).then(|| {
                    if good {
                        GOOD[rng.gen_range(0..GOOD.len())]
                    } else {
                        BAD[rng.gen_range(0..BAD.len())]
                    }
                });
                let at = (updated + Duration::minutes(rng.gen_range(5..600))).min(latest);
                Csat { good, comment, at }
            });
            let updated = csat.as_ref().map_or(updated, |c| c.at.max(updated));
            out.push(SupportTicket {
                account: i,
                seq: 0,
                subject: SUBJECTS[rng.gen_range(0..SUBJECTS.len())],
                requester: REQUESTERS[rng.gen_range(0..REQUESTERS.len())],
                state,
                priority,
                created_at: created,
                updated_at: updated,
                csat,
            });
        }
    }
    out.sort_by(|x, y| {
        (x.created_at, x.account, x.subject).cmp(&(y.created_at, y.account, y.subject))
    });
    for (n, t) in out.iter_mut().enumerate() {
        t.seq = n as u64 + 1;
    }
    out
}

/// Trajectory of the account a ticket belongs to (for tests and callers that shape data by it).
#[cfg(test)]
pub(crate) fn trajectory_of(world: &World, t: &SupportTicket) -> crate::sim::world::Trajectory {
    world.accounts[t.account].trajectory
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::test_support::now;
    use crate::sim::world::Trajectory;

    #[test]
    fn deterministic_and_shaped_by_trajectory() {
        let w = World::generate(400, 3, now());
        let t = tickets(&w);
        assert_eq!(t, tickets(&World::generate(400, 3, now())));
        assert!(t
            .iter()
            .all(|x| x.updated_at >= x.created_at && x.updated_at <= w.now - Duration::minutes(2)));
        assert!(t.windows(2).all(|p| p[0].seq + 1 == p[1].seq));
        let share_bad = |tr: Trajectory| {
            let rated: Vec<&Csat> = t
                .iter()
                .filter(|x| trajectory_of(&w, x) == tr)
                .filter_map(|x| x.csat.as_ref())
                .collect();
            rated.iter().filter(|c| !c.good).count() as f64 / rated.len().max(1) as f64
        };
        assert!(share_bad(Trajectory::Churning) > share_bad(Trajectory::Healthy) + 0.2);
    }
}
