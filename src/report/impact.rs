//! Project impact: do the projects playbooks open help? Pure functions over the stored projects and the
//! daily score history, so they are tested with hand-made inputs and printed by `healthsync report --json`.
//!
//! Three figures: the average health (now, and its change 30 and 60 days after a project opened) of
//! accounts whose health projects were completed, against comparable accounts with no project (the same
//! band on the day the project opened, measured over the same window); project status by the week they
//! opened; and the time from opening to recovery. This file owns those computations; it does not read the
//! store or draw anything (`report/mod.rs`, `report/charts.rs`). Advocate-candidate projects (playbooks
//! with `thriving_days`) are not health projects and are left out by the caller.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::Serialize;

use super::sections::mean;
use crate::config::Band;
use crate::store::{ProjectRecord, ProjectState};

/// The windows the change in health is measured over, in days after a project opened.
pub const WINDOWS: [i64; 2] = [30, 60];

/// One day of one account's score history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryPoint {
    pub day: NaiveDate,
    pub overall: Option<f64>,
    pub band: Option<Band>,
}

/// Account id → its history, oldest first.
pub type Histories = BTreeMap<String, Vec<HistoryPoint>>;

/// Everything the report says about projects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectImpact {
    /// Health projects (a project opened for two sinks at once counts once; earlier openings of a project
    /// that was opened again count too).
    pub projects: usize,
    /// Pending or open now.
    pub open: usize,
    pub resolved: usize,
    /// Per starting band (red, amber, green), then one row for every band together.
    pub comparison: Vec<ImpactRow>,
    /// Oldest week first.
    pub weeks: Vec<WeekStatus>,
    pub recovery: Recovery,
    /// Thin data, said plainly.
    pub notes: Vec<String>,
}

/// Completed projects that started in one band, against accounts with no project that were in the same
/// band on the same days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImpactRow {
    /// `None`: every band together.
    pub starting_band: Option<Band>,
    /// Completed projects whose account had a score on the day they opened.
    pub projects: usize,
    pub with_projects: GroupHealth,
    pub comparable: GroupHealth,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupHealth {
    /// Distinct accounts in the group.
    pub accounts: usize,
    /// Their average overall score now (accounts without a current score left out).
    pub health_now: Option<f64>,
    /// Average change of the overall score from the project's opening day to 30 days later.
    pub change_30d: Option<f64>,
    /// How many measurements `change_30d` averages: projects (with) or projects with at least one
    /// comparable account (comparable), whose 30 days have passed.
    pub measured_30d: usize,
    pub change_60d: Option<f64>,
    pub measured_60d: usize,
}

/// Projects by the week they opened (weeks start on Monday) and where they stand now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeekStatus {
    pub week_start: NaiveDate,
    pub opened: usize,
    /// Of those opened that week: still pending or open.
    pub open: usize,
    /// Of those opened that week: resolved (the account recovered).
    pub resolved: usize,
}

/// Days from a project's opening to its account's recovery.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recovery {
    /// Resolved projects with a known resolution time.
    pub resolved: usize,
    pub median_days: Option<f64>,
    pub still_open: usize,
    /// Resolved before they opened: runs replayed out of time order (`--now` going backwards). Left out
    /// of the median.
    pub resolved_before_opened: usize,
}

/// One health project, deduplicated across sinks.
#[derive(Debug, Clone, PartialEq)]
struct Opening {
    account: String,
    opened_at: DateTime<Utc>,
    /// `Some(None)`: resolved at an unknown time (an earlier opening of a project opened again, which the
    /// planner only does after the previous one was resolved).
    resolved: Option<Option<DateTime<Utc>>>,
}

/// The stored projects as distinct health-project openings. `advocacy` holds the playbook ids that are not
/// about health (advocate candidates).
fn openings(projects: &[ProjectRecord], advocacy: &BTreeSet<String>) -> Vec<Opening> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for p in projects.iter().filter(|p| !advocacy.contains(&p.playbook)) {
        let current = (
            p.opened_at,
            match p.state {
                ProjectState::Pending | ProjectState::Open => None,
                ProjectState::Resolved { at } => Some(Some(at)),
            },
        );
        let earlier = p.earlier_openings.iter().map(|t| (*t, Some(None)));
        for (opened_at, resolved) in earlier.chain([current]) {
            if seen.insert((p.account_id.clone(), p.playbook.clone(), opened_at)) {
                out.push(Opening {
                    account: p.account_id.clone(),
                    opened_at,
                    resolved,
                });
            }
        }
    }
    out.sort_by(|a, b| (a.opened_at, &a.account).cmp(&(b.opened_at, &b.account)));
    out
}

