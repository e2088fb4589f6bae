//! `healthsync validate` on the shipped config and on a dozen broken copies of it: exit codes, and each
//! problem named with its file and line.

use crate::support::{run, text, ConfigCopy};

/// Validates a broken copy and checks exit code 2 and that stderr names `file:line` and says `what`.
fn assert_invalid(copy: &ConfigCopy, file_line: &str, what: &str) -> String {
    let out = copy.validate();
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, stderr:\n{err}"
    );
    let needle = copy.path(file_line).display().to_string();
    assert!(err.contains(&needle), "expected {needle} in:\n{err}");
    assert!(err.contains(what), "expected {what:?} in:\n{err}");
    err
}

#[test]
fn shipped_config_is_valid() {
    let out = run(&[
        "validate",
        "--config",
        crate::support::repo()
            .join("config/healthsync.toml")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr:\n{}\nstdout:\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("config is valid"));
    assert!(
        text(&out.stdout).contains("note: sink vitally (vitally): projects cannot be completed"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn unknown_key_in_daemon_file() {
    let c = ConfigCopy::new();
    c.edit("config/healthsync.toml", "listen =", "listne =");
    assert_invalid(&c, "config/healthsync.toml:15", "unknown field `listne`");
}

#[test]
fn five_field_cron_is_explained() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/hubspot.toml",
        "schedule = \"0 */30 * * * *\"",
        "schedule = \"*/30 * * * *\"",
    );
    assert_invalid(&c, "connectors/hubspot.toml:4", "need 6 with seconds first");
}

#[test]
fn bad_cron_expression() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/stripe.toml",
        "schedule = \"0 5 * * * *\"",
        "schedule = \"0 75 * * * *\"",
    );
    assert_invalid(&c, "connectors/stripe.toml:4", "bad cron expression");
}

#[test]
fn daemon_timing_keys_out_of_range_are_all_reported() {
    let c = ConfigCopy::new();
    c.edit(
        "config/healthsync.toml",
        "jitter_secs = 10",
        "jitter_secs = -1",
    );
    c.edit(
        "config/healthsync.toml",
        "shutdown_grace_secs = 20",
        "shutdown_grace_secs = 100000",
    );
    let err = assert_invalid(
        &c,
        "config/healthsync.toml:19",
        "jitter_secs must be between 0 and 3600",
    );
    let line = c.path("config/healthsync.toml:22").display().to_string();
    assert!(err.contains(&line), "{err}");
    assert!(
        err.contains("shutdown_grace_secs must be between 0 and 600"),
        "{err}"
    );
}

#[test]
fn max_age_out_of_range() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/stripe.toml",
        "schedule = \"0 5 * * * *\"",
        "schedule = \"0 5 * * * *\"\nmax_age_mins = 0",
    );
    assert_invalid(
        &c,
        "connectors/stripe.toml:5",
        "max_age_mins must be between 1 and 525600",
    );
}

#[test]
fn unknown_log_format_lists_the_known_ones() {
    let c = ConfigCopy::new();
    c.edit(
        "config/healthsync.toml",
        "format = \"auto\"",
        "format = \"syslog\"",
    );
    assert_invalid(
        &c,
        "config/healthsync.toml",
        "unknown log format `syslog`; use auto, text, json or journald",
    );
}

#[test]
fn playbook_drop_out_of_range_and_with_enters_are_both_reported() {
    let c = ConfigCopy::new();
    c.edit(
        "config/models/starter.toml",
        "cooldown_days = 30\n",
        "cooldown_days = 30\ndrop = { points = 200, days = 30 }\n",
    );
    let err = assert_invalid(
        &c,
        "config/models/starter.toml:127",
        "playbook poor_usage: drop needs points between 1 and 99",
    );
    let enters = c
        .path("config/models/starter.toml:125")
        .display()
        .to_string();
    assert!(err.contains(&enters), "{err}");
    assert!(err.contains("enters and drop exclude each other"), "{err}");
}

