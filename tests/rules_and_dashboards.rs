//! Static checks of the alert rules (`deploy/prometheus/`), the Alertmanager example and the
//! Grafana dashboards and provisioning (`grafana/`):
//! - `promtool check rules` and the rules' unit tests (`promtool test rules`);
//! - every dashboard query, template variables expanded, parsed by promtool as a recording rule;
//! - every dashboard type-checked against Grafana's published schema (`grafana/schema-check`);
//! - this project's conventions for rules and dashboards, with tests proving that each check
//!   rejects a copy of a good dashboard broken in that one way.
//!
//! Tools: promtool (Debian `prometheus`), amtool (Debian `prometheus-alertmanager`), node and npm.
//! A missing tool skips its test with a message, unless `BALANCE_EXPORTER_CI=1`: then it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use serde_json::{Value, json};

mod common;
mod dashboards;
use common::{describe, run_in as run, tool};
use dashboards::*;

// ---------------------------------------------------------------------------------------------
// The contract these files rely on.

const ALERTS: [(&str, &str); 12] = [
    ("BalanceLow", "warning"),
    ("BalanceCritical", "critical"),
    ("BalanceMissing", "warning"),
    ("BalanceDepletingSoon", "warning"),
    ("BalanceExporterAccountDown", "warning"),
    ("BalanceStale", "warning"),
    ("BalanceProviderAuthFailing", "critical"),
    ("BalanceProviderRateLimited", "warning"),
    ("BalanceClockSkew", "warning"),
    ("BalanceExporterDown", "critical"),
    ("BalanceThresholdMissing", "info"),
    ("BalanceExporterReloadFailed", "warning"),
];

/// Alerts about the scrape target as a whole: they have no account or currency to name.
const TARGET_LEVEL_ALERTS: [&str; 2] = ["BalanceExporterDown", "BalanceExporterReloadFailed"];

/// Where RUNBOOK.md is, relative to the repository URL Cargo.toml declares.
const RUNBOOK_PATH: &str = "/blob/main/deploy/prometheus/RUNBOOK.md";

/// The files that hold alert rules or their expected annotations, and so runbook links.
const RULE_FILES: [&str; 3] = [
    "deploy/prometheus/alerts.yml",
    "deploy/prometheus/alerts.test.yml",
    "deploy/kubernetes/prometheusrule.yaml",
];

/// The exporter's metric names (issue 2's table); a misspelt one would silently match nothing.
const METRICS: [&str; 16] = [
    "balance_amount",
    "balance_low_threshold",
    "balance_overview_amount",
    "balance_account_status",
    "balance_up",
    "balance_last_success_timestamp_seconds",
    "balance_poll_interval_seconds",
    "balance_poll_duration_seconds",
    "balance_api_requests_total",
    "balance_api_errors_total",
    "balance_api_request_duration_seconds",
    "balance_clock_skew_seconds",
    "balance_token_refreshes_total",
    "balance_exporter_build_info",
    "balance_exporter_config_last_reload_successful",
    "balance_exporter_config_last_reload_success_timestamp_seconds",
];
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Metrics whose values are money: aggregating them must keep `currency`.
const MONEY_METRICS: [&str; 3] = [
    "balance_amount",
    "balance_low_threshold",
    "balance_overview_amount",
];

/// Aggregations that combine values (count and group only count series).
const VALUE_AGGREGATORS: [&str; 9] = [
    "sum", "avg", "min", "max", "stddev", "stdvar", "quantile", "topk", "bottomk",
];

const FILTER_VARIABLES: [&str; 5] = ["job", "instance", "provider", "account", "currency"];

// ---------------------------------------------------------------------------------------------
// Files and tools.

/// A scratch directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("balance_exporter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// PromQL text helpers. Not a parser (promtool is the parser); enough to find function calls,
// aggregations and their grouping clauses outside string literals.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Punct(char),
    /// String literals, numbers, durations, `$variables`, operators of several characters.
    Other(&'a str),
}

fn tokens(expr: &str) -> Vec<(usize, Tok<'_>)> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < bytes.len() && bytes[i] as char != c {
                i += if bytes[i] == b'\\' && c != '`' { 2 } else { 1 };
            }
            i = (i + 1).min(bytes.len());
            out.push((start, Tok::Other(&expr[start..i])));
        } else if c.is_ascii_alphabetic() || c == '_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
            {
                i += 1;
            }
            out.push((start, Tok::Ident(&expr[start..i])));
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            i += 1;
            if bytes.get(i) == Some(&b'{') {
                while i < bytes.len() && bytes[i] != b'}' {
                    i += 1;
                }
                i += 1;
            }
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
            {
                i += 1;
            }
            out.push((start, Tok::Other(&expr[start..i.min(bytes.len())])));
        } else {
            i += 1;
            out.push((start, Tok::Punct(c)));
        }
    }
    out
}

/// Index of the token closing the bracket opened at `open`.
fn closing(toks: &[(usize, Tok)], open: usize) -> Option<usize> {
    let (o, c) = match toks[open].1 {
        Tok::Punct('(') => ('(', ')'),
        Tok::Punct('[') => ('[', ']'),
        Tok::Punct('{') => ('{', '}'),
        _ => return None,
    };
    let mut depth = 0;
    for (k, (_, t)) in toks.iter().enumerate().skip(open) {
        if *t == Tok::Punct(o) {
            depth += 1;
        } else if *t == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return Some(k);
            }
        }
    }
    None
}

