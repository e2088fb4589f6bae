//! The planner against a real store and the shipped config: only changed fields are planned, a red
//! account opens one project, a recovered one closes it, and cooldown and the opening limit hold.

use std::path::Path;

use chrono::TimeZone as _;

use super::*;
use crate::config::{Config, OpenLimit, ScoreDrop, TaskTemplate};
use crate::pipeline::Runtime;

fn t(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid time")
        + Duration::days(i64::from(day))
}

/// The shipped config (its secrets need not resolve: nothing is sent) with one overall playbook.
fn config(limit: Option<OpenLimit>) -> Config {
    config_with(limit, None)
}

fn config_with(limit: Option<OpenLimit>, drop: Option<ScoreDrop>) -> Config {
    let mut c = crate::config::load(
        Path::new("config/healthsync.toml"),
        &crate::connector::kinds::catalog(),
    )
    .expect("shipped config");
    c.model.playbooks = vec![Playbook {
        id: "overall_red".into(),
        when: Target::Overall,
        enters: Band::Red,
        cooldown_days: 10,
        limit,
        drop,
        thriving_days: None,
        project: "Poor Health: {{ account.name }}".into(),
        description: "Overall score {{ score }}".into(),
        tasks: vec![TaskTemplate {
            name: "Call {{ account.name }}".into(),
            description: "Find out why".into(),
            for_each: ForEach::Once,
            due_days: 3,
        }],
    }];
    c
}

fn score(id: &str, overall: f64, band: Band, day: u32) -> AccountScore {
    AccountScore::overall_only(id, overall, band, t(day))
}

/// Plans, then enqueues and confirms everything as a platform would: the next plan sees it landed.
fn plan_and_land(rt: &Runtime, scores: &[AccountScore], now: DateTime<Utc>) -> Plan {
    let plan = rt.plan(scores, now).expect("plan");
    rt.enqueue(&plan, now).expect("enqueue");
    for e in rt.store.outbox(None).expect("outbox") {
        rt.store.confirm(&e).expect("confirm");
    }
    plan
}

fn ops(plan: &Plan) -> Vec<&'static str> {
    plan.writes.iter().map(|w| w.op.kind()).collect()
}

#[test]
fn only_changed_fields_are_planned() {
    let rt = Runtime::build(config(None), Store::temporary().expect("store"));
    let first = plan_and_land(&rt, &[score("a", 70.0, Band::Amber, 0)], t(0));
    assert_eq!(ops(&first), vec!["set_fields"]);
    // Same score again: nothing to send.
    let again = rt
        .plan(&[score("a", 70.0, Band::Amber, 1)], t(1))
        .expect("plan");
    assert!(again.writes.is_empty(), "{:?}", again.writes);
    // The score moves within amber: only the fields that changed, with the old value.
    let moved = rt
        .plan(&[score("a", 72.0, Band::Amber, 2)], t(2))
        .expect("plan");
    assert_eq!(moved.writes.len(), 1);
    let changed: Vec<(&str, String)> = moved.writes[0]
        .changes
        .iter()
        .map(|c| {
            (
                c.field.as_str(),
                c.old.as_ref().map(|v| v.to_string()).unwrap_or_default(),
            )
        })
        .collect();
    assert!(changed.iter().any(|(_, old)| old == "70"), "{changed:?}");
    // The computation time rides along with the change (it never causes a write by itself: see `again`).
    assert!(
        changed.iter().any(|(f, _)| *f == "healthsyncComputedAt"),
        "{changed:?}"
    );
    assert!(
        changed.iter().all(|(f, _)| !f.contains("band")),
        "the band did not change: {changed:?}"
    );
}

#[test]
fn red_opens_one_project_and_recovery_closes_it() {
    let rt = Runtime::build(config(None), Store::temporary().expect("store"));
    let red = plan_and_land(&rt, &[score("a", 30.0, Band::Red, 0)], t(0));
    assert_eq!(red.projects(), 1);
    let WriteOp::CreateProject { name, tasks, .. } = &red.writes[1].op else {
        panic!("expected a project, got {:?}", red.writes[1].op);
    };
    assert_eq!(name, "Poor Health: Account a");
    assert_eq!(tasks[0].name, "Call Account a");
    // Still red: the open project is not opened again.
    let still = rt
        .plan(&[score("a", 30.0, Band::Red, 1)], t(1))
        .expect("plan");
    assert_eq!(still.projects(), 0);

    let green = plan_and_land(&rt, &[score("a", 85.0, Band::Green, 2)], t(2));
    assert_eq!(green.closures(), 1);
    assert_eq!(green.recoveries.len(), 1);
    let close = green
        .writes
        .iter()
        .find_map(|w| match &w.op {
            WriteOp::CloseProject { key, note, .. } => {
                Some((w.key.clone(), key.clone(), note.clone()))
            }
            _ => None,
        })
        .expect("a close");
    assert_eq!(close.0, format!("{}/close", close.1));
    assert!(close.2.contains("Account a recovered"), "{}", close.2);
    assert!(matches!(
        rt.store
            .project("vitally", "a", "overall_red")
            .expect("read")
            .map(|p| p.state),
        Some(ProjectState::Resolved { .. })
    ));
    // Recovered and staying green: nothing more to close.
    let after = rt
        .plan(&[score("a", 85.0, Band::Green, 3)], t(3))
        .expect("plan");
    assert_eq!(after.closures(), 0);
}