#[test]
fn thriving_playbook_excludes_enters() {
    let c = ConfigCopy::new();
    c.edit(
        "config/models/starter.toml",
        "cooldown_days = 30\n",
        "cooldown_days = 30\nthriving_days = 60\n",
    );
    assert_invalid(
        &c,
        "config/models/starter.toml:127",
        "playbook poor_usage: thriving_days watches a score staying green; it excludes enters",
    );
}

#[test]
fn missing_model_file() {
    let c = ConfigCopy::new();
    c.edit(
        "config/healthsync.toml",
        "models/starter.toml",
        "models/missing.toml",
    );
    let out = c.validate();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("models/missing.toml: cannot read file: no such file"),
        "{err}"
    );
}

#[test]
fn plaintext_secret_is_refused_without_echoing_it() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/stripe.toml",
        "token = \"env:STRIPE_API_KEY\"",
        "token = \"sk_live_51Hsecretvalue\"",
    );
    let err = assert_invalid(
        &c,
        "connectors/stripe.toml:10",
        "secret values do not belong in config files",
    );
    assert!(
        !err.contains("sk_live_51Hsecretvalue"),
        "the secret was echoed:\n{err}"
    );
}

#[test]
fn category_weights_must_add_up() {
    let c = ConfigCopy::new();
    c.edit("config/models/starter.toml", "weight = 45", "weight = 35");
    assert_invalid(
        &c,
        "config/models/starter.toml:",
        "category weights add up to 90, they must add up to 100",
    );
}

#[test]
fn toml_syntax_error() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/usage.toml",
        "page_size = 500",
        "page_size = = 500",
    );
    assert_invalid(&c, "connectors/usage.toml:6", "invalid string");
}

#[test]
fn unknown_kind_lists_known_kinds() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/hubspot.toml",
        "kind = \"hubspot\"",
        "kind = \"hubspt\"",
    );
    let err = assert_invalid(
        &c,
        "connectors/hubspot.toml:2",
        "unknown connector kind `hubspt`; known kinds: ",
    );
    for k in ["hubspot", "stripe", "usage_feed", "vitally"] {
        assert!(err.contains(k), "known kind {k} not listed:\n{err}");
    }
}

#[test]
fn unknown_metric_in_category() {
    let c = ConfigCopy::new();
    c.edit(
        "config/models/starter.toml",
        "metrics = { days_since_contact = 100 }",
        "metrics = { days_since_kontakt = 100 }",
    );
    assert_invalid(
        &c,
        "config/models/starter.toml:",
        "uses unknown metric `days_since_kontakt`",
    );
}

#[test]
fn missing_auth_secret() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/usage.toml",
        "token = \"env:USAGE_FEED_TOKEN\"",
        "",
    );
    assert_invalid(
        &c,
        "connectors/usage.toml:8",
        "auth scheme bearer needs `token`",
    );
}

#[test]
fn template_with_unknown_variable() {
    let c = ConfigCopy::new();
    c.edit(
        "config/models/starter.toml",
        "project = \"Poor Health: {{ target.label }}\"",
        "project = \"Poor Health: {{ categroy }}\"",
    );
    assert_invalid(
        &c,
        "config/models/starter.toml:",
        "unknown template variable(s) categroy",
    );
}

#[test]
fn stream_the_kind_does_not_have() {
    let c = ConfigCopy::new();
    c.edit("connectors/stripe.toml", "\"invoices\"]", "\"refunds\"]");
    assert_invalid(
        &c,
        "connectors/stripe.toml:6",
        "kind stripe has no stream `refunds`",
    );
}

#[test]
fn bad_base_url() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/vitally.toml",
        "https://acme.rest.vitally.io",
        "acme.rest.vitally.io",
    );
    assert_invalid(&c, "connectors/vitally.toml:4", "base_url");
}