/// Reads `by (a, b)` / `without (a)` at `at`; returns the clause and the index after it.
fn grouping<'a>(toks: &[(usize, Tok<'a>)], at: usize) -> Option<((&'a str, Vec<&'a str>), usize)> {
    let Some((_, Tok::Ident(kw @ ("by" | "without")))) = toks.get(at) else {
        return None;
    };
    let close = closing(toks, at + 1)?;
    let labels = toks[at + 2..close]
        .iter()
        .filter_map(|(_, t)| {
            if let Tok::Ident(l) = t {
                Some(*l)
            } else {
                None
            }
        })
        .collect();
    Some(((*kw, labels), close + 1))
}

/// Aggregations over money metrics that lose `currency`, i.e. that add or compare amounts of
/// different currencies. Also flags `ignoring(currency)` next to a money metric.
fn currency_mixing(expr: &str) -> Vec<String> {
    let toks = tokens(expr);
    let mentions_money = |ts: &[(usize, Tok)]| {
        ts.iter()
            .any(|(_, t)| matches!(t, Tok::Ident(m) if MONEY_METRICS.contains(m)))
    };
    let mut problems = Vec::new();
    for (i, (_, t)) in toks.iter().enumerate() {
        match t {
            Tok::Ident(agg) if VALUE_AGGREGATORS.contains(agg) => {
                let (mut clause, mut at) = (None, i + 1);
                if let Some((g, next)) = grouping(&toks, at) {
                    clause = Some(g);
                    at = next;
                }
                if toks.get(at).map(|x| x.1) != Some(Tok::Punct('(')) {
                    continue; // not an aggregation (e.g. a label called "max")
                }
                let Some(close) = closing(&toks, at) else {
                    continue;
                };
                if clause.is_none() {
                    clause = grouping(&toks, close + 1).map(|(g, _)| g);
                }
                if !mentions_money(&toks[at..close]) {
                    continue;
                }
                let keeps_currency = match &clause {
                    Some(("by", labels)) => labels.contains(&"currency"),
                    Some((_, labels)) => !labels.contains(&"currency"),
                    None => false,
                };
                if !keeps_currency {
                    problems.push(format!(
                        "`{agg}` over a money metric without `currency` in its by-clause mixes currencies"
                    ));
                }
            }
            Tok::Ident("ignoring") if mentions_money(&toks) => {
                if let Some(close) = closing(&toks, i + 1)
                    && toks[i + 2..close]
                        .iter()
                        .any(|(_, t)| *t == Tok::Ident("currency"))
                {
                    problems.push(
                        "`ignoring(currency)` matches amounts of different currencies".into(),
                    );
                }
            }
            _ => {}
        }
    }
    problems
}

/// rate/irate/increase whose range is not `$__rate_interval` (dashboards only: Grafana sizes
/// it so that a range always holds enough scrapes).
fn fixed_rate_ranges(expr: &str) -> Vec<String> {
    let toks = tokens(expr);
    let mut problems = Vec::new();
    for (i, (_, t)) in toks.iter().enumerate() {
        let Tok::Ident(f @ ("rate" | "irate" | "increase")) = t else {
            continue;
        };
        if toks.get(i + 1).map(|x| x.1) != Some(Tok::Punct('(')) {
            continue;
        }
        let Some(close) = closing(&toks, i + 1) else {
            continue;
        };
        let ranges: Vec<&str> = toks[i + 1..close]
            .iter()
            .enumerate()
            .filter(|(_, (_, t))| *t == Tok::Punct('['))
            .filter_map(|(k, _)| {
                let open = i + 1 + k;
                let end = closing(&toks, open)?;
                Some(expr[toks[open].0 + 1..toks[end].0].trim())
            })
            .collect();
        if ranges.is_empty()
            || ranges
                .iter()
                .any(|r| !matches!(*r, "$__rate_interval" | "${__rate_interval}"))
        {
            problems.push(format!(
                "`{f}` must use [$__rate_interval], found {ranges:?}"
            ));
        }
    }
    problems
}