#[test]
fn cooldown_then_limit_hold_back_new_projects() {
    let limit = OpenLimit { times: 2, days: 60 };
    let rt = Runtime::build(config(Some(limit)), Store::temporary().expect("store"));
    let cycle =
        |day: u32| plan_and_land(&rt, &[score("a", 30.0, Band::Red, day)], t(day)).projects();
    let recover = |day: u32| {
        plan_and_land(&rt, &[score("a", 85.0, Band::Green, day)], t(day));
    };
    assert_eq!(cycle(0), 1);
    recover(1);
    // Red again within the 10-day cooldown after resolution: no project.
    assert_eq!(cycle(5), 0);
    // After the cooldown: the second opening in 60 days is allowed.
    assert_eq!(cycle(12), 1);
    recover(13);
    // A third within 60 days of the first is not, even past the cooldown.
    assert_eq!(cycle(30), 0);
    // Once the first opening is more than 60 days old, one more may open.
    assert_eq!(cycle(61), 1);
    let p = rt
        .store
        .project("vitally", "a", "overall_red")
        .expect("read")
        .expect("project");
    assert_eq!(p.earlier_openings, vec![t(12)]);
}

#[test]
fn a_drop_playbook_opens_on_the_fall_and_closes_once_back_within_half() {
    let drop = ScoreDrop {
        points: 15.0,
        days: 30,
    };
    let rt = Runtime::build(
        config_with(None, Some(drop)),
        Store::temporary().expect("store"),
    );
    let history = |day: u32, overall: f64| {
        let s = score("a", overall, Band::Green, day);
        rt.store
            .put_scores(t(day).date_naive(), &[("a".to_string(), &s)])
            .expect("history");
    };
    history(0, 90.0);
    // 10 points down: not yet.
    history(3, 80.0);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 80.0, Band::Green, 3)], t(3)).projects(),
        0
    );
    // 16 points below the 30-day high, still green: the drop opens the project, the band does not matter.
    history(5, 74.0);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 74.0, Band::Amber, 5)], t(5)).projects(),
        1
    );
    // Up to 80 (10 below the high): between the thresholds, the project stays open.
    history(6, 80.0);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 80.0, Band::Green, 6)], t(6)).closures(),
        0
    );
    // Within half the drop (7.5 points) of the high: recovered, closed.
    history(7, 84.0);
    let plan = plan_and_land(&rt, &[score("a", 84.0, Band::Green, 7)], t(7));
    assert_eq!(plan.closures(), 1);
    let note = plan
        .writes
        .iter()
        .find_map(|w| match &w.op {
            WriteOp::CloseProject { note, .. } => Some(note.clone()),
            _ => None,
        })
        .expect("close");
    assert!(
        note.contains("back within 7.5 points of its 30-day high of 90"),
        "{note}"
    );
    // Forty days on, the old high has left the window: the same score triggers nothing.
    history(47, 70.0);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 70.0, Band::Amber, 47)], t(47)).projects(),
        0
    );
}

#[test]
fn green_for_the_whole_window_opens_an_advocate_project_and_leaving_green_closes_it() {
    let mut c = config(None);
    c.model.playbooks[0].thriving_days = Some(60);
    let rt = Runtime::build(c, Store::temporary().expect("store"));
    let history = |day: u32, band: Band| {
        let s = score(
            "a",
            if band == Band::Green { 90.0 } else { 70.0 },
            band,
            day,
        );
        rt.store
            .put_scores(t(day).date_naive(), &[("a".to_string(), &s)])
            .expect("history");
    };
    for day in (0..=50).step_by(10) {
        history(day, Band::Green);
    }
    // Fifty days of green: history does not reach back 60 days yet.
    assert_eq!(
        plan_and_land(&rt, &[score("a", 90.0, Band::Green, 50)], t(50)).projects(),
        0
    );
    history(60, Band::Green);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 90.0, Band::Green, 60)], t(60)).projects(),
        1
    );
    // Still green: nothing more. Amber: the advocacy project closes.
    history(61, Band::Green);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 90.0, Band::Green, 61)], t(61))
            .writes
            .len(),
        0
    );
    history(62, Band::Amber);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 70.0, Band::Amber, 62)], t(62)).closures(),
        1
    );
    // One amber day inside the window keeps it from opening again on the next green day.
    history(80, Band::Green);
    assert_eq!(
        plan_and_land(&rt, &[score("a", 90.0, Band::Green, 80)], t(80)).projects(),
        0
    );
}