#[test]
fn every_problem_is_reported_at_once() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/hubspot.toml",
        "kind = \"hubspot\"",
        "kind = \"nope\"",
    );
    c.edit("connectors/vitally.toml", "requests = 1000", "requests = 0");
    c.edit(
        "config/models/starter.toml",
        "red_below = 60",
        "red_below = 90",
    );
    let out = c.validate();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("unknown connector kind `nope`"), "{err}");
    assert!(err.contains("rate_limit needs requests between 1"), "{err}");
    assert!(
        err.contains("bands need 1 < red_below < green_from"),
        "{err}"
    );
}

#[test]
fn garbage_never_panics() {
    // Odd but parseable inputs must give exit 2 and a message, never a panic (exit 101).
    let cases: &[(&str, &str)] = &[
        ("connectors/hubspot.toml", ""),
        ("connectors/hubspot.toml", "kind = 5"),
        ("connectors/hubspot.toml", "\u{0}\u{1}binary"),
        ("config/models/starter.toml", "version = 1\nname = \"x\""),
        ("config/healthsync.toml", "version = 99999999999999999999"),
        (
            "config/models/starter.toml",
            &std::fs::read_to_string(crate::support::repo().join("config/models/starter.toml"))
                .unwrap()
                .replace(
                    "[[0.05, 1], [0.3, 50], [0.7, 100]]",
                    "[[0.7, 1], [0.3, 50]]",
                ),
        ),
    ];
    for (file, body) in cases {
        let c = ConfigCopy::new();
        c.write(file, body);
        let out = c.validate();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{file} with {body:?}:\n{}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error: "), "{file}: no message");
    }
}

#[test]
fn json_output_lists_errors() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/hubspot.toml",
        "kind = \"hubspot\"",
        "kind = \"nope\"",
    );
    let out = run(&[
        "validate",
        "--json",
        "--config",
        c.daemon().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 2);
}

#[test]
fn oauth2_auth_keys_are_checked_with_their_lines() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/salesforce.toml",
        "client_secret = \"env:SALESFORCE_CLIENT_SECRET\"\n",
        "",
    );
    c.edit(
        "connectors/salesforce.toml",
        "token_url = \"https://yourcompany.my.salesforce.com/services/oauth2/token\"",
        "token_url = \"login.salesforce.com\"",
    );
    let text = assert_invalid(
        &c,
        "connectors/salesforce.toml:12",
        "auth.token_url must be an http or https URL with a host",
    );
    assert!(
        text.contains("connectors/salesforce.toml:10: auth scheme oauth2_client_credentials needs `client_secret`"),
        "{text}"
    );
    let c = ConfigCopy::new();
    c.edit(
        "connectors/stripe.toml",
        "scheme = \"bearer\"",
        "scheme = \"bearer\"\nclient_id = \"env:X\"",
    );
    assert_invalid(
        &c,
        "connectors/stripe.toml:10",
        "auth.client_id is only used by the oauth2_client_credentials and oauth2_refresh_token schemes",
    );
}

#[test]
fn new_source_kinds_check_their_params() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/mixpanel.toml",
        "backfill_days = 30",
        "backfill_days = 0",
    );
    c.edit(
        "connectors/salesforce.toml",
        "max_api_usage_percent = 90",
        "max_api_usage_percent = 150",
    );
    c.edit(
        "connectors/chargebee.toml",
        "crm_id_field = \"cf_hubspot_company_id\"",
        "crm_id_field = 7",
    );
    let text = assert_invalid(
        &c,
        "connectors/mixpanel.toml:",
        "`backfill_days` must be an integer from 1 to 365",
    );
    assert!(
        text.contains("`max_api_usage_percent` must be an integer from 1 to 100"),
        "{text}"
    );
    assert!(
        text.contains("`crm_id_field` must be a non-empty string"),
        "{text}"
    );
}