/// Names that look like the exporter's metrics but are not in its contract.
fn unknown_metrics(expr: &str) -> Vec<String> {
    tokens(expr)
        .iter()
        .filter_map(|(_, t)| {
            if let Tok::Ident(name) = t {
                Some(*name)
            } else {
                None
            }
        })
        .filter(|name| name.starts_with("balance_"))
        .filter(|name| {
            let base = HISTOGRAM_SUFFIXES
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            !METRICS.contains(name) && !METRICS.contains(&base)
        })
        .map(|name| format!("unknown metric `{name}`"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Dashboard conventions. Each check returns its violations; `convention_violations` runs all.

fn uses_datasource_variable(ds: &Value) -> bool {
    matches!(ds["uid"].as_str(), Some("${datasource}" | "$datasource"))
        && ds["type"] == "prometheus"
}

fn check_no_inputs(d: &Value) -> Vec<String> {
    if d.get("__inputs").is_some() {
        vec![
            "has an `__inputs` section (an export for sharing): provisioning cannot fill it".into(),
        ]
    } else {
        vec![]
    }
}

fn check_uid(d: &Value) -> Vec<String> {
    match d["uid"].as_str() {
        Some(uid)
            if !uid.is_empty()
                && uid.len() <= 40
                && uid
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            vec![]
        }
        _ => vec![format!(
            "needs a fixed `uid` (1-40 of [A-Za-z0-9_-]), found {}",
            d["uid"]
        )],
    }
}

fn check_variables(d: &Value) -> Vec<String> {
    let vars = variables(d);
    let mut problems = Vec::new();
    let ds = vars.iter().find(|v| v["name"] == "datasource");
    if !ds.is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus") {
        problems
            .push("needs a `datasource` variable of type datasource with query prometheus".into());
    }
    for name in FILTER_VARIABLES {
        match vars.iter().find(|v| v["name"] == name) {
            None => problems.push(format!("needs a `{name}` variable")),
            Some(v) => {
                if v["multi"] != true || v["includeAll"] != true {
                    problems.push(format!("variable `{name}` must be multi-select with All"));
                }
                if !uses_datasource_variable(&v["datasource"]) {
                    problems.push(format!(
                        "variable `{name}` must query the `$datasource` variable"
                    ));
                }
            }
        }
    }
    problems
}

fn check_panels(d: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for p in panels(d) {
        let name = panel_name(p);
        if !uses_datasource_variable(&p["datasource"]) {
            problems.push(format!(
                "{name}: datasource must be the `$datasource` variable, found {}",
                p["datasource"]
            ));
        }
        if p["description"]
            .as_str()
            .is_none_or(|s| s.trim().is_empty())
        {
            problems.push(format!("{name}: needs a description"));
        }
        if p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{name}: needs a unit (fieldConfig.defaults.unit)"));
        }
        let targets = p["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{name}: has no query"));
        }
        for t in targets {
            if !uses_datasource_variable(&t["datasource"]) {
                problems.push(format!(
                    "{name} target {}: datasource must be the `$datasource` variable, found {}",
                    t["refId"], t["datasource"]
                ));
            }
            if t["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problems.push(format!(
                    "{name} target {}: has no PromQL `expr`",
                    t["refId"]
                ));
            }
        }
        let exprs: Vec<&str> = targets.iter().filter_map(|t| t["expr"].as_str()).collect();
        // A balance graph plots amounts as they are; a ratio or runway derived from them is not one.
        let plots_balances = exprs.iter().any(|e| {
            let toks = tokens(e);
            toks.iter().any(|(_, t)| *t == Tok::Ident("balance_amount"))
                && !toks
                    .iter()
                    .any(|(_, t)| matches!(t, Tok::Punct('/' | '*' | '+' | '-')))
        });
        let plots_thresholds = exprs.iter().any(|e| e.contains("balance_low_threshold"));
        if p["type"] == "timeseries" && plots_balances && !plots_thresholds {
            problems.push(format!(
                "{name}: a balance graph must draw the thresholds (balance_low_threshold)"
            ));
        }
    }
    problems
}

fn check_queries(d: &Value) -> Vec<String> {
    let defined = variable_names(d);
    let mut problems = Vec::new();
    for q in queries(d) {
        let found = [
            fixed_rate_ranges(&q.expr),
            currency_mixing(&q.expr),
            unknown_metrics(&q.expr),
            expand_variables(&q.expr, &defined)
                .err()
                .into_iter()
                .collect(),
        ];
        problems.extend(
            found
                .into_iter()
                .flatten()
                .map(|p| format!("{}: {p}", q.origin)),
        );
    }
    problems
}

fn convention_violations(d: &Value) -> Vec<String> {
    [
        check_no_inputs(d),
        check_uid(d),
        check_variables(d),
        check_panels(d),
        check_queries(d),
    ]
    .concat()
}

// ---------------------------------------------------------------------------------------------
// Rules helpers.

fn alert_rules() -> Vec<Value> {
    let rules = yaml(&repo().join("deploy/prometheus/alerts.yml"));
    rules["groups"]
        .as_array()
        .expect("alerts.yml has groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `package.repository` of Cargo.toml: the one place the project's URL is declared.
fn repository_url() -> String {
    let manifest = read(&repo().join("Cargo.toml"));
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("repository = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml declares package.repository")
        .to_owned()
}

/// The URL every runbook link starts with.
fn runbook_base() -> String {
    format!("{}{RUNBOOK_PATH}", repository_url())
}

/// What is wrong with the `runbook_url:` values of a rule file's text: a link under another
/// base, or to a section RUNBOOK.md does not have. Also how many links there are.
fn runbook_link_problems(
    text: &str,
    base: &str,
    anchors: &BTreeSet<String>,
) -> (usize, Vec<String>) {
    let mut links = 0;
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("runbook_url:") else {
            continue;
        };
        links += 1;
        let value = value.trim().trim_matches(['"', '\'']);
        match value
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('#'))
        {
            None => problems.push(format!("line {}: {value} is not under {base}#", n + 1)),
            Some(anchor) if !anchors.contains(anchor) => problems.push(format!(
                "line {}: RUNBOOK.md has no section for #{anchor}",
                n + 1
            )),
            Some(_) => {}
        }
    }
    (links, problems)
}

fn runbook_anchors() -> BTreeSet<String> {
    read(&repo().join("deploy/prometheus/RUNBOOK.md"))
        .lines()
        .filter_map(|l| l.strip_prefix("## ").or_else(|| l.strip_prefix("# ")))
        .map(github_anchor)
        .collect()
}

