//! The HTML status page at `/`: what is wrong first, in words. One row per thresholded balance
//! (and per account without thresholds), worst first, with its amount, thresholds, headroom
//! and trend over the last hour; then each account's health with its other balances folded.
//! Made from a copy of the state; never shows a secret (the state holds none). No script and
//! no external asset: the bars and sparklines are inline SVG, and without CSS it reads as text.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use rust_decimal::{Decimal, RoundingStrategy};
use tokio::time::Instant;

use crate::config::Threshold;
use crate::metrics::history::{self, Point, WINDOW};
use crate::metrics::{AccountState, State};
use crate::snapshot::Snapshot;

/// How a row stands, worst first: the page sorts by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Critical,
    Warning,
    /// Has a threshold but is absent from the provider's last answer.
    Missing,
    /// The last poll failed.
    Down,
    /// No poll succeeded within `stale_after`: hidden from `/metrics`.
    Stale,
    /// Not polled yet.
    Pending,
    Ok,
}

impl Severity {
    pub fn word(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Missing => "MISSING",
            Severity::Down => "DOWN",
            Severity::Stale => "STALE",
            Severity::Pending => "PENDING",
            Severity::Ok => "OK",
        }
    }

    /// The CSS class of its row and badge.
    fn class(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Missing => "missing",
            Severity::Down => "down",
            Severity::Stale => "stale",
            Severity::Pending => "pending",
            Severity::Ok => "ok",
        }
    }
}

/// One row of the first table.
struct Row<'a> {
    severity: Severity,
    account: &'a AccountState,
    /// `None`: an account without thresholds.
    balance: Option<Guarded<'a>>,
}

struct Guarded<'a> {
    threshold: &'a Threshold,
    currency: &'a str,
    /// From the fresh snapshot, or the stale one (then shown as last known).
    amount: Option<Decimal>,
    stale: bool,
}

