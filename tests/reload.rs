//! Reload (SIGHUP, `POST /-/reload` with `--web.enable-lifecycle`) and shutdown (SIGTERM,
//! SIGINT) of the binary, against the EngageLab simulator on loopback.

mod common;

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{EngageLabSim, SimAccount};
use balance_exporter::sim::{Fault, Gate, Ledger, SimServer};
use base64::Engine as _;
use common::{Daemon, Exposition, PATIENCE, TempDir, get, logfmt_field, poll_succeeded};
use rust_decimal::Decimal;

const RELOADED: &str = "balance_exporter_config_last_reload_successful";
const RELOADED_AT: &str = "balance_exporter_config_last_reload_success_timestamp_seconds";

/// An SMS simulator with one account per `(dev_key, dev_secret, balance)`.
async fn simulator(accounts: &[(&str, &str, i64)]) -> (Arc<EngageLabSim>, SimServer) {
    let sim = EngageLabSim::new(Product::Sms);
    for (key, secret, balance) in accounts {
        sim.add_account(
            key,
            SimAccount::new(
                secret,
                Ledger::fixed(Decimal::from(*balance)),
                Ledger::fixed(Decimal::ZERO),
            ),
        );
    }
    let server = sim.start().await.unwrap();
    (sim, server)
}

/// One `accounts:` item polling `key`'s account every `interval`.
fn account(name: &str, server: &SimServer, key: &str, interval: &str) -> String {
    format!(
        "\n  - {{name: {name}, provider: engagelab, product: sms, base_url: '{}', dev_key: {key}, dev_secret: secret-of-{key}, poll_interval: {interval}}}",
        server.base_url()
    )
}

fn config(accounts: &[String]) -> String {
    format!("accounts:{}\n", accounts.concat())
}

/// Requests the simulator received with `key`'s credentials.
fn requests_of(server: &SimServer, key: &str) -> usize {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:secret-of-{key}"))
    );
    server
        .requests()
        .iter()
        .filter(|r| r.header("authorization") == Some(basic.as_str()))
        .count()
}

/// Polls `condition` until it holds; fails after [`PATIENCE`].
async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs blocking work on the daemon (waiting for its log) off the runtime, so the in-process
/// simulator keeps answering.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

async fn scrape(daemon: &Daemon) -> Exposition {
    let (status, body) = get(daemon.addr, "/metrics").await;
    assert_eq!(status, 200);
    Exposition::parse(&body)
}

fn send(
    method: reqwest::Method,
    daemon: &Daemon,
    path: &str,
) -> impl Future<Output = (u16, String)> + use<> {
    let url = format!("http://{}{path}", daemon.addr);
    async move {
        let response = reqwest::Client::new()
            .request(method, url)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }
}