/// Writes the expressions as recording rules and runs `promtool check rules` on them.
fn promtool_parses(promtool: &Path, group: &str, exprs: &[(String, String)], dir: &Path) -> Output {
    let rules: Vec<Value> = exprs
        .iter()
        .map(|(record, expr)| json!({"record": record, "expr": expr}))
        .collect();
    // JSON is YAML, so promtool reads this file as it reads any rule file.
    let file = dir.join(format!("{group}.rules.json"));
    std::fs::write(
        &file,
        json!({"groups": [{"name": group, "rules": rules}]}).to_string(),
    )
    .unwrap();
    run(promtool, &["check", "rules", file.to_str().unwrap()], dir)
}

fn dashboard_expressions(d: &Value) -> Result<Vec<(String, String)>, String> {
    Ok(expanded_queries(d)?
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            // The record name carries the origin so that promtool's message points at it.
            let record: String = format!("q{i}_{}", q.origin)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            (record, q.expr)
        })
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Node project for the schema check.

fn schema_check_dir() -> PathBuf {
    repo().join("grafana/schema-check")
}

/// `npm ci` once per test run when node_modules is missing (the npm registry is reachable in CI).
fn ensure_node_modules(npm: &Path) {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let dir = schema_check_dir();
        if dir
            .join("node_modules/@grafana/schema/package.json")
            .is_file()
            && dir.join("node_modules/typescript/package.json").is_file()
        {
            return Ok(());
        }
        let out = run(npm, &["ci", "--no-audit", "--no-fund"], &dir);
        if out.status.success() {
            Ok(())
        } else {
            Err(describe(&out))
        }
    });
    if let Err(e) = result {
        panic!("npm ci in grafana/schema-check failed:\n{e}");
    }
}

fn schema_check(node: &Path, npm: &Path, files: &[&Path]) -> Output {
    ensure_node_modules(npm);
    let mut args = vec!["check.mjs"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    run(node, &args, &schema_check_dir())
}

fn node_tools() -> Option<(PathBuf, PathBuf)> {
    Some((tool("node", "nodejs")?, tool("npm", "npm")?))
}

// ---------------------------------------------------------------------------------------------
// Tests: alert rules.

/// Runs a tool in a folder of the repository and asserts that it succeeded; `None` when the
/// tool is missing and the test is skipped.
fn run_ok(tool_and_package: (&str, &str), args: &[&str], dir: &str) -> Option<Output> {
    let program = tool(tool_and_package.0, tool_and_package.1)?;
    let out = run(&program, args, &repo().join(dir));
    assert!(
        out.status.success(),
        "{} {} failed:\n{}",
        tool_and_package.0,
        args.join(" "),
        describe(&out)
    );
    Some(out)
}

const PROMTOOL: (&str, &str) = ("promtool", "Debian package `prometheus`");
const AMTOOL: (&str, &str) = ("amtool", "Debian package `prometheus-alertmanager`");

#[test]
fn alert_rules_pass_promtool_check() {
    let Some(out) = run_ok(
        PROMTOOL,
        &["check", "rules", "alerts.yml"],
        "deploy/prometheus",
    ) else {
        return;
    };
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{}",
        describe(&out)
    );
}

#[test]
fn alert_rule_unit_tests_pass() {
    let Some(out) = run_ok(
        PROMTOOL,
        &["test", "rules", "alerts.test.yml"],
        "deploy/prometheus",
    ) else {
        return;
    };
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS"),
        "{}",
        describe(&out)
    );
}

#[test]
fn example_prometheus_and_alertmanager_configs_are_valid() {
    let config = yaml(&repo().join("deploy/prometheus/prometheus.yml"));
    let job = &config["scrape_configs"][0];
    assert_eq!(
        job["job_name"], "balance_exporter",
        "BalanceExporterDown assumes this job name"
    );
    assert_eq!(job["static_configs"][0]["targets"][0], "localhost:9863");
    assert_eq!(config["rule_files"][0], "alerts.yml");
    // promtool check config also checks the rule files it loads.
    if run_ok(
        PROMTOOL,
        &["check", "config", "prometheus.yml"],
        "deploy/prometheus",
    )
    .is_none()
    {
        return;
    }
    run_ok(
        AMTOOL,
        &["check-config", "alertmanager.yml"],
        "deploy/alertmanager",
    );
}

#[test]
fn every_alert_has_severity_summary_description_and_runbook_section() {
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    let expected: Vec<&str> = ALERTS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(
        names.len(),
        expected.len(),
        "an alert is defined twice: {names:?}"
    );

    let anchors = runbook_anchors();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap();
        let severity = ALERTS.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(rule["labels"]["severity"], severity, "{name}: severity");
        let a = &rule["annotations"];
        let summary = a["summary"].as_str().unwrap_or_default();
        assert!(
            !summary.is_empty() && !summary.contains("{{"),
            "{name}: summary must be static: {summary:?}"
        );
        let description = a["description"].as_str().unwrap_or_default();
        assert!(
            description.contains("$value"),
            "{name}: description must give the value"
        );
        if TARGET_LEVEL_ALERTS.contains(&name) {
            assert!(
                description.contains("every account and currency"),
                "{name}: say what is affected"
            );
        } else {
            assert!(
                description.contains("$labels.account"),
                "{name}: description must name the account"
            );
            assert!(
                description.contains("$labels.currency")
                    || description.contains(".Labels.currency"),
                "{name}: description must name the currency"
            );
        }
        let anchor = name.to_lowercase();
        assert_eq!(
            a["runbook_url"],
            format!("{}#{anchor}", runbook_base()),
            "{name}: runbook_url"
        );
        assert!(
            anchors.contains(&anchor),
            "{name}: RUNBOOK.md has no section `## {name}`"
        );
    }
}

