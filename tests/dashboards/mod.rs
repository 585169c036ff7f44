//! The repository's Grafana dashboards as the tests read them: the files, their panels and
//! variables, and every PromQL query with its template variables expanded as Grafana expands
//! them when every filter is "All". Shared by the static checks (rules_and_dashboards.rs) and
//! the end-to-end test (e2e_alerts.rs), which runs the same queries against a live Prometheus.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Yaml};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Files.

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub fn yaml(path: &Path) -> Value {
    Figment::from(Yaml::string(&read(path)))
        .extract()
        .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

pub fn dashboard_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("grafana/dashboards"))
        .expect("grafana/dashboards exists")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected at least the overview and provider API dashboards"
    );
    files
}

pub fn load_dashboard(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// Variables.

/// Replaces Grafana's variables by what they hold when every filter is "All", so that promtool
/// can parse the query. A variable the dashboard does not define is an error.
pub fn expand_variables(expr: &str, defined: &BTreeSet<String>) -> Result<String, String> {
    let builtin = |name: &str| match name {
        "__rate_interval" | "__interval" => Some("5m"),
        "__range" => Some("1h"),
        "__range_s" => Some("3600"),
        "__range_ms" => Some("3600000"),
        "__interval_ms" => Some("60000"),
        _ => None,
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(pos) = rest.find(['$', '[']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        let (name, len) = if let Some(body) = tail.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {expr}"))?;
            (body[..end].split(':').next().unwrap_or_default(), end + 3)
        } else if let Some(body) = tail.strip_prefix("[[") {
            let end = body
                .find("]]")
                .ok_or_else(|| format!("unclosed [[ in {expr}"))?;
            (body[..end].split(':').next().unwrap_or_default(), end + 4)
        } else if let Some(body) = tail.strip_prefix('$') {
            let n = body
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(body.len());
            (&body[..n], n + 1)
        } else {
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = builtin(name)
            .or_else(|| defined.contains(name).then_some(".*"))
            .ok_or_else(|| format!("variable `{name}` is not defined by the dashboard"))?;
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Dashboard walking.

pub fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

pub fn variables(d: &Value) -> Vec<&Value> {
    d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

pub fn panel_name(p: &Value) -> String {
    format!(
        "panel {} \"{}\"",
        p["id"],
        p["title"].as_str().unwrap_or("?")
    )
}

/// A PromQL query of a dashboard with where it comes from.
pub struct Query {
    pub origin: String,
    pub expr: String,
}

pub fn variable_query(v: &Value) -> Option<&str> {
    v["query"]["query"].as_str().or_else(|| v["query"].as_str())
}

pub fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for v in variables(d).into_iter().filter(|v| v["type"] == "query") {
        let origin = format!("variable {}", v["name"]);
        let Some(q) = variable_query(v) else { continue };
        // Grafana's label_values(selector, label) and query_result(expr) wrap PromQL.
        let call = |name: &str| {
            q.trim()
                .strip_prefix(name)
                .and_then(|a| a.strip_suffix(')'))
        };
        let inner = call("label_values(")
            .and_then(|args| args.rsplit_once(',').map(|(selector, _)| selector))
            .or_else(|| call("query_result("));
        if let Some(expr) = inner {
            out.push(Query {
                origin,
                expr: expr.trim().to_string(),
            });
        }
    }
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = t["expr"].as_str() {
                out.push(Query {
                    origin: format!("{} target {}", panel_name(p), t["refId"]),
                    expr: expr.into(),
                });
            }
        }
    }
    out
}

/// The names of the dashboard's template variables.
pub fn variable_names(d: &Value) -> BTreeSet<String> {
    variables(d)
        .iter()
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect()
}

/// Every query of the dashboard with its variables expanded to All; an error names the query
/// using a variable the dashboard does not define.
pub fn expanded_queries(d: &Value) -> Result<Vec<Query>, String> {
    let defined = variable_names(d);
    queries(d)
        .into_iter()
        .map(|q| {
            let expr =
                expand_variables(&q.expr, &defined).map_err(|e| format!("{}: {e}", q.origin))?;
            Ok(Query {
                origin: q.origin,
                expr,
            })
        })
        .collect()
}
