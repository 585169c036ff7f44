//! The HTML status page at `/`: each account's health, last error and balances against its
//! thresholds. Made from a copy of the state; never shows a secret (the state holds none).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::metrics::{AccountState, State};

/// `reloadable`: there is a file to reload; `lifecycle`: `POST /-/reload` is enabled.
pub fn render(state: &State, telemetry_path: &str, reloadable: bool, lifecycle: bool) -> String {
    let now = Instant::now();
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="15">
<title>balance_exporter</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
.up {{ color: #1a7f37; font-weight: bold; }} .down {{ color: #cf222e; font-weight: bold; }}
.pending {{ color: #9a6700; }} .critical {{ background: #ffebe9; }} .warning {{ background: #fff8c5; }}
.muted {{ color: #666; }}
</style></head><body>
<h1>balance_exporter</h1>
<p>Version {version} (revision {revision}). Balances are polled in the background; this page and
<a href="{metrics}">{metrics}</a> show the last results. <a href="/-/healthy">/-/healthy</a>
<a href="/-/ready">/-/ready</a>{reload}</p>
<h2>Accounts</h2>
<table><tr><th>account</th><th>provider</th><th>state</th><th>last success</th><th>poll interval</th><th>last error</th></tr>
"#,
        version = escape(crate::VERSION),
        revision = escape(crate::REVISION),
        metrics = escape(telemetry_path),
        reload = match (reloadable, lifecycle) {
            (false, _) => "",
            (true, true) =>
                " (reload the configuration with <code>POST /-/reload</code> or SIGHUP)",
            (true, false) => {
                " (reload the configuration with SIGHUP; <code>POST /-/reload</code> needs \
                 <code>--web.enable-lifecycle</code>)"
            }
        },
    );
    for a in state.accounts.values() {
        account_row(&mut html, a);
    }
    html.push_str("</table>\n<h2>Balances</h2>\n");
    html.push_str(
        "<table><tr><th>account</th><th>currency</th><th>kind</th><th>amount</th>\
         <th>warning below</th><th>critical below</th></tr>\n",
    );
    for a in state.accounts.values() {
        balance_rows(&mut html, a, state.stale_after, now);
    }
    html.push_str("</table>\n</body></html>\n");
    html
}

fn account_row(html: &mut String, a: &AccountState) {
    let (class, label) = match (a.polls, a.up) {
        (0, _) => ("pending", "not polled yet"),
        (_, true) => ("up", "UP"),
        (_, false) => ("down", "DOWN"),
    };
    let last_success = a
        .last_success
        .map(|t| format!("{} ago", age(t)))
        .unwrap_or_else(|| "never".to_owned());
    let last_error = match &a.last_error {
        Some(e) => format!(
            "<code>{}</code> ({}) {} ago: {}",
            escape(&e.code),
            e.class,
            age(e.at),
            escape(&e.message)
        ),
        None => "<span class=\"muted\">none</span>".to_owned(),
    };
    let _ = writeln!(
        html,
        "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{label}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&a.account),
        a.provider,
        last_success,
        humantime::format_duration(a.poll_interval),
        last_error,
    );
}

fn balance_rows(html: &mut String, a: &AccountState, stale_after: Duration, now: Instant) {
    let Some(snapshot) = a.fresh_snapshot(stale_after, now) else {
        let why = if a.snapshot.is_some() {
            "stale: not refreshed within stale_after, hidden from /metrics"
        } else {
            "no balances yet"
        };
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td colspan=\"5\" class=\"muted\">{why}</td></tr>",
            escape(&a.account)
        );
        return;
    };
    let thresholds = a.resolved_thresholds();
    for b in &snapshot.balances {
        let t = thresholds
            .iter()
            .find(|(t, c)| t.kind == b.kind && *c == b.currency)
            .map(|(t, _)| *t);
        let warning = t.and_then(|t| t.warning);
        let critical = t.and_then(|t| t.critical);
        let class = if critical.is_some_and(|c| b.amount < c) {
            "critical"
        } else if warning.is_some_and(|w| b.amount < w) {
            "warning"
        } else {
            ""
        };
        let show = |v: Option<rust_decimal::Decimal>| v.map(|v| v.to_string()).unwrap_or_default();
        let _ = writeln!(
            html,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&a.account),
            escape(&b.currency),
            b.kind,
            b.amount,
            show(warning),
            show(critical),
        );
    }
}

/// Time since `t`, to the second.
fn age(t: SystemTime) -> String {
    let elapsed = SystemTime::now().duration_since(t).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }
}