#[test]
fn every_runbook_link_of_every_rule_file_points_at_a_runbook_section() {
    let base = runbook_base();
    let anchors = runbook_anchors();
    for file in RULE_FILES {
        let (links, problems) = runbook_link_problems(&read(&repo().join(file)), &base, &anchors);
        assert!(
            links >= ALERTS.len(),
            "{file}: {links} runbook links, fewer than alerts"
        );
        assert!(problems.is_empty(), "{file}:\n{}", problems.join("\n"));
    }
    // No other file under deploy/ carries rules (a copy would drift unchecked).
    let mut others = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path)
                && text
                    .lines()
                    .any(|l| l.trim_start().starts_with("runbook_url:"))
            {
                let rel = path
                    .strip_prefix(repo())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if !RULE_FILES.contains(&rel.as_str()) {
                    others.push(rel);
                }
            }
        }
    }
    assert!(
        others.is_empty(),
        "runbook links outside {RULE_FILES:?}: {others:?}"
    );

    // The check itself: a link under another base and one to a missing section are caught.
    let (_, problems) = runbook_link_problems(
        &format!(
            "runbook_url: https://elsewhere.example/RUNBOOK.md#balancelow\n\
             runbook_url: {base}#balancelowish\n\
             runbook_url: '{base}#balancelow'\n"
        ),
        &base,
        &anchors,
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("not under") && problems[1].contains("#balancelowish"));
}

#[test]
fn the_repository_url_is_declared_once_and_the_image_label_agrees() {
    let repository = repository_url();
    assert!(repository.starts_with("https://"), "{repository}");
    let dockerfile = read(&repo().join("deploy/docker/Dockerfile"));
    assert!(
        dockerfile.contains(&format!("org.opencontainers.image.source=\"{repository}\"")),
        "deploy/docker/Dockerfile's image source label is not Cargo.toml's repository"
    );
}