#[test]
fn api_key_query_needs_its_param_and_sink_params_are_checked() {
    let c = ConfigCopy::new();
    c.edit("connectors/churnzero.toml", "param = \"appKey\"", "");
    c.edit(
        "connectors/salesforce_sink.toml",
        "key_field = \"Healthsync_Key__c\"",
        "key_field = \"Healthsync Key\"",
    );
    let text = assert_invalid(
        &c,
        "connectors/churnzero.toml:10",
        "auth scheme api_key_query needs `param`",
    );
    assert!(
        text.contains("`key_field` `Healthsync Key` is not a Salesforce field name"),
        "{text}"
    );
}

#[test]
fn clientsuccess_and_customersuccessbox_params_are_checked() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/customersuccessbox.toml",
        "playbook_attribute_prefix = \"Healthsync Playbook \"",
        "playbook_attribute_prefix = \" \"",
    );
    c.edit(
        "connectors/clientsuccess.toml",
        "[rate_limit]",
        "[params]\nsecret = \"x\"\n\n[rate_limit]",
    );
    let text = assert_invalid(
        &c,
        "connectors/customersuccessbox.toml:",
        "`playbook_attribute_prefix` must be a non-empty string",
    );
    assert!(text.contains("connectors/clientsuccess.toml:"), "{text}");
    assert!(text.contains("secret"), "{text}");
}

#[test]
fn outcomes_problems_are_all_reported_with_their_lines() {
    let c = ConfigCopy::new();
    c.edit(
        "config/models/starter.toml",
        "subscriptions = \"stripe.subscriptions\"",
        "subscriptions = \"stripe.subscription\"",
    );
    c.edit(
        "config/models/starter.toml",
        "double(r.items.data[0].price.unit_amount)",
        "double(sub.items.data[0].price.unit_amount)",
    );
    c.edit(
        "config/models/starter.toml",
        "renewal_grace_days = 30",
        "renewal_grace_days = -1",
    );
    let err = assert_invalid(&c, "config/models/starter.toml:171", "subscription");
    for (line, what) in [
        (174, "outcomes.mrr: unknown variable(s) sub"),
        (
            175,
            "outcomes.renewal_grace_days must be between 0 and 3650 days, not -1",
        ),
    ] {
        let at = c
            .path(&format!("config/models/starter.toml:{line}"))
            .display()
            .to_string();
        assert!(
            err.contains(&at) && err.contains(what),
            "{at} {what} in:\n{err}"
        );
    }
}

#[test]
fn an_export_kind_filed_as_a_sink_is_told_to_be_an_export() {
    let c = ConfigCopy::new();
    c.edit(
        "connectors/file_export.toml",
        "role = \"export\"",
        "role = \"sink\"",
    );
    let err = assert_invalid(
        &c,
        "connectors/file_export.toml:6",
        "kind file_export writes files after each scoring run: set role = \"export\"",
    );
    assert!(
        err.contains("1 problem(s) found"),
        "only the hint, no serde noise: {err}"
    );
}

#[test]
fn a_fifo_named_like_a_connector_file_is_refused_not_read() {
    // Issue 25, case 9: reading a FIFO blocks until a writer comes, so `validate` hung.
    let c = ConfigCopy::new();
    let fifo = c.path("connectors/pipe.toml");
    let path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path and a mode; mkfifo only creates a file system node.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
    assert_invalid(&c, "connectors/pipe.toml", "is not a regular file");
}

#[test]
fn command_line_bounds_are_usage_errors() {
    // Issue 25, case 9: an unbounded backfill or population ran until it ran out of time or memory.
    for (args, bound) in [
        (&["score", "--backfill-weeks", "5000"][..], "0..=520"),
        (&["sim", "--accounts", "100000000"][..], "1..=200000"),
        (&["demo", "--accounts", "0"][..], "1..=200000"),
        // Issue 25, case 9: `run` silently ignored `--now`.
        (
            &["run", "--now", "2026-01-01T00:00:00Z"][..],
            "--now has no meaning",
        ),
    ] {
        let out = run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(bound), "{args:?}: expected {bound} in {err}");
    }
}