/// The newest point on or before `day`.
pub fn at(series: &[HistoryPoint], day: NaiveDate) -> Option<&HistoryPoint> {
    let after = series.partition_point(|p| p.day <= day);
    after.checked_sub(1).map(|i| &series[i])
}

/// The overall score's change from `start` to `days` later, once the history reaches that far.
fn change(series: &[HistoryPoint], start: NaiveDate, days: i64) -> Option<f64> {
    let end = start + Duration::days(days);
    if series.last()?.day < end {
        return None;
    }
    Some(at(series, end)?.overall? - at(series, start)?.overall?)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Accounts with no health project that were in one band on one day, and their mean change in score
/// over each of `WINDOWS` from that day.
type Peers = (Vec<String>, [Option<f64>; 2]);

#[derive(Default)]
struct RowAcc {
    projects: usize,
    with_accounts: BTreeSet<String>,
    with_changes: [Vec<f64>; 2],
    comparable_accounts: BTreeSet<String>,
    comparable_changes: [Vec<f64>; 2],
}

impl RowAcc {
    fn finish(&self, band: Option<Band>, current: &BTreeMap<String, f64>) -> ImpactRow {
        let health = |accounts: &BTreeSet<String>| {
            mean(accounts.iter().filter_map(|a| current.get(a).copied()))
        };
        let group = |accounts: &BTreeSet<String>, changes: &[Vec<f64>; 2]| GroupHealth {
            accounts: accounts.len(),
            health_now: health(accounts),
            change_30d: mean(changes[0].iter().copied()),
            measured_30d: changes[0].len(),
            change_60d: mean(changes[1].iter().copied()),
            measured_60d: changes[1].len(),
        };
        ImpactRow {
            starting_band: band,
            projects: self.projects,
            with_projects: group(&self.with_accounts, &self.with_changes),
            comparable: group(&self.comparable_accounts, &self.comparable_changes),
        }
    }
}

/// Completed projects against comparable accounts with none, per starting band and overall.
fn compare(
    openings_: &[Opening],
    histories: &Histories,
    current: &BTreeMap<String, f64>,
) -> (Vec<ImpactRow>, usize) {
    let with_any: BTreeSet<&str> = openings_.iter().map(|o| o.account.as_str()).collect();
    let mut rows: BTreeMap<Band, RowAcc> = BTreeMap::new();
    let mut all = RowAcc::default();
    let mut unplaced = 0;
    let empty = Vec::new();
    let mut peer_cache: BTreeMap<(NaiveDate, Band), Peers> = BTreeMap::new();
    for o in openings_.iter().filter(|o| o.resolved.is_some()) {
        let start = o.opened_at.date_naive();
        let series = histories.get(&o.account).unwrap_or(&empty);
        let Some(band) = at(series, start).and_then(|p| p.band) else {
            unplaced += 1;
            continue;
        };
        // Projects open on the same days (one scoring run a day), so the peers of a (day, band) and their
        // mean changes are worked out once: accounts × days instead of accounts × projects.
        let peers = peer_cache.entry((start, band)).or_insert_with(|| {
            let accounts: Vec<(&String, &Vec<HistoryPoint>)> = histories
                .iter()
                .filter(|(a, s)| {
                    !with_any.contains(a.as_str())
                        && at(s, start).and_then(|p| p.band) == Some(band)
                })
                .collect();
            let changes = WINDOWS
                .map(|days| mean(accounts.iter().filter_map(|(_, s)| change(s, start, days))));
            let ids: Vec<String> = accounts.into_iter().map(|(a, _)| a.clone()).collect();
            (ids, changes)
        });
        for acc in [rows.entry(band).or_default(), &mut all] {
            acc.projects += 1;
            acc.with_accounts.insert(o.account.clone());
            acc.comparable_accounts.extend(peers.0.iter().cloned());
            for (i, days) in WINDOWS.into_iter().enumerate() {
                if let Some(c) = change(series, start, days) {
                    acc.with_changes[i].push(c);
                }
                if let Some(c) = peers.1[i] {
                    acc.comparable_changes[i].push(c);
                }
            }
        }
    }
    let mut out: Vec<ImpactRow> = rows
        .iter()
        .map(|(band, acc)| acc.finish(Some(*band), current))
        .collect();
    out.push(all.finish(None, current));
    (out, unplaced)
}

/// Projects by the Monday of the week they opened.
fn weeks(openings_: &[Opening]) -> Vec<WeekStatus> {
    let mut by_week: BTreeMap<NaiveDate, WeekStatus> = BTreeMap::new();
    for o in openings_ {
        let day = o.opened_at.date_naive();
        let week_start = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
        let w = by_week.entry(week_start).or_insert(WeekStatus {
            week_start,
            opened: 0,
            open: 0,
            resolved: 0,
        });
        w.opened += 1;
        if o.resolved.is_some() {
            w.resolved += 1;
        } else {
            w.open += 1;
        }
    }
    by_week.into_values().collect()
}

fn recovery(openings_: &[Opening]) -> Recovery {
    let mut days = Vec::new();
    let mut out_of_order = 0;
    for o in openings_ {
        if let Some(Some(at)) = o.resolved {
            if at < o.opened_at {
                out_of_order += 1;
            } else {
                days.push((at - o.opened_at).num_seconds() as f64 / 86_400.0);
            }
        }
    }
    Recovery {
        resolved: days.len(),
        median_days: median(days),
        still_open: openings_.iter().filter(|o| o.resolved.is_none()).count(),
        resolved_before_opened: out_of_order,
    }
}

/// The whole project-impact section. `current` maps each account to its current overall score.
pub fn project_impact(
    projects: &[ProjectRecord],
    advocacy: &BTreeSet<String>,
    histories: &Histories,
    current: &BTreeMap<String, f64>,
) -> ProjectImpact {
    let list = openings(projects, advocacy);
    let (comparison, unplaced) = compare(&list, histories, current);
    let recovery = recovery(&list);
    let resolved = list.iter().filter(|o| o.resolved.is_some()).count();
    let mut notes = Vec::new();
    if list.is_empty() {
        notes.push("no health projects yet: playbooks have not opened any".to_string());
    } else if resolved == 0 {
        notes.push(format!(
            "none of the {} health projects is completed yet: there is no impact to measure",
            list.len()
        ));
    }
    if unplaced > 0 {
        notes.push(format!(
            "{unplaced} completed project(s) opened before their account's score history begins: left out of the comparison"
        ));
    }
    if recovery.resolved_before_opened > 0 {
        notes.push(format!(
            "{} project(s) were resolved before they opened (scoring runs replayed out of time order): left out of the time to recovery",
            recovery.resolved_before_opened
        ));
    }
    let total = comparison.last();
    if resolved > 0 && total.is_some_and(|r| r.with_projects.measured_30d == 0) {
        notes.push(
            "no completed project has 30 days of score history after it opened yet".to_string(),
        );
    }
    ProjectImpact {
        projects: list.len(),
        open: list.len() - resolved,
        resolved,
        comparison,
        weeks: weeks(&list),
        recovery,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + Duration::days(i64::from(d))
    }

    fn t(d: u32) -> DateTime<Utc> {
        Utc.from_utc_datetime(&day(d).and_hms_opt(6, 0, 0).unwrap())
    }

    fn band(score: f64) -> Band {
        if score < 40.0 {
            Band::Red
        } else if score < 70.0 {
            Band::Amber
        } else {
            Band::Green
        }
    }

    /// A history with a point every 10 days from day 0, scores from `f(day)`.
    fn series(until: u32, f: impl Fn(u32) -> f64) -> Vec<HistoryPoint> {
        (0..=until)
            .step_by(10)
            .map(|d| HistoryPoint {
                day: day(d),
                overall: Some(f(d)),
                band: Some(band(f(d))),
            })
            .collect()
    }

    fn project(account: &str, playbook: &str, opened: u32, state: ProjectState) -> ProjectRecord {
        ProjectRecord {
            sink: "vitally".into(),
            account_id: account.into(),
            playbook: playbook.into(),
            key: format!("{account}/{playbook}"),
            name: "Poor Health: Usage".into(),
            opened_at: t(opened),
            state,
            earlier_openings: Vec::new(),
        }
    }

    fn current(h: &Histories) -> BTreeMap<String, f64> {
        h.iter()
            .map(|(a, s)| (a.clone(), s.last().unwrap().overall.unwrap()))
            .collect()
    }

    #[test]
    fn completed_projects_are_compared_with_accounts_in_the_same_starting_band() {
        let mut h = Histories::new();
        // Helped: red at 30 on day 10, recovers by half a point a day.
        h.insert(
            "helped".into(),
            series(90, |d| {
                if d <= 10 {
                    30.0
                } else {
                    30.0 + f64::from(d - 10) / 2.0
                }
            }),
        );
        // Red peer without a project: stays at 35.
        h.insert("red_peer".into(), series(90, |_| 35.0));
        // Green account without a project: not comparable (another band on day 10).
        h.insert("green".into(), series(90, |_| 90.0));
        let projects = [project(
            "helped",
            "poor_usage",
            10,
            ProjectState::Resolved { at: t(45) },
        )];
        let impact = project_impact(&projects, &BTreeSet::new(), &h, &current(&h));

        assert_eq!((impact.projects, impact.open, impact.resolved), (1, 0, 1));
        let red = &impact.comparison[0];
        assert_eq!(red.starting_band, Some(Band::Red));
        assert_eq!(red.projects, 1);
        assert_eq!(red.with_projects.accounts, 1);
        assert_eq!(red.with_projects.change_30d, Some(15.0));
        assert_eq!(red.with_projects.change_60d, Some(30.0));
        assert_eq!(red.with_projects.health_now, Some(70.0));
        assert_eq!(
            red.comparable.accounts, 1,
            "only the red peer is comparable"
        );
        assert_eq!(red.comparable.change_30d, Some(0.0));
        assert_eq!(red.comparable.health_now, Some(35.0));
        let all = impact.comparison.last().unwrap();
        assert_eq!(all.starting_band, None);
        assert_eq!(all.with_projects, red.with_projects);
        assert_eq!(impact.recovery.median_days, Some(35.0));
        assert!(impact.notes.is_empty(), "{:?}", impact.notes);
    }

    #[test]
    fn a_window_that_has_not_passed_yet_is_not_measured() {
        let mut h = Histories::new();
        h.insert("a".into(), series(50, |_| 30.0));
        h.insert("peer".into(), series(50, |_| 30.0));
        let projects = [project("a", "p", 10, ProjectState::Resolved { at: t(20) })];
        let row = project_impact(&projects, &BTreeSet::new(), &h, &current(&h))
            .comparison
            .remove(0);
        assert_eq!(
            row.with_projects.measured_30d, 1,
            "day 40 is in the history"
        );
        assert_eq!(row.with_projects.measured_60d, 0, "day 70 is not");
        assert_eq!(row.with_projects.change_60d, None);
    }

    #[test]
    fn open_and_advocacy_projects_are_not_completed_health_projects() {
        let mut h = Histories::new();
        h.insert("a".into(), series(90, |_| 30.0));
        h.insert("b".into(), series(90, |_| 95.0));
        h.insert("peer".into(), series(90, |_| 30.0));
        let projects = [
            project("a", "poor_usage", 10, ProjectState::Open),
            project("b", "advocate", 10, ProjectState::Resolved { at: t(20) }),
        ];
        let advocacy = BTreeSet::from(["advocate".to_string()]);
        let impact = project_impact(&projects, &advocacy, &h, &current(&h));
        assert_eq!((impact.projects, impact.open, impact.resolved), (1, 1, 0));
        let all = impact.comparison.last().unwrap();
        assert_eq!(all.projects, 0);
        assert_eq!(all.comparable.accounts, 0);
        assert!(impact.notes[0].contains("none of the 1 health projects is completed"));
    }

    #[test]
    fn at_finds_the_newest_point_on_or_before_a_day() {
        let s = series(30, f64::from);
        assert_eq!(at(&s, day(0)).map(|p| p.day), Some(day(0)));
        assert_eq!(at(&s, day(15)).map(|p| p.day), Some(day(10)));
        assert_eq!(at(&s, day(30)).map(|p| p.day), Some(day(30)));
        assert_eq!(at(&s, day(99)).map(|p| p.day), Some(day(30)));
        assert_eq!(at(&s, day(0) - Duration::days(1)), None);
        assert_eq!(at(&[], day(5)), None);
    }

    #[test]
    fn no_projects_is_said_plainly() {
        let impact = project_impact(&[], &BTreeSet::new(), &Histories::new(), &BTreeMap::new());
        assert_eq!(impact.projects, 0);
        assert!(impact.weeks.is_empty());
        assert_eq!(impact.recovery.median_days, None);
        assert_eq!(
            impact.notes,
            ["no health projects yet: playbooks have not opened any"]
        );
    }

    #[test]
    fn projects_opened_before_the_history_are_left_out_and_said() {
        let mut h = Histories::new();
        h.insert(
            "a".into(),
            (20..=90)
                .step_by(10)
                .map(|d| HistoryPoint {
                    day: day(d),
                    overall: Some(30.0),
                    band: Some(Band::Red),
                })
                .collect(),
        );
        let projects = [project("a", "p", 5, ProjectState::Resolved { at: t(30) })];
        let impact = project_impact(&projects, &BTreeSet::new(), &h, &current(&h));
        assert_eq!(impact.comparison.last().unwrap().projects, 0);
        assert!(
            impact
                .notes
                .iter()
                .any(|n| n.starts_with("1 completed project(s) opened before")),
            "{:?}",
            impact.notes
        );
    }

    #[test]
    fn weeks_count_openings_by_their_monday_and_where_they_stand() {
        // 2026-01-01 is a Thursday: days 0..3 are in the week of Monday 2025-12-29, day 4 starts the next.
        let mut reopened = project("a", "p", 20, ProjectState::Open);
        reopened.earlier_openings = vec![t(1)];
        let projects = [
            project("b", "p", 0, ProjectState::Resolved { at: t(9) }),
            project("c", "p", 4, ProjectState::Pending),
            reopened,
            // The same opening confirmed by a second sink: one project.
            ProjectRecord {
                sink: "hubspot".into(),
                ..project("c", "p", 4, ProjectState::Pending)
            },
        ];
        let w = weeks(&openings(&projects, &BTreeSet::new()));
        let monday = NaiveDate::from_ymd_opt(2025, 12, 29).unwrap();
        assert_eq!(
            w,
            [
                WeekStatus {
                    week_start: monday,
                    opened: 2,
                    open: 0,
                    resolved: 2
                },
                WeekStatus {
                    week_start: monday + Duration::days(7),
                    opened: 1,
                    open: 1,
                    resolved: 0
                },
                WeekStatus {
                    week_start: monday + Duration::days(21),
                    opened: 1,
                    open: 1,
                    resolved: 0
                },
            ]
        );
    }

    #[test]
    fn recovery_is_the_median_of_known_resolution_times() {
        let mut reopened = project("d", "p", 50, ProjectState::Open);
        reopened.earlier_openings = vec![t(1)];
        let projects = [
            project("a", "p", 0, ProjectState::Resolved { at: t(10) }),
            project("b", "p", 0, ProjectState::Resolved { at: t(20) }),
            project("c", "p", 0, ProjectState::Resolved { at: t(60) }),
            reopened,
        ];
        let r = recovery(&openings(&projects, &BTreeSet::new()));
        // The earlier opening of d was resolved at an unknown time: not in the median.
        assert_eq!(
            r,
            Recovery {
                resolved: 3,
                median_days: Some(20.0),
                still_open: 1,
                resolved_before_opened: 0,
            }
        );
        assert_eq!(median(vec![1.0, 4.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn a_resolution_before_the_opening_is_left_out_and_said() {
        // What replaying runs with `--now` out of time order leaves behind.
        let mut h = Histories::new();
        h.insert("a".into(), series(90, |_| 30.0));
        let projects = [
            project("a", "p", 50, ProjectState::Resolved { at: t(10) }),
            project("b", "p", 0, ProjectState::Resolved { at: t(4) }),
        ];
        let impact = project_impact(&projects, &BTreeSet::new(), &h, &current(&h));
        assert_eq!(impact.recovery.median_days, Some(4.0));
        assert_eq!(impact.recovery.resolved_before_opened, 1);
        assert!(
            impact
                .notes
                .iter()
                .any(|n| n.starts_with("1 project(s) were resolved before they opened")),
            "{:?}",
            impact.notes
        );
    }
}