/// The rewrite docs/alerts.md documents, run as written on copies of the rule files: afterwards
/// every link is under the new base, still naming its section, and the rules' unit tests pass.
#[test]
fn the_documented_runbook_rewrite_repoints_every_link() {
    let Some(promtool) = tool(PROMTOOL.0, PROMTOOL.1) else {
        return;
    };
    let doc = read(&repo().join("docs/alerts.md"));
    let block = doc
        .split("```sh\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(body, _)| body))
        .find(|body| body.contains("sed -i") && body.contains("RUNBOOK.md"))
        .expect("docs/alerts.md documents the runbook rewrite in a sh block");
    let new_base = "https://wiki.example.com/sre/balance_exporter/RUNBOOK.md";
    assert!(block.contains(new_base), "{block}");
    let scratch = Scratch::new("runbook-rewrite");
    for file in RULE_FILES {
        let copy = scratch.0.join(file);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(repo().join(file), &copy).unwrap();
    }
    let path = format!(
        "{}:{}",
        promtool.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(&scratch.0)
        .env("PATH", path)
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{block}\n{}", describe(&out));
    let anchors = runbook_anchors();
    for file in RULE_FILES {
        let text = read(&scratch.0.join(file));
        let (links, problems) = runbook_link_problems(&text, new_base, &anchors);
        assert!(links > 0, "{file}: no runbook links after the rewrite");
        assert!(
            problems.is_empty(),
            "{file} after the rewrite: {problems:?}"
        );
    }
}

#[test]
fn runbook_links_resolve() {
    let text = read(&repo().join("deploy/prometheus/RUNBOOK.md"));
    let anchors = runbook_anchors();
    let links: Vec<&str> = text
        .split("](#")
        .skip(1)
        .filter_map(|s| s.split(')').next())
        .collect();
    assert!(!links.is_empty(), "the runbook cross-links its sections");
    for link in links {
        assert!(
            anchors.contains(link),
            "RUNBOOK.md links to #{link}, which no heading has"
        );
    }
}

#[test]
fn every_alert_is_unit_tested_firing_and_silent() {
    let tests = yaml(&repo().join("deploy/prometheus/alerts.test.yml"));
    let cases: Vec<&Value> = tests["tests"]
        .as_array()
        .expect("alerts.test.yml has tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for (name, _) in ALERTS {
        let of_alert = || cases.iter().filter(|c| c["alertname"] == name);
        let firing = of_alert()
            .filter(|c| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
            .count();
        let silent = of_alert()
            .filter(|c| c["exp_alerts"].as_array().is_none_or(Vec::is_empty))
            .count();
        assert!(firing > 0, "{name}: no unit test shows it firing");
        assert!(
            silent > 0,
            "{name}: no unit test shows it silent (the near miss)"
        );
    }
}

#[test]
fn alert_rules_never_mix_currencies_and_use_known_metrics() {
    for rule in alert_rules() {
        let expr = rule["expr"].as_str().unwrap();
        let problems = [currency_mixing(expr), unknown_metrics(expr)].concat();
        assert!(problems.is_empty(), "{}: {problems:?}", rule["alert"]);
    }
}

// ---------------------------------------------------------------------------------------------
// Tests: dashboards.

#[test]
fn dashboard_queries_parse_with_promtool() {
    let Some(promtool) = tool(PROMTOOL.0, PROMTOOL.1) else {
        return;
    };
    let scratch = Scratch::new("dashboard-queries");
    for file in dashboard_files() {
        let exprs = dashboard_expressions(&load_dashboard(&file))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            exprs.len() >= 5,
            "{}: too few queries found: {exprs:?}",
            file.display()
        );
        let out = promtool_parses(&promtool, "dashboard", &exprs, &scratch.0);
        assert!(
            out.status.success(),
            "{}: a query does not parse:\n{}",
            file.display(),
            describe(&out)
        );
    }
}

/// One hour of what an exporter with a draining and a steady account exposes, in promtool's
/// input-series notation (one sample a minute).
fn synthetic_exporter_series() -> Vec<(String, &'static str)> {
    let target = r#"job="balance_exporter",instance="localhost:9863""#;
    let sms = r#"provider="engagelab",account="sms-main""#;
    let acq = r#"provider="uqpay",account="acq""#;
    let mut series = vec![
        (
            format!(r#"balance_amount{{{target},{sms},currency="USD",kind="total"}}"#),
            "125-1x60",
        ),
        (
            format!(r#"balance_amount{{{target},{sms},currency="USD",kind="gift"}}"#),
            "5x60",
        ),
        (
            format!(r#"balance_amount{{{target},{acq},currency="SGD",kind="available"}}"#),
            "1000x60",
        ),
        (
            format!(
                r#"balance_low_threshold{{{target},{sms},currency="USD",kind="total",severity="warning"}}"#
            ),
            "100x60",
        ),
        (
            format!(
                r#"balance_low_threshold{{{target},{sms},currency="USD",kind="total",severity="critical"}}"#
            ),
            "20x60",
        ),
        (
            format!(r#"balance_token_refreshes_total{{{target},{acq}}}"#),
            "0+1x60",
        ),
    ];
    for account in [sms, acq] {
        series.extend([
            (format!("balance_up{{{target},{account}}}"), "1x60"),
            (format!("balance_last_success_timestamp_seconds{{{target},{account}}}"), "0+60x60"),
            (format!("balance_poll_interval_seconds{{{target},{account}}}"), "60x60"),
            (format!("balance_poll_duration_seconds{{{target},{account}}}"), "0.2x60"),
            (format!("balance_clock_skew_seconds{{{target},{account}}}"), "0.5x60"),
            (format!(r#"balance_api_requests_total{{{target},{account},endpoint="balance"}}"#), "0+2x60"),
            (format!(r#"balance_api_errors_total{{{target},{account},code="timeout",class="transport"}}"#), "0+1x60"),
        ]);
    }
    for (le, per_minute) in [("0.1", "0+1x60"), ("0.5", "0+2x60"), ("+Inf", "0+3x60")] {
        series.push((
            format!(r#"balance_api_request_duration_seconds_bucket{{{target},provider="uqpay",endpoint="balance",le="{le}"}}"#),
            per_minute,
        ));
    }
    series
}

/// A query that parses can still return nothing (a misspelt label, a join that never
/// matches). promtool evaluates each one, with every variable at All, on synthetic data.
#[test]
fn dashboard_queries_return_series_on_synthetic_exporter_data() {
    let Some(promtool) = tool(PROMTOOL.0, PROMTOOL.1) else {
        return;
    };
    let scratch = Scratch::new("dashboard-data");
    let input: Vec<Value> = synthetic_exporter_series()
        .iter()
        .map(|(s, v)| json!({"series": s, "values": v}))
        .collect();
    for file in dashboard_files() {
        let exprs = dashboard_expressions(&load_dashboard(&file)).unwrap();
        let cases: Vec<Value> = exprs
            .iter()
            .map(|(_, expr)| {
                // Exactly {} 1 when the query returns at least one series, nothing otherwise.
                json!({"expr": format!("count(({expr})) > bool 0"), "eval_time": "60m",
                       "exp_samples": [{"labels": "{}", "value": 1}]})
            })
            .collect();
        let tests = json!({"evaluation_interval": "1m", "tests": [
            {"interval": "1m", "input_series": input, "promql_expr_test": cases}]});
        let path = scratch.0.join("dashboard.test.json");
        std::fs::write(&path, tests.to_string()).unwrap();
        let out = run(
            &promtool,
            &["test", "rules", path.to_str().unwrap()],
            &scratch.0,
        );
        assert!(
            out.status.success(),
            "{}: a query returns no series:\n{}",
            file.display(),
            describe(&out)
        );
    }
}

#[test]
fn dashboards_match_the_grafana_schema() {
    let Some((node, npm)) = node_tools() else {
        return;
    };
    let out = schema_check(&node, &npm, &[]);
    assert!(
        out.status.success(),
        "schema check failed:\n{}",
        describe(&out)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("{} dashboard(s)", dashboard_files().len())),
        "{said}"
    );
}

#[test]
fn dashboards_follow_the_conventions() {
    let mut uids = BTreeSet::new();
    for file in dashboard_files() {
        let d = load_dashboard(&file);
        let problems = convention_violations(&d);
        assert!(
            problems.is_empty(),
            "{}:\n{}",
            file.display(),
            problems.join("\n")
        );
        assert!(
            uids.insert(d["uid"].to_string()),
            "{}: uid used twice",
            file.display()
        );
    }
}

#[test]
fn provisioning_loads_the_dashboards_folder_and_a_prometheus_datasource() {
    let dir = repo().join("grafana/provisioning");
    let providers = yaml(&dir.join("dashboards/balance-exporter.yml"));
    let p = &providers["providers"][0];
    assert_eq!(p["type"], "file");
    assert!(
        p["options"]["path"].as_str().is_some_and(|s| !s.is_empty()),
        "provider needs options.path"
    );
    let sources = yaml(&dir.join("datasources/prometheus.yml"));
    assert_eq!(sources["datasources"][0]["type"], "prometheus");
}

// ---------------------------------------------------------------------------------------------
// Tests: each check rejects a dashboard broken in the way it guards against.

fn good_overview() -> Value {
    load_dashboard(&repo().join("grafana/dashboards/balance-overview.json"))
}

fn panel_mut<'a>(d: &'a mut Value, title_prefix: &str) -> &'a mut Value {
    d["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| {
            p["title"]
                .as_str()
                .is_some_and(|t| t.starts_with(title_prefix))
        })
        .unwrap_or_else(|| panic!("the overview has a panel titled {title_prefix}..."))
}

/// Applies `break_it` to a copy of the good overview and returns what the checks say.
fn violations_after(break_it: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut d = good_overview();
    assert!(
        convention_violations(&d).is_empty(),
        "the unbroken overview must pass"
    );
    break_it(&mut d);
    convention_violations(&d)
}

/// The checks' verdict on the good overview with the first query of one panel replaced.
fn violations_with_query(panel_title_prefix: &str, expr: &str) -> Vec<String> {
    violations_after(|d| panel_mut(d, panel_title_prefix)["targets"][0]["expr"] = json!(expr))
}

fn assert_rejected(what: &str, problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "{what}: expected a violation containing {expected:?}, got {problems:#?}"
    );
}

#[test]
fn conventions_reject_a_missing_datasource_variable() {
    let problems = violations_after(|d| {
        d["templating"]["list"]
            .as_array_mut()
            .unwrap()
            .retain(|v| v["name"] != "datasource");
    });
    assert_rejected(
        "no datasource variable",
        &problems,
        "needs a `datasource` variable",
    );
}

#[test]
fn conventions_reject_a_datasource_variable_of_another_kind() {
    let problems = violations_after(|d| d["templating"]["list"][0]["query"] = json!("loki"));
    assert_rejected(
        "loki datasource variable",
        &problems,
        "needs a `datasource` variable",
    );
}

#[test]
fn conventions_reject_a_hard_coded_datasource_on_a_panel() {
    let problems = violations_after(|d| {
        panel_mut(d, "Accounts down")["datasource"] =
            json!({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"});
    });
    assert_rejected(
        "hard-coded panel datasource",
        &problems,
        "panel 2 \"Accounts down\": datasource must be",
    );
}

#[test]
fn conventions_reject_a_hard_coded_datasource_on_a_target() {
    let problems = violations_after(|d| {
        panel_mut(d, "Headroom")["targets"][1]["datasource"] = json!({"uid": "abc123"});
    });
    assert_rejected(
        "hard-coded target datasource",
        &problems,
        "target \"B\": datasource must be",
    );
}

#[test]
fn conventions_reject_a_variable_querying_a_fixed_datasource() {
    let problems =
        violations_after(|d| d["templating"]["list"][3]["datasource"] = json!({"uid": "abc123"}));
    assert_rejected(
        "variable datasource",
        &problems,
        "variable `provider` must query",
    );
}

#[test]
fn conventions_reject_a_panel_without_unit() {
    let problems = violations_after(|d| {
        panel_mut(d, "Runway")["fieldConfig"]["defaults"]
            .as_object_mut()
            .unwrap()
            .remove("unit");
    });
    assert_rejected(
        "no unit",
        &problems,
        "\"Runway at the 24 h burn rate\": needs a unit",
    );
}

#[test]
fn conventions_reject_a_panel_without_description() {
    let problems = violations_after(|d| panel_mut(d, "Poll status")["description"] = json!(" "));
    assert_rejected(
        "blank description",
        &problems,
        "\"Poll status by account\": needs a description",
    );
}

#[test]
fn conventions_reject_rate_or_increase_without_rate_interval() {
    for (expr, expected) in [
        (
            "sum by (account) (rate(balance_api_requests_total{job=~\"$job\"}[5m]))",
            "`rate` must use [$__rate_interval], found [\"5m\"]",
        ),
        (
            "sum by (account) (increase(balance_api_errors_total[$__range]))",
            "`increase` must use [$__rate_interval]",
        ),
        (
            "max(irate(balance_token_refreshes_total[1m:10s]))",
            "`irate` must use [$__rate_interval]",
        ),
    ] {
        assert_rejected(
            expr,
            &violations_with_query("Accounts polled", expr),
            expected,
        );
    }
}

#[test]
fn conventions_reject_an_inputs_section() {
    let problems = violations_after(|d| {
        d["__inputs"] =
            json!([{"name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}]);
    });
    assert_rejected("__inputs", &problems, "`__inputs`");
}

#[test]
fn conventions_reject_a_sum_across_currencies() {
    for expr in [
        "sum by (provider, account) (balance_amount{account=~\"$account\"})",
        "sum(balance_amount)",
        "sum without (currency) (balance_amount)",
        "max by (account) (min by (provider, account, currency, kind) (balance_amount))",
        "avg(balance_low_threshold{severity=\"warning\"}) by (provider)",
        "balance_amount / ignoring (currency) balance_low_threshold",
    ] {
        let problems = violations_with_query("Headroom", expr);
        assert_rejected(expr, &problems, "target \"A\": `");
        assert_rejected(expr, &problems, "currenc");
    }
}

#[test]
fn currency_check_accepts_aggregations_that_keep_currency() {
    for expr in [
        "sum by (provider, account, currency, kind) (balance_amount)",
        "sum without (kind) (balance_amount)",
        "count(balance_amount)",
        "sum by (provider) (rate(balance_api_requests_total[5m]))",
        "max(balance_up{account=\"sum\"})",
    ] {
        assert_eq!(currency_mixing(expr), Vec::<String>::new(), "{expr}");
    }
}

#[test]
fn conventions_reject_a_missing_or_single_value_filter_variable() {
    let problems = violations_after(|d| {
        d["templating"]["list"]
            .as_array_mut()
            .unwrap()
            .retain(|v| v["name"] != "currency");
    });
    assert_rejected(
        "no currency variable",
        &problems,
        "needs a `currency` variable",
    );
    let problems = violations_after(|d| d["templating"]["list"][4]["includeAll"] = json!(false));
    assert_rejected(
        "account without All",
        &problems,
        "variable `account` must be multi-select with All",
    );
}

#[test]
fn conventions_reject_an_undefined_variable_and_an_unknown_metric() {
    let problems = violations_with_query("Accounts polled", "count(balance_up{env=~\"$env\"})");
    assert_rejected("undefined $env", &problems, "variable `env` is not defined");
    let problems = violations_with_query("Accounts polled", "count(balance_amout)");
    assert_rejected(
        "misspelt metric",
        &problems,
        "unknown metric `balance_amout`",
    );
}

#[test]
fn conventions_reject_a_balance_graph_without_thresholds() {
    let problems = violations_after(|d| {
        panel_mut(d, "Balances in")["targets"]
            .as_array_mut()
            .unwrap()
            .truncate(1);
    });
    assert_rejected("no threshold lines", &problems, "must draw the thresholds");
}

#[test]
fn conventions_reject_a_missing_uid() {
    let problems = violations_after(|d| {
        d.as_object_mut().unwrap().remove("uid");
    });
    assert_rejected("no uid", &problems, "needs a fixed `uid`");
}

#[test]
fn promtool_rejects_a_dashboard_query_that_does_not_parse() {
    let Some(promtool) = tool(PROMTOOL.0, PROMTOOL.1) else {
        return;
    };
    let scratch = Scratch::new("broken-query");
    let mut d = good_overview();
    panel_mut(&mut d, "Accounts polled")["targets"][0]["expr"] =
        json!("count(max by (provider, account) (balance_up{job=~\"$job\"})");
    let exprs = dashboard_expressions(&d).unwrap();
    let out = promtool_parses(&promtool, "dashboard", &exprs, &scratch.0);
    assert!(
        !out.status.success(),
        "promtool accepted an unbalanced parenthesis:\n{}",
        describe(&out)
    );
    assert!(
        describe(&out).contains("Accounts_polled"),
        "the failure names the panel:\n{}",
        describe(&out)
    );
}

#[test]
fn variable_expansion_gives_all_and_builtin_values() {
    let defined: BTreeSet<String> = ["job", "account"].into_iter().map(String::from).collect();
    assert_eq!(
        expand_variables(
            "rate(x{job=~\"$job\",account=~\"${account:regex}\"}[$__rate_interval]) * [[job]]",
            &defined
        )
        .unwrap(),
        "rate(x{job=~\".*\",account=~\".*\"}[5m]) * .*"
    );
    assert_eq!(
        expand_variables("x[$__range] offset ${__interval}", &defined).unwrap(),
        "x[1h] offset 5m"
    );
    assert!(expand_variables("x{a=~\"$nope\"}", &defined).is_err());
}

#[test]
fn schema_check_rejects_dashboards_that_break_the_schema() {
    let Some((node, npm)) = node_tools() else {
        return;
    };
    let scratch = Scratch::new("schema-mutants");
    let mut unknown_key = good_overview();
    unknown_key["refreshEvery"] = json!("1m");
    let mut bad_enum = good_overview();
    panel_mut(&mut bad_enum, "Accounts down")["fieldConfig"]["defaults"]["thresholds"]["mode"] =
        json!("absolut");
    let mut missing_required = good_overview();
    panel_mut(&mut missing_required, "Headroom")["options"]
        .as_object_mut()
        .unwrap()
        .remove("showHeader");
    let mutants = [
        (
            "unknown-key",
            unknown_key,
            "'\"refreshEvery\"' does not exist",
        ),
        ("bad-enum", bad_enum, "\"absolut\""),
        (
            "missing-required",
            missing_required,
            "'showHeader' is missing",
        ),
    ];
    // One run for all three (each run is seconds of tsc): each mutant must have its own error.
    let files: Vec<PathBuf> = mutants
        .iter()
        .map(|(name, d, _)| {
            let file = scratch.0.join(format!("{name}.json"));
            std::fs::write(&file, d.to_string()).unwrap();
            file
        })
        .collect();
    let out = schema_check(
        &node,
        &npm,
        &files.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
    );
    let said = describe(&out);
    assert!(
        !out.status.success(),
        "the schema check accepted them:\n{said}"
    );
    // The checker names the dashboard file at the start of each of its errors.
    for ((name, _, expected), file) in mutants.iter().zip(&files) {
        let prefix = format!("{}: ", file.display());
        assert!(
            said.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(expected)),
            "{name}: expected {expected:?} in an error of {prefix}...:\n{said}"
        );
    }
}