#[tokio::test]
async fn sighup_applies_added_changed_and_removed_accounts_and_leaves_unchanged_ones_running() {
    let (sim, server) = simulator(&[
        ("k-steady", "secret-of-k-steady", 42),
        ("k-leaving", "secret-of-k-leaving", 5),
        ("k-changing", "secret-of-k-changing", 10),
        ("k-changed", "secret-of-k-changed", 77),
        ("k-added", "secret-of-k-added", 3),
    ])
    .await;
    // The unchanged account's first poll is held at the simulator until the reload is done.
    let gate = Gate::new();
    sim.update("k-steady", |a| a.faults.next(Fault::Held(gate.clone()), 1));
    let dir = TempDir::new("reload-sighup");
    let path = dir.write(
        "config.yml",
        &config(&[
            account("steady", &server, "k-steady", "1h"),
            account("leaving", &server, "k-leaving", "1h"),
            account("changing", &server, "k-changing", "1h"),
        ]),
    );
    let file = path.to_str().unwrap().to_owned();
    // No --web.enable-lifecycle: SIGHUP reloads regardless.
    let mut daemon = blocking(move || {
        let mut d = Daemon::spawn(&["--config.file", &file, "--log.level", "debug"]);
        let (a, b) = (poll_succeeded("leaving"), poll_succeeded("changing"));
        d.wait_for_each(&[&a, &b]);
        d
    })
    .await;
    tokio::time::timeout(PATIENCE, gate.until_arrived(1))
        .await
        .unwrap_or_else(|_| panic!("the steady account's poll not held within {PATIENCE:?}"));
    let before = scrape(&daemon).await;
    assert_eq!(
        before.expect(RELOADED, &[]),
        1.0,
        "the start-up load counts"
    );
    let loaded_at = before.expect(RELOADED_AT, &[]);
    assert!(
        before
            .value("balance_api_requests_total", &[("account", "leaving")])
            .is_some()
    );

    dir.write(
        "config.yml",
        &config(&[
            account("steady", &server, "k-steady", "1h"),
            account("changing", &server, "k-changed", "1h"),
            account("added", &server, "k-added", "1h"),
        ]),
    );
    daemon.signal("HUP");
    let mut daemon = blocking(move || {
        let line = daemon.wait_for_line(|l| l.contains("msg=\"configuration reloaded\""));
        for counts in ["added=1", "changed=1", "removed=1", "unchanged=1"] {
            assert!(line.contains(counts), "{counts} in {line}");
        }
        let (b, c) = (poll_succeeded("changing"), poll_succeeded("added"));
        daemon.wait_for_each(&[&b, &c]);
        daemon
    })
    .await;
    let log = daemon.log_text();
    let steady_polls_ended = log.lines().filter(|l| {
        (l.contains("msg=\"poll succeeded\"") || l.contains("msg=\"poll failed\""))
            && logfmt_field(l, "account") == Some("steady")
    });
    assert_eq!(
        steady_polls_ended.count(),
        0,
        "before the gate opened:\n{log}"
    );
    // The poll held since before the reload finishes now: its task was not aborted (an
    // aborted one would restart and send a second request, counted below).
    gate.open();
    let daemon = blocking(move || {
        daemon.wait_for_line(poll_succeeded("steady"));
        daemon
    })
    .await;

    let m = scrape(&daemon).await;
    assert_eq!(m.expect(RELOADED, &[]), 1.0);
    assert!(m.expect(RELOADED_AT, &[]) > loaded_at, "{}", m.text);
    let normal = |account| [("account", account), ("kind", "normal")];
    assert_eq!(m.expect("balance_amount", &normal("changing")), 77.0);
    assert_eq!(m.expect("balance_amount", &normal("added")), 3.0);
    assert_eq!(m.expect("balance_amount", &normal("steady")), 42.0);
    // The changed account kept its series: its request counter goes on from 1.
    assert_eq!(
        m.expect("balance_api_requests_total", &[("account", "changing")]),
        2.0
    );
    assert!(
        !m.text.contains("account=\"leaving\""),
        "the removed account's series are gone:\n{}",
        m.text
    );
    // One poll of the unchanged account in all: the reload neither repeated nor restarted it.
    assert_eq!(
        m.expect("balance_api_requests_total", &[("account", "steady")]),
        1.0
    );
    assert_eq!(requests_of(&server, "k-steady"), 1);
    assert_eq!(requests_of(&server, "k-leaving"), 1);
    let log = daemon.stop_async().await;
    let started = |account: &str| {
        log.lines()
            .filter(|l| {
                l.contains("msg=\"poller started\"") && logfmt_field(l, "account") == Some(account)
            })
            .count()
    };
    assert_eq!(started("steady"), 1, "{log}");
    assert_eq!(started("changing"), 2, "{log}");
    assert_eq!(
        requests_of(&server, "k-steady"),
        1,
        "no poll after the others"
    );
}

#[tokio::test]
async fn post_reload_is_refused_without_the_lifecycle_flag() {
    let (_sim, server) = simulator(&[("k", "secret-of-k", 1)]).await;
    let dir = TempDir::new("reload-403");
    let path = dir.write("config.yml", &config(&[account("a", &server, "k", "1h")]));
    let file = path.to_str().unwrap().to_owned();
    let daemon = blocking(move || Daemon::spawn(&["--config.file", &file])).await;
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let (status, body) = send(method, &daemon, "/-/reload").await;
        assert_eq!(status, 403);
        assert_eq!(body, "Lifecycle API is not enabled\n");
    }
    let (_, page) = get(daemon.addr, "/").await;
    assert!(page.contains("--web.enable-lifecycle"), "{page}");
    let log = daemon.stop_async().await;
    assert!(!log.contains("configuration reloaded"), "{log}");
}

