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
.missing {{ background: #ffebe9; color: #cf222e; font-weight: bold; }}
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
        let _ = writeln!(
            html,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&a.account),
            escape(&b.currency),
            escape(b.kind),
            b.amount,
            show(warning),
            show(critical),
        );
    }
    // Guarded balances the answer lacked: no low-balance alert can fire for them.
    for (t, currency) in a.missing_balances(stale_after, now) {
        let _ = writeln!(
            html,
            "<tr class=\"missing\"><td>{}</td><td>{}</td><td>{}</td><td class=\"num\" title=\"has a threshold but is absent from the provider's last answer\">MISSING</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&a.account),
            escape(currency),
            escape(t.kind),
            show(t.warning),
            show(t.critical),
        );
    }
}

fn show(v: Option<rust_decimal::Decimal>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
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
    use std::collections::BTreeMap;

    use rust_decimal::Decimal;

    use super::*;
    use crate::config::Threshold;
    use crate::snapshot::Snapshot;

    fn threshold(currency: Option<&str>, kind: &'static str, warning: i64) -> Threshold {
        Threshold {
            kind,
            currency: currency.map(str::to_owned),
            warning: Some(Decimal::from(warning)),
            critical: None,
        }
    }

    /// One account, polled once with `snapshot` (fresh), with `thresholds`.
    fn state(account: &str, thresholds: Vec<Threshold>, snapshot: Snapshot) -> State {
        let known_currencies = snapshot
            .currencies()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let a = AccountState {
            provider: "payby",
            account: account.to_owned(),
            poll_interval: Duration::from_secs(60),
            thresholds,
            snapshot: Some((snapshot, Instant::now())),
            known_currencies,
            polls: 1,
            up: true,
            last_success: Some(SystemTime::now()),
            last_poll_duration: Some(Duration::from_millis(5)),
            last_error: None,
            history: Default::default(),
        };
        State {
            accounts: BTreeMap::from([(account.to_owned(), a)]),
            stale_after: Duration::from_secs(1800),
            reload_failure: None,
        }
    }

    fn missing_rows(html: &str) -> Vec<&str> {
        html.lines()
            .filter(|l| l.starts_with("<tr class=\"missing\">"))
            .collect()
    }

    #[test]
    fn a_thresholded_balance_absent_from_the_answer_shows_as_missing() {
        let mut snapshot = Snapshot::default();
        snapshot.add("USD", "available", Some(Decimal::from(500)));
        let state = state(
            "main<b>",
            vec![
                threshold(Some("USD"), "available", 100),
                threshold(Some("AED"), "available", 200),
            ],
            snapshot,
        );
        let html = render(&state, "/metrics", false, false);
        let rows = missing_rows(&html);
        assert_eq!(rows.len(), 1, "{html}");
        assert!(
            rows[0].contains("<td>AED</td><td>available</td>"),
            "{}",
            rows[0]
        );
        assert!(
            rows[0].contains(">MISSING</td><td class=\"num\">200</td>"),
            "{}",
            rows[0]
        );
        assert!(
            rows[0].contains("<td>main&lt;b&gt;</td>"),
            "escaped: {}",
            rows[0]
        );
        assert!(!html.contains("main<b>"));
    }

    #[test]
    fn a_kind_the_provider_stopped_sending_is_missing_for_a_learnt_currency() {
        // EngageLab OTP style: the threshold names no currency and follows the answer's.
        let mut snapshot = Snapshot::default();
        snapshot.add("USD", "total", Some(Decimal::from(5)));
        let state = state(
            "otp",
            vec![threshold(None, "total", 1), threshold(None, "gift", 1)],
            snapshot,
        );
        let rows = missing_rows(&render(&state, "/metrics", false, false)).join("\n");
        assert!(rows.contains("<td>USD</td><td>gift</td>"), "{rows}");
        assert!(!rows.contains("<td>total</td>"), "{rows}");
    }

    #[test]
    fn nothing_is_missing_without_a_threshold_or_when_every_balance_came() {
        // A list-mode account that holds nothing and guards nothing.
        let state_empty = state("list", Vec::new(), Snapshot::default());
        assert!(missing_rows(&render(&state_empty, "/metrics", false, false)).is_empty());
        let mut snapshot = Snapshot::default();
        snapshot.add("AED", "available", Some(Decimal::from(1)));
        let all_there = state(
            "one",
            vec![threshold(Some("AED"), "available", 5)],
            snapshot,
        );
        let html = render(&all_there, "/metrics", false, false);
        assert!(missing_rows(&html).is_empty(), "{html}");
        assert!(
            html.contains("<tr class=\"warning\"><td>one</td><td>AED</td>"),
            "{html}"
        );
    }

    #[test]
    fn hostile_currency_text_is_escaped_in_a_missing_row() {
        let mut snapshot = Snapshot::default();
        snapshot.add("<img src=x>", "total", Some(Decimal::from(1)));
        let state = state("a", vec![threshold(None, "gift", 1)], snapshot);
        let html = render(&state, "/metrics", false, false);
        assert_eq!(missing_rows(&html).len(), 1, "{html}");
        assert!(!html.contains("<IMG"), "{html}");
        assert!(html.contains("&lt;IMG SRC=X&gt;"), "{html}");
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }
}