/// `reloadable`: there is a file to reload; `lifecycle`: `POST /-/reload` is enabled.
pub fn render(state: &State, telemetry_path: &str, reloadable: bool, lifecycle: bool) -> String {
    let now = Instant::now();
    let wall = SystemTime::now();
    let rows = rows(state, now);
    let mut html = String::with_capacity(16 * 1024 + rows.len() * 1024);
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="15">
<title>{title}balance_exporter</title>
<style>{STYLE}</style></head><body>
<header><h1>balance_exporter</h1>
<p class="muted">Version {version} (revision {revision}). Balances are polled in the background; this page (refreshed every 15 s) and
<a href="{metrics}">{metrics}</a> show the last results. <a href="/-/healthy">/-/healthy</a>
<a href="/-/ready">/-/ready</a>{reload}</p></header>
"#,
        title = title_prefix(&rows),
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
    if let Some(failure) = &state.reload_failure {
        let _ = writeln!(
            html,
            "<div class=\"banner\" role=\"alert\"><p><strong>RELOAD FAILED</strong> at {at} ({ago} ago): \
             the configuration file was refused and the previous configuration is still running. \
             Fix the file and reload again.</p><pre>{reason}</pre></div>",
            at = humantime::format_rfc3339_seconds(failure.at),
            ago = age(failure.at, wall),
            reason = escape(&failure.reason),
        );
    }
    summary(&mut html, &rows);
    html.push_str(
        "<h2>Balances, worst first</h2>\n<table class=\"balances\">\
         <thead><tr><th>state</th><th>account</th><th>balance</th><th class=\"num\">amount</th>\
         <th>thresholds</th><th>headroom</th><th>last hour</th></tr></thead><tbody>\n",
    );
    for row in &rows {
        balance_row(&mut html, row, wall);
    }
    if rows.is_empty() {
        html.push_str("<tr><td colspan=\"7\">No accounts configured.</td></tr>\n");
    }
    html.push_str(
        "</tbody></table>\n<h2>Accounts</h2>\n<table class=\"accounts\"><thead><tr><th>account</th>\
         <th>provider</th><th>state</th><th>last success</th><th>poll interval</th>\
         <th>last error</th><th>other balances</th></tr></thead><tbody>\n",
    );
    for a in state.accounts.values() {
        account_row(&mut html, a, state.stale_after, now, wall);
    }
    html.push_str("</tbody></table>\n</body></html>\n");
    html
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 1em 2em; color: #1f2328; }
h1 { font-size: 1.4em; margin: 0.2em 0; } h2 { font-size: 1.1em; margin: 1.2em 0 0.4em; }
header p { margin: 0.2em 0; font-size: 0.9em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #d0d7de; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { font-size: 0.85em; color: #57606a; font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: #57606a; } .small { font-size: 0.85em; }
.badge { display: inline-block; min-width: 5.5em; text-align: center; padding: 0.1em 0.4em;
  border-radius: 3px; font-weight: 700; font-size: 0.85em; }
.badge.critical, .badge.down, .badge.missing { background: #cf222e; color: #fff; }
.badge.warning { background: #bf8700; color: #fff; }
.badge.stale, .badge.pending { background: #6e7781; color: #fff; }
.badge.ok, .badge.up { background: #1a7f37; color: #fff; }
tr.critical, tr.missing { background: #ffebe9; } tr.warning { background: #fff8c5; }
tr.down, tr.stale { background: #f6f8fa; }
.banner { border: 2px solid #cf222e; background: #ffebe9; padding: 0.5em 1em; margin: 0.8em 0; }
.banner pre { white-space: pre-wrap; margin: 0.3em 0; max-height: 12em; overflow: auto; }
.summary { font-size: 1.05em; margin: 0.6em 0; }
.summary .badge { min-width: 0; margin-right: 0.2em; }
details summary { cursor: pointer; }
details table td { border: none; padding: 0.1em 0.5em; }
svg { vertical-align: middle; }
.trend { display: flex; gap: 0.5em; align-items: center; }
.nowrap { white-space: nowrap; }
@media (max-width: 700px) {
  body { margin: 0.5em; }
  table.balances thead, table.accounts thead { display: none; }
  table.balances tr, table.accounts tr { display: block; border-bottom: 2px solid #d0d7de; padding: 0.3em 0; }
  table.balances td, table.accounts td { display: block; border: none; padding: 0.1em 0.3em; text-align: left; }
  td[data-label]::before { content: attr(data-label) \": \"; color: #57606a; font-size: 0.85em; }
}
";

/// The rows of the first table, worst first (then by account, in threshold order).
fn rows(state: &State, now: Instant) -> Vec<Row<'_>> {
    let mut rows = Vec::new();
    for a in state.accounts.values() {
        let fresh = a.fresh_snapshot(state.stale_after, now);
        let account_severity = account_severity(a, fresh.is_some());
        let guarded = a.thresholded_balances();
        if guarded.is_empty() {
            rows.push(Row {
                severity: account_severity,
                account: a,
                balance: None,
            });
        }
        for (threshold, currency) in guarded {
            let (snapshot, stale) = match (fresh, &a.snapshot) {
                (Some(s), _) => (Some(s), false),
                (None, Some((s, _))) => (Some(s), true),
                (None, None) => (None, false),
            };
            let amount = snapshot.and_then(|s| amount_of(s, threshold.kind, currency));
            let severity = match (fresh.is_some(), amount) {
                (true, None) => Severity::Missing,
                (true, Some(v)) => match level(v, threshold) {
                    Severity::Ok => account_severity,
                    worse => worse,
                },
                (false, _) => account_severity,
            };
            rows.push(Row {
                severity,
                account: a,
                balance: Some(Guarded {
                    threshold,
                    currency,
                    amount,
                    stale,
                }),
            });
        }
    }
    // Within a severity, the balance closest to its thresholds first; then accounts by name
    // and thresholds in their order (a stable sort).
    rows.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then(closeness(a).total_cmp(&closeness(b)))
    });
    rows
}

/// The amount over its highest threshold (lower is closer to trouble); infinite where there
/// is nothing to compare.
fn closeness(row: &Row<'_>) -> f64 {
    let Some(g) = &row.balance else {
        return f64::INFINITY;
    };
    let top = [g.threshold.warning, g.threshold.critical]
        .into_iter()
        .flatten()
        .max();
    match (g.amount, top) {
        (Some(v), Some(top)) if top > Decimal::ZERO => {
            crate::money::to_gauge(v) / crate::money::to_gauge(top)
        }
        _ => f64::INFINITY,
    }
}

/// How an account stands as a whole: down, stale, pending or fine.
fn account_severity(a: &AccountState, fresh: bool) -> Severity {
    match (a.polls, a.up, fresh) {
        (0, _, _) => Severity::Pending,
        (_, false, _) => Severity::Down,
        // Up, but polled less often than stale_after.
        (_, true, false) => Severity::Stale,
        (_, true, true) => Severity::Ok,
    }
}

/// Critical, warning or OK for `amount` against `t`.
fn level(amount: Decimal, t: &Threshold) -> Severity {
    if t.critical.is_some_and(|c| amount < c) {
        Severity::Critical
    } else if t.warning.is_some_and(|w| amount < w) {
        Severity::Warning
    } else {
        Severity::Ok
    }
}

fn amount_of(snapshot: &Snapshot, kind: &str, currency: &str) -> Option<Decimal> {
    snapshot
        .balances
        .iter()
        .find(|b| b.kind == kind && b.currency == currency)
        .map(|b| b.amount)
}

/// "(2 CRITICAL) " in the tab title when something is wrong.
fn title_prefix(rows: &[Row<'_>]) -> String {
    let bad = rows
        .iter()
        .filter(|r| r.severity < Severity::Pending)
        .count();
    match rows.first() {
        Some(worst) if bad > 0 => format!("({bad} not OK, worst {}) ", worst.severity.word()),
        _ => String::new(),
    }
}

fn summary(html: &mut String, rows: &[Row<'_>]) {
    let count = |s: Severity| rows.iter().filter(|r| r.severity == s).count();
    let bad: Vec<String> = [
        Severity::Critical,
        Severity::Warning,
        Severity::Missing,
        Severity::Down,
        Severity::Stale,
        Severity::Pending,
    ]
    .into_iter()
    .filter(|s| count(*s) > 0)
    .map(|s| {
        format!(
            "<span class=\"badge {}\">{} {}</span>",
            s.class(),
            count(s),
            s.word()
        )
    })
    .collect();
    let ok = count(Severity::Ok);
    let _ = writeln!(
        html,
        "<p class=\"summary\">{}{}</p>",
        if bad.is_empty() {
            "Nothing is wrong: ".to_owned()
        } else {
            format!("{}; ", bad.join(" "))
        },
        format_args!("{ok} OK ({})", plural(rows.len(), "row")),
    );
}

fn balance_row(html: &mut String, row: &Row<'_>, wall: SystemTime) {
    let a = row.account;
    let class = row.severity.class();
    let _ = write!(
        html,
        "<tr class=\"{class}\"><td data-label=\"state\"><span class=\"badge {class}\">{word}</span></td>\
         <td data-label=\"account\"><a href=\"#account-{id}\">{name}</a><br><span class=\"muted small\">{provider}</span>{note}</td>",
        word = row.severity.word(),
        id = escape(&a.account),
        name = escape(&a.account),
        provider = escape(a.provider),
        note = account_note(a, row.severity, wall),
    );
    let Some(g) = &row.balance else {
        let balances = a.snapshot.as_ref().map_or(0, |(s, _)| s.balances.len());
        let _ = writeln!(
            html,
            "<td data-label=\"balance\" colspan=\"6\" class=\"muted\">no thresholds set{}</td></tr>",
            if balances > 0 {
                format!(
                    "; its {} under <a href=\"#account-{}\">Accounts</a>",
                    plural(balances, "balance"),
                    escape(&a.account)
                )
            } else {
                String::new()
            }
        );
        return;
    };
    let t = g.threshold;
    let amount = match (g.amount, row.severity) {
        (None, Severity::Missing) => {
            "<span title=\"has a threshold but is absent from the provider's last answer: no \
             low-balance alert can fire\">MISSING</span>"
                .to_owned()
        }
        (None, _) => "<span class=\"muted\">no value yet</span>".to_owned(),
        (Some(v), _) if g.stale => format!(
            "<span class=\"muted\" title=\"last known value, {exact}; hidden from /metrics\">{}</span>",
            format_amount(v, g.currency),
            exact = v
        ),
        (Some(v), _) => format!(
            "<span title=\"{v}\">{}</span>",
            format_amount(v, g.currency)
        ),
    };
    let mut thresholds = Vec::new();
    if let Some(w) = t.warning {
        thresholds.push(format!("warning &lt; {}", format_amount(w, g.currency)));
    }
    if let Some(c) = t.critical {
        thresholds.push(format!("critical &lt; {}", format_amount(c, g.currency)));
    }
    let points = history_points(a, t.kind, g.currency, wall);
    let _ = writeln!(
        html,
        "<td data-label=\"balance\" class=\"nowrap\">{currency} {kind}</td><td data-label=\"amount\" class=\"num\">{amount}</td>\
         <td data-label=\"thresholds\" class=\"small nowrap\">{thresholds}</td><td data-label=\"headroom\">{headroom}</td>\
         <td data-label=\"last hour\">{trend}</td></tr>",
        currency = escape(g.currency),
        kind = escape(t.kind),
        thresholds = thresholds.join("<br>"),
        headroom = g
            .amount
            .map(|v| headroom(v, t, g.currency, row.severity))
            .unwrap_or_default(),
        trend = trend(&points, t),
    );
}

/// Under the account name: why the account is not fine, in words.
fn account_note(a: &AccountState, severity: Severity, wall: SystemTime) -> String {
    let down = !a.up && a.polls > 0;
    if !down && severity != Severity::Stale {
        return String::new();
    }
    let mut note = String::from("<br><span class=\"small\">");
    if down {
        note.push_str("account DOWN");
        if let Some(e) = &a.last_error {
            let _ = write!(
                note,
                ": <code>{}</code> {}",
                escape(&e.code),
                escape(&truncate(&e.message, 120))
            );
        }
    } else {
        note.push_str("stale: no successful poll within stale_after");
    }
    if let Some(t) = a.last_success {
        let _ = write!(note, "; last success {} ago", age(t, wall));
    }
    note.push_str("</span>");
    note
}

/// The balance against its thresholds: a bar (full at twice the highest threshold, with a tick
/// at each) and the distance to the nearest threshold in words.
fn headroom(amount: Decimal, t: &Threshold, currency: &str, severity: Severity) -> String {
    let top = [t.warning, t.critical].into_iter().flatten().max();
    let Some(top) = top.filter(|v| *v > Decimal::ZERO) else {
        return String::new();
    };
    let scale = crate::money::to_gauge(top) * 2.0;
    let fraction = |v: Decimal| (crate::money::to_gauge(v) / scale).clamp(0.0, 1.0);
    const W: f64 = 120.0;
    let fill = match level(amount, t) {
        Severity::Critical => "#cf222e",
        Severity::Warning => "#bf8700",
        _ => "#1a7f37",
    };
    let mut svg = format!(
        "<svg width=\"120\" height=\"12\" viewBox=\"0 0 120 12\" role=\"img\" aria-hidden=\"true\">\
         <rect width=\"120\" height=\"12\" fill=\"#eaeef2\"/><rect width=\"{:.1}\" height=\"12\" fill=\"{fill}\"/>",
        fraction(amount) * W
    );
    for v in [t.warning, t.critical].into_iter().flatten() {
        let _ = write!(
            svg,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"0\" y2=\"12\" stroke=\"#1f2328\" stroke-width=\"1.5\"/>",
            x = fraction(v) * W
        );
    }
    svg.push_str("</svg>");
    // Words: how far from the threshold that matters now.
    let words = match (severity, t.warning, t.critical) {
        (Severity::Critical, _, Some(c)) => {
            format!("{} under critical", format_amount(c - amount, currency))
        }
        (_, Some(w), _) if amount < w => match t.critical {
            Some(c) => format!("{} above critical", format_amount(amount - c, currency)),
            None => format!("{} under warning", format_amount(w - amount, currency)),
        },
        (_, Some(w), _) => format!("{} above warning", format_amount(amount - w, currency)),
        (_, None, Some(c)) => format!("{} above critical", format_amount(amount - c, currency)),
        _ => String::new(),
    };
    format!("{svg}<br><span class=\"small\">{words}</span>")
}

/// The points of the last hour, oldest first.
fn history_points(a: &AccountState, kind: &str, currency: &str, wall: SystemTime) -> Vec<Point> {
    let now = unix_seconds(wall);
    let since = now.saturating_sub(WINDOW.as_secs() as u32);
    let mut points = a.history.points(history::key(kind, currency));
    points.retain(|p| p.at >= since && p.at <= now);
    points
}

/// A sparkline of `points` and the runway at their rate.
fn trend(points: &[Point], t: &Threshold) -> String {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return "<span class=\"muted small\">no history yet</span>".to_owned();
    };
    let span = last.at.saturating_sub(first.at);
    if points.len() < 2 || span == 0 {
        return "<span class=\"muted small\">one point so far</span>".to_owned();
    }
    // The scale reaches down to the lowest threshold: a fall of a few units in a large
    // balance stays a flat line, and the line's height shows the headroom left.
    let floor = [t.critical, t.warning]
        .into_iter()
        .flatten()
        .min()
        .map(crate::money::to_gauge);
    let (lo, hi) = points
        .iter()
        .fold((floor.unwrap_or(f64::MAX), f64::MIN), |(lo, hi), p| {
            (lo.min(f64::from(p.value)), hi.max(f64::from(p.value)))
        });
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let y = |v: f64| {
        if hi > lo {
            2.0 + (H - 4.0) * (hi - v) / (hi - lo)
        } else {
            H / 2.0
        }
    };
    let line: Vec<String> = points
        .iter()
        .map(|p| {
            let x = W * f64::from(p.at - first.at) / f64::from(span);
            format!("{x:.1},{:.1}", y(f64::from(p.value)))
        })
        .collect();
    let per_second = (f64::from(last.value) - f64::from(first.value)) / f64::from(span);
    let over = if span >= 50 * 60 {
        "at the last hour's rate".to_owned()
    } else {
        format!(
            "at the rate of the last {}",
            coarse(Duration::from_secs(span.into()))
        )
    };
    let current = f64::from(last.value);
    let runway = if per_second >= 0.0 || !per_second.is_finite() {
        "not falling".to_owned()
    } else if current <= 0.0 {
        "empty".to_owned()
    } else {
        let to = |target: f64| Duration::try_from_secs_f64((current - target) / -per_second).ok();
        let mut text = match to(0.0) {
            Some(d) => format!("~{} to zero", coarse(d)),
            None => "not falling".to_owned(),
        };
        let critical = t.critical.map(crate::money::to_gauge);
        if let Some(c) = critical.filter(|c| current > *c)
            && let Some(d) = to(c)
        {
            let _ = write!(text, ", critical in ~{}", coarse(d));
        }
        let _ = write!(text, "<br><span class=\"muted\">{over}</span>");
        text
    };
    format!(
        "<div class=\"trend\"><svg width=\"120\" height=\"28\" viewBox=\"0 0 120 28\" role=\"img\" aria-label=\"trend\">\
         <title>{n} points over {span}</title><rect width=\"120\" height=\"28\" fill=\"#f6f8fa\"/>\
         <polyline fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"{line}\"/></svg> \
         <span class=\"small\">{runway}</span></div>",
        n = points.len(),
        span = coarse(Duration::from_secs(span.into())),
        line = line.join(" "),
    )
}

fn account_row(
    html: &mut String,
    a: &AccountState,
    stale_after: Duration,
    now: Instant,
    wall: SystemTime,
) {
    let (class, label) = match (a.polls, a.up) {
        (0, _) => ("pending", "not polled yet"),
        (_, true) => ("up", "UP"),
        (_, false) => ("down", "DOWN"),
    };
    let last_success = a
        .last_success
        .map(|t| format!("{} ago", age(t, wall)))
        .unwrap_or_else(|| "never".to_owned());
    let last_error = match &a.last_error {
        Some(e) => {
            // The class only where it says more than the code ("decode (decode)").
            let class = if e.code == e.class.as_str() {
                String::new()
            } else {
                format!(" ({})", e.class)
            };
            let recovered = match (a.up, e.recovered) {
                (true, Some(r)) => format!(
                    "<span class=\"badge ok\">recovered</span> {} ago; ",
                    age(r, wall)
                ),
                _ => String::new(),
            };
            format!(
                "{recovered}<code>{}</code>{class} {} ago: {}",
                escape(&e.code),
                age(e.at, wall),
                escape(&e.message)
            )
        }
        None => "<span class=\"muted\">none</span>".to_owned(),
    };
    let _ = writeln!(
        html,
        "<tr id=\"account-{id}\"><td data-label=\"account\">{name}</td><td data-label=\"provider\">{provider}</td>\
         <td data-label=\"state\"><span class=\"badge {class}\">{label}</span></td><td data-label=\"last success\">{last_success}</td>\
         <td data-label=\"poll interval\">{interval}</td><td data-label=\"last error\" class=\"small\">{last_error}</td>\
         <td data-label=\"other balances\">{others}</td></tr>",
        id = escape(&a.account),
        name = escape(&a.account),
        provider = escape(a.provider),
        interval = humantime::format_duration(a.poll_interval),
        others = other_balances(a, stale_after, now),
    );
}

/// The balances without a threshold, folded: the non-zero ones first.
fn other_balances(a: &AccountState, stale_after: Duration, now: Instant) -> String {
    let Some(snapshot) = a.fresh_snapshot(stale_after, now) else {
        return match &a.snapshot {
            Some(_) => "<span class=\"muted\">stale: hidden from /metrics</span>".to_owned(),
            None => "<span class=\"muted\">no balances yet</span>".to_owned(),
        };
    };
    let guarded = a.thresholded_balances();
    let mut others: Vec<_> = snapshot
        .balances
        .iter()
        .filter(|b| {
            !guarded
                .iter()
                .any(|(t, c)| t.kind == b.kind && *c == b.currency)
        })
        .collect();
    if others.is_empty() {
        return "<span class=\"muted\">none</span>".to_owned();
    }
    others.sort_by_key(|b| b.amount.is_zero());
    let zero = others.iter().filter(|b| b.amount.is_zero()).count();
    let mut out = format!(
        "<details><summary>{}{}</summary><table>",
        plural(others.len(), "balance"),
        if zero > 0 {
            format!(", {zero} zero")
        } else {
            String::new()
        }
    );
    for b in others {
        let _ = write!(
            out,
            "<tr><td>{} {}</td><td class=\"num\" title=\"{}\">{}</td></tr>",
            escape(&b.currency),
            escape(b.kind),
            b.amount,
            format_amount(b.amount, &b.currency)
        );
    }
    out.push_str("</table></details>");
    out
}

/// `amount` with thousands separators and its currency's minor units (ISO 4217; the amount's
/// own scale for a code without them), rounded down so that it never shows more than there is.
pub fn format_amount(amount: Decimal, currency: &str) -> String {
    let digits = crate::money::minor_units(currency).unwrap_or_else(|| amount.scale());
    let mut shown = amount.round_dp_with_strategy(digits, RoundingStrategy::ToNegativeInfinity);
    shown.rescale(digits);
    let text = shown.to_string();
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let mut out = String::with_capacity(text.len() + whole.len() / 3 + 1);
    out.push_str(sign);
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = fraction {
        out.push('.');
        out.push_str(f);
    }
    out
}

/// "1 balance", "3 balances".
fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn unix_seconds(t: SystemTime) -> u32 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A duration as a person reads a runway: "40 s", "12 min", "5 h", "3 d".
fn coarse(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..90 => format!("{s} s"),
        90..5_400 => format!("{} min", (s + 30) / 60),
        5_400..129_600 => format!("{} h", (s + 1_800) / 3_600),
        129_600..31_536_000 => format!("{} d", (s + 43_200) / 86_400),
        _ => "over a year".to_owned(),
    }
}

/// Time from `t` to `now`, to the second.
fn age(t: SystemTime, now: SystemTime) -> String {
    let elapsed = now.duration_since(t).unwrap_or_default();
    humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string()
}

fn truncate(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
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

    use super::*;
    use crate::error::ErrorClass;
    use crate::metrics::{LastError, ReloadFailure};

    fn threshold(currency: Option<&str>, kind: &'static str, warning: i64) -> Threshold {
        Threshold {
            kind,
            currency: currency.map(str::to_owned),
            warning: Some(Decimal::from(warning)),
            critical: None,
        }
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    /// An account polled once with `snapshot` (fresh), with `thresholds`.
    fn account(name: &str, thresholds: Vec<Threshold>, snapshot: Snapshot) -> AccountState {
        AccountState {
            provider: "payby",
            account: name.to_owned(),
            poll_interval: Duration::from_secs(60),
            thresholds,
            known_currencies: snapshot
                .currencies()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            snapshot: Some((snapshot, Instant::now())),
            polls: 1,
            up: true,
            last_success: Some(SystemTime::now()),
            last_poll_duration: Some(Duration::from_millis(5)),
            last_error: None,
            history: Default::default(),
        }
    }

    fn state_of(accounts: Vec<AccountState>) -> State {
        State {
            accounts: accounts
                .into_iter()
                .map(|a| (a.account.clone(), a))
                .collect::<BTreeMap<_, _>>(),
            stale_after: Duration::from_secs(1800),
            reload_failure: None,
        }
    }

    fn state(name: &str, thresholds: Vec<Threshold>, snapshot: Snapshot) -> State {
        state_of(vec![account(name, thresholds, snapshot)])
    }

    fn page(state: &State) -> String {
        render(state, "/metrics", false, false)
    }

    /// The rows of the first table.
    fn balance_rows(html: &str) -> Vec<&str> {
        let table = html
            .split("<table class=\"balances\">")
            .nth(1)
            .and_then(|rest| rest.split("</table>").next())
            .unwrap_or_else(|| panic!("no balances table in {html}"));
        table
            .lines()
            .filter(|l| l.starts_with("<tr class="))
            .collect()
    }

    fn one(currency: &str, kind: &'static str, amount: &str) -> Snapshot {
        let mut s = Snapshot::default();
        s.add(currency, kind, Some(d(amount)));
        s
    }

    #[test]
    fn amounts_have_thousands_separators_and_their_currency_s_minor_units() {
        assert_eq!(format_amount(d("850.4500"), "USD"), "850.45");
        assert_eq!(format_amount(d("25"), "USD"), "25.00");
        assert_eq!(format_amount(d("897954.07"), "AED"), "897,954.07");
        assert_eq!(format_amount(d("1234567"), "JPY"), "1,234,567");
        assert_eq!(format_amount(d("1.5"), "KWD"), "1.500");
        assert_eq!(format_amount(d("-1234.5"), "USD"), "-1,234.50");
        assert_eq!(
            format_amount(d("999.999"), "USD"),
            "999.99",
            "never more than there is"
        );
        assert_eq!(format_amount(d("0"), "EUR"), "0.00");
        // No ISO minor units: the amount's own digits.
        assert_eq!(format_amount(d("12345.678"), "XAU"), "12,345.678");
        assert_eq!(format_amount(d("100"), "POINTS"), "100");
        assert_eq!(
            format_amount(Decimal::MAX, "USD"),
            "79,228,162,514,264,337,593,543,950,335",
            "too many digits for two more: as it is"
        );
    }

    #[test]
    fn rows_are_sorted_worst_first_with_the_state_in_words() {
        let guarded = |w| vec![threshold(Some("USD"), "total", w)];
        let mut down = account("d-down", guarded(10), one("USD", "total", "50"));
        down.up = false;
        down.polls = 2;
        down.last_error = Some(LastError {
            code: "timeout".into(),
            class: ErrorClass::Transport,
            message: "the poll did not finish".into(),
            at: SystemTime::now(),
            recovered: None,
        });
        let mut pending = account("e-pending", Vec::new(), Snapshot::default());
        pending.polls = 0;
        pending.snapshot = None;
        let state = state_of(vec![
            account("a-ok", guarded(10), one("USD", "total", "50")),
            account("b-warning", guarded(100), one("USD", "total", "50")),
            account("c-missing", guarded(100), one("USD", "gift", "50")),
            down,
            pending,
            account(
                "f-critical",
                {
                    let mut t = guarded(100);
                    t[0].critical = Some(d("60"));
                    t
                },
                one("USD", "total", "50"),
            ),
        ]);
        let html = page(&state);
        let order: Vec<(&str, &str)> = balance_rows(&html)
            .iter()
            .map(|row| {
                let word = row.split("<span class=\"badge ").nth(1).unwrap();
                let word = word.split('>').nth(1).unwrap().split('<').next().unwrap();
                let name = row
                    .split("#account-")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                (word, name)
            })
            .collect();
        assert_eq!(
            order,
            [
                ("CRITICAL", "f-critical"),
                ("WARNING", "b-warning"),
                ("MISSING", "c-missing"),
                ("DOWN", "d-down"),
                ("PENDING", "e-pending"),
                ("OK", "a-ok"),
            ],
            "{html}"
        );
        assert!(
            html.contains("<title>(4 not OK, worst CRITICAL) "),
            "{html}"
        );
        assert!(
            html.contains("account DOWN: <code>timeout</code>"),
            "{html}"
        );
        let warning = balance_rows(&html)[1];
        assert!(warning.contains(">50.00</span>"), "{warning}");
        assert!(warning.contains("warning &lt; 100.00"), "{warning}");
        assert!(warning.contains("50.00 under warning"), "{warning}");
    }

    #[test]
    fn unthresholded_and_zero_balances_are_folded_under_the_account() {
        let mut snapshot = one("USD", "available", "1234.5");
        let kinds = ["frozen", "pending", "reserved", "margin", "payable"];
        for currency in ["EUR", "GBP", "HKD", "SGD", "AED", "JPY", "CHF", "CAD"] {
            for kind in kinds {
                snapshot.add(currency, kind, Some(Decimal::ZERO));
            }
        }
        snapshot.add("EUR", "available", Some(d("10")));
        let html = page(&state(
            "acq",
            vec![threshold(Some("USD"), "available", 100)],
            snapshot,
        ));
        assert_eq!(balance_rows(&html).len(), 1, "{html}");
        assert!(
            html.contains("<details><summary>41 balances, 40 zero</summary>"),
            "{html}"
        );
        let folded = html.split("<details>").nth(1).unwrap();
        assert!(
            folded.find("EUR available").unwrap() < folded.find("EUR frozen").unwrap(),
            "non-zero first: {folded}"
        );
        // An account without thresholds: one row, its balances under Accounts.
        let html = page(&state("plain", Vec::new(), one("USD", "total", "3")));
        let rows = balance_rows(&html);
        assert_eq!(rows.len(), 1);
        assert!(
            rows[0].contains(">OK<") && rows[0].contains("no thresholds set; its 1 balance under"),
            "{}",
            rows[0]
        );
    }

    #[test]
    fn a_thresholded_balance_absent_from_the_answer_shows_as_missing() {
        let state = state(
            "main<b>",
            vec![
                threshold(Some("USD"), "available", 100),
                threshold(Some("AED"), "available", 200),
            ],
            one("USD", "available", "500"),
        );
        let html = page(&state);
        let rows = balance_rows(&html);
        assert_eq!(rows.len(), 2, "{html}");
        assert!(rows[0].starts_with("<tr class=\"missing\">"), "{}", rows[0]);
        assert!(rows[0].contains(">AED available</td>"), "{}", rows[0]);
        assert!(rows[0].contains("warning &lt; 200.00"), "{}", rows[0]);
        assert!(rows[0].contains("main&lt;b&gt;"), "escaped: {}", rows[0]);
        assert!(!html.contains("main<b>"));
        assert!(rows[1].starts_with("<tr class=\"ok\">"), "{}", rows[1]);
    }

    #[test]
    fn a_kind_the_provider_stopped_sending_is_missing_for_a_learnt_currency() {
        // EngageLab OTP style: the threshold names no currency and follows the answer's.
        let state = state(
            "otp",
            vec![threshold(None, "total", 1), threshold(None, "gift", 1)],
            one("USD", "total", "5"),
        );
        let html = page(&state);
        let missing: Vec<&str> = balance_rows(&html)
            .into_iter()
            .filter(|r| r.starts_with("<tr class=\"missing\">"))
            .collect();
        assert_eq!(missing.len(), 1, "{html}");
        assert!(missing[0].contains(">USD gift</td>"), "{}", missing[0]);
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let mut snapshot = one("<img src=x>", "total", "1");
        snapshot.add("\"'&", "gift", Some(Decimal::ONE));
        let mut a = account("a", vec![threshold(None, "total", 5)], snapshot);
        a.up = false;
        a.polls = 2;
        a.last_error = Some(LastError {
            code: "<script>".into(),
            class: ErrorClass::Decode,
            message: "<b>bold</b> & \"quoted\"".into(),
            at: SystemTime::now(),
            recovered: None,
        });
        let mut state = state_of(vec![a]);
        state.reload_failure = Some(ReloadFailure {
            at: SystemTime::now(),
            reason: "accounts[0] (<x>).provider: unknown".into(),
        });
        let html = render(&state, "/m<etrics>", true, true);
        for raw in [
            "<img", "<IMG", "<script>", "<b>bold", "<x>", "<etrics>", "\"'&",
        ] {
            assert!(!html.contains(raw), "{raw} unescaped in {html}");
        }
        assert!(html.contains("&lt;IMG SRC=X&gt;"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("&quot;&#39;&amp;"), "{html}");
    }

    #[test]
    fn the_last_error_names_its_class_once_and_says_when_it_recovered() {
        let mut a = account("a", Vec::new(), one("USD", "total", "1"));
        let at = SystemTime::now() - Duration::from_secs(120);
        a.last_error = Some(LastError {
            code: "decode".into(),
            class: ErrorClass::Decode,
            message: "expected value".into(),
            at,
            recovered: Some(at + Duration::from_secs(60)),
        });
        let html = page(&state_of(vec![a.clone()]));
        assert!(!html.contains("(decode)"), "{html}");
        assert!(
            html.contains("<span class=\"badge ok\">recovered</span> 1m ago; <code>decode</code> 2m ago: expected value"),
            "{html}"
        );
        // Another class is named; no "recovered" while still down.
        a.up = false;
        a.last_error.as_mut().unwrap().code = "1000".into();
        a.last_error.as_mut().unwrap().recovered = None;
        let html = page(&state_of(vec![a]));
        assert!(html.contains("<code>1000</code> (decode) 2m ago"), "{html}");
        assert!(!html.contains(">recovered<"), "{html}");
    }

    #[test]
    fn a_failed_reload_shows_a_banner_with_its_time_and_reason() {
        let mut state = state("a", Vec::new(), Snapshot::default());
        assert!(!page(&state).contains("RELOAD FAILED"));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_223_385);
        state.reload_failure = Some(ReloadFailure {
            at,
            reason: "accounts[0].provider: unknown provider \"paybi\"".into(),
        });
        let html = page(&state);
        let banner = html
            .split("<div class=\"banner\" role=\"alert\">")
            .nth(1)
            .unwrap();
        assert!(
            banner.contains("RELOAD FAILED</strong> at 2026-12-02T14:56:25Z"),
            "{banner}"
        );
        assert!(
            banner.contains("unknown provider &quot;paybi&quot;"),
            "{banner}"
        );
        // Before the tables: the first thing under the header.
        assert!(html.find("RELOAD FAILED") < html.find("<table"));
    }

    #[test]
    fn the_trend_is_a_sparkline_with_the_runway_at_its_rate() {
        let t = Threshold {
            critical: Some(d("20")),
            ..threshold(Some("USD"), "total", 100)
        };
        let now = unix_seconds(SystemTime::now());
        let key = history::key("total", "USD");
        let mut a = account("sms", vec![t.clone()], one("USD", "total", "80"));
        // 80 -> 70 over 50 minutes: 12 an hour, 70 / 12 h to zero, 50 / 12 h to critical.
        for i in 0..=10u32 {
            let at = now - 3000 + 300 * i;
            a.history.record(at, 13, &[(key, Some(80.0 - i as f32))]);
        }
        let html = page(&state_of(vec![a.clone()]));
        let row = balance_rows(&html)[0];
        assert!(row.contains("<polyline"), "{row}");
        assert!(
            row.contains("<title>11 points over 50 min</title>"),
            "{row}"
        );
        assert!(
            row.contains(
                "~6 h to zero, critical in ~4 h<br><span class=\"muted\">at the last hour's rate"
            ),
            "{row}"
        );
        // Points older than an hour are not part of the trend.
        let mut old = account("old", vec![t.clone()], one("USD", "total", "80"));
        old.history.record(now - 7200, 13, &[(key, Some(90.0))]);
        old.history.record(now - 60, 13, &[(key, Some(80.0))]);
        assert!(page(&state_of(vec![old])).contains("one point so far"));
        // Rising: not falling; no history: said so.
        let mut rising = account("up", vec![t], one("USD", "total", "80"));
        rising.history.record(now - 600, 13, &[(key, Some(70.0))]);
        rising.history.record(now, 13, &[(key, Some(80.0))]);
        let html = page(&state_of(vec![rising]));
        assert!(html.contains("not falling"), "{html}");
        let html = page(&state(
            "none",
            vec![threshold(Some("USD"), "total", 1)],
            one("USD", "total", "5"),
        ));
        assert!(html.contains("no history yet"), "{html}");
    }

    #[test]
    fn the_page_has_a_viewport_and_a_phone_layout_and_no_script() {
        let html = page(&state("a", Vec::new(), Snapshot::default()));
        assert!(html.contains("<meta name=\"viewport\""));
        assert!(html.contains("@media (max-width: 700px)"));
        assert!(!html.to_ascii_lowercase().contains("<script"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external asset"
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }
}