#[tokio::test]
async fn a_refused_config_keeps_the_old_accounts_polling_and_reports_it() {
    let (_sim, server) = simulator(&[("k1", "secret-of-k1", 1), ("k2", "secret-of-k2", 2)]).await;
    let dir = TempDir::new("reload-refused");
    let path = dir.write(
        "config.yml",
        &config(&[account("one", &server, "k1", "1s")]),
    );
    let file = path.to_str().unwrap().to_owned();
    let mut daemon = blocking(move || {
        let mut d = Daemon::spawn(&[
            "--config.file",
            &file,
            "--log.level",
            "debug",
            "--web.enable-lifecycle",
        ]);
        d.wait_for_line(poll_succeeded("one"));
        d
    })
    .await;
    let loaded_at = scrape(&daemon).await.expect(RELOADED_AT, &[]);

    dir.write(
        "config.yml",
        "accounts:\n  - name: broken\n    provider: nope\n",
    );
    let (status, body) = send(reqwest::Method::POST, &daemon, "/-/reload").await;
    assert_eq!(status, 500);
    assert!(
        body.contains("accounts[0] (broken).provider: unknown provider"),
        "{body}"
    );
    let polls_before = requests_of(&server, "k1");
    let daemon = blocking(move || {
        let line = daemon.wait_for_line(|l| l.contains("reload failed"));
        assert!(line.contains("unknown provider"), "{line}");
        assert!(line.contains("level=error"), "{line}");
        // The old configuration goes on polling.
        daemon.wait_for_line(poll_succeeded("one"));
        daemon
    })
    .await;
    assert!(requests_of(&server, "k1") > polls_before);
    let m = scrape(&daemon).await;
    assert_eq!(m.expect(RELOADED, &[]), 0.0);
    assert_eq!(m.expect(RELOADED_AT, &[]), loaded_at, "no success since");
    assert!(m.value("balance_up", &[("account", "broken")]).is_none());

    dir.write(
        "config.yml",
        &config(&[
            account("one", &server, "k1", "1s"),
            account("two", &server, "k2", "1h"),
        ]),
    );
    let (status, _) = send(reqwest::Method::PUT, &daemon, "/-/reload").await;
    assert_eq!(status, 200);
    let daemon = blocking(move || {
        let mut daemon = daemon;
        daemon.wait_for_line(poll_succeeded("two"));
        daemon
    })
    .await;
    let m = scrape(&daemon).await;
    assert_eq!(m.expect(RELOADED, &[]), 1.0);
    assert!(m.expect(RELOADED_AT, &[]) > loaded_at);
    assert_eq!(
        m.expect("balance_amount", &[("account", "two"), ("kind", "normal")]),
        2.0
    );
    daemon.stop_async().await;
}

/// Sends `GET /-/healthy` on a new connection and reads the answer, leaving the connection
/// open (HTTP/1.1 keep-alive).
fn open_keep_alive(daemon: &Daemon) -> TcpStream {
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream
        .write_all(b"GET /-/healthy HTTP/1.1\r\nHost: exporter\r\n\r\n")
        .unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"Healthy\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "connection closed early");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    stream
}

/// The poll hangs with an hour's timeout, so a daemon that waited for it (or for the idle
/// connection's five-minute timeout) would still run after [`PATIENCE`].
async fn stops_despite_a_hung_poll(signal: &'static str) {
    let (sim, server) = simulator(&[("k", "secret-of-k", 1)]).await;
    sim.update("k", |a| a.faults.always(Fault::Hang));
    let dir = TempDir::new("shutdown");
    let path = dir.write(
        "config.yml",
        &format!(
            "global:\n  request_timeout: 1h\n{}",
            config(&[account("hung", &server, "k", "1h")])
        ),
    );
    let file = path.to_str().unwrap().to_owned();
    let daemon = blocking(move || Daemon::spawn(&["--config.file", &file])).await;
    wait_until("the poll reached the simulator", || {
        requests_of(&server, "k") == 1
    })
    .await;
    let (log, exited, idle_closed) = blocking(move || {
        let mut daemon = daemon;
        let mut idle = open_keep_alive(&daemon);
        let sent = Instant::now();
        daemon.signal(signal);
        let status = daemon.wait_exit_within(PATIENCE);
        let exited = status.map(|s| (s, sent.elapsed()));
        // The server closed the idle keep-alive connection rather than leaving it to the OS.
        let mut rest = Vec::new();
        let idle_closed = idle.read_to_end(&mut rest).is_ok_and(|_| rest.is_empty());
        (daemon.stop(), exited, idle_closed)
    })
    .await;
    let (status, took) =
        exited.unwrap_or_else(|| panic!("still running {PATIENCE:?} after SIG{signal}:\n{log}"));
    assert!(status.success(), "{status}\n{log}");
    eprintln!("SIG{signal}: exited {took:?} after the signal");
    assert!(idle_closed, "the idle connection got bytes or an error");
    assert!(log.contains("msg=stopped"), "{log}");
    for noise in ["level=error", "panicked", "poll failed"] {
        assert!(!log.contains(noise), "{noise} in:\n{log}");
    }
}

#[tokio::test]
async fn sigterm_stops_despite_a_hung_poll_and_an_open_connection() {
    stops_despite_a_hung_poll("TERM").await;
}

#[tokio::test]
async fn sigint_stops_despite_a_hung_poll_and_an_open_connection() {
    stops_despite_a_hung_poll("INT").await;
}
