//! The binary in a hardened deployment: outbound requests through `HTTP_PROXY` (and around it
//! with `NO_PROXY`), and a warning for a configuration file with inline secrets that other
//! users can read.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{EngageLabSim, SimAccount};
use balance_exporter::sim::{Ledger, SimServer};
use common::{Daemon, TempDir, poll_succeeded};
use rust_decimal::Decimal;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

async fn simulator() -> (Arc<EngageLabSim>, SimServer) {
    let sim = EngageLabSim::new(Product::Sms);
    sim.add_account(
        "k",
        SimAccount::new(
            "s3cret-value",
            Ledger::fixed(Decimal::from(42)),
            Ledger::fixed(Decimal::ZERO),
        ),
    );
    let server = sim.start().await.unwrap();
    (sim, server)
}

fn account(name: &str, base_url: &str) -> String {
    format!(
        "\n  - {{name: {name}, provider: engagelab, product: sms, base_url: '{base_url}', dev_key: k, dev_secret: s3cret-value, poll_interval: 1h}}"
    )
}

/// A forward proxy for `http://` targets, as small as it gets: it reads one request in
/// absolute form (`GET http://host/path HTTP/1.1`), records its target, and sends it in origin
/// form to `upstream` whatever the host, one request per connection.
struct Proxy {
    addr: SocketAddr,
    targets: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let targets: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = targets.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, seen.clone()));
            }
        });
        Proxy {
            addr,
            targets,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, seen: Arc<Mutex<Vec<String>>>) {
    let mut client = BufReader::new(client);
    let mut request_line = String::new();
    if client.read_line(&mut request_line).await.is_err() {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    seen.lock().unwrap().push(target.to_owned());
    let path = target
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let mut head = format!("{method} {path} {version}\r\n");
    let mut content_length = 0;
    loop {
        let mut line = String::new();
        if client.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("proxy-connection")
            {
                continue;
            }
        }
        head.push_str(&line);
    }
    head.push_str("Connection: close\r\n\r\n");
    let mut body = vec![0; content_length];
    if client.read_exact(&mut body).await.is_err() {
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if server.write_all(head.as_bytes()).await.is_err() || server.write_all(&body).await.is_err() {
        return;
    }
    let mut client = client.into_inner();
    let _ = tokio::io::copy(&mut server, &mut client).await;
    let _ = client.shutdown().await;
}

/// Starts the binary on `accounts` with `env`, and waits for each account's first poll to
/// succeed.
async fn daemon_polling(
    dir: &TempDir,
    accounts: &[String],
    env: Vec<(&'static str, String)>,
) -> Daemon {
    let path = dir.write("config.yml", &format!("accounts:{}\n", accounts.concat()));
    let file = path.to_str().unwrap().to_owned();
    let names: Vec<String> = accounts
        .iter()
        .map(|a| {
            a.split("name: ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut daemon =
            Daemon::spawn_with_env(&["--config.file", &file, "--log.level", "debug"], &env);
        let waits: Vec<_> = names.iter().map(|n| poll_succeeded(n)).collect();
        let waits: Vec<&dyn Fn(&str) -> bool> = waits.iter().map(|w| w as _).collect();
        daemon.wait_for_each(&waits);
        daemon
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn http_proxy_carries_every_request_and_no_proxy_goes_around_it() {
    let (_sim, server) = simulator().await;
    let proxy = Proxy::start(server.addr()).await;
    // A host that resolves nowhere: a poll can only succeed through the proxy.
    let nowhere = "http://engagelab.invalid";
    let accounts = [
        account("via-name", nowhere),
        account("via-ip", &server.base_url()),
    ];
    let dir = TempDir::new("proxy");

    // Loopback is not exempt by itself: both accounts go through the proxy.
    let daemon = daemon_polling(
        &dir,
        &accounts,
        vec![("HTTP_PROXY", proxy.url()), ("NO_PROXY", String::new())],
    )
    .await;
    let mut targets = proxy.targets();
    targets.sort();
    assert_eq!(
        targets,
        [
            "http://127.0.0.1:PORT/v1/balance".replace("PORT", &server.addr().port().to_string()),
            "http://engagelab.invalid/v1/balance".to_owned(),
        ]
    );
    assert_eq!(server.request_count(), 2);
    daemon.stop_async().await;

    // NO_PROXY names the simulator's address: that account goes straight to it.
    let daemon = daemon_polling(
        &dir,
        &accounts,
        vec![
            ("HTTP_PROXY", proxy.url()),
            ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
        ],
    )
    .await;
    assert_eq!(
        proxy.targets()[2..],
        ["http://engagelab.invalid/v1/balance".to_owned()]
    );
    assert_eq!(
        server.request_count(),
        4,
        "both polled, one of them directly"
    );
    daemon.stop_async().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_config_with_inline_secrets_readable_by_others_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt as _;

    let (_sim, server) = simulator().await;
    let dir = TempDir::new("mode");
    let warned = |log: &str| log.contains("holds secrets inline and other users can read it");
    let start = |mode: u32, accounts: String| {
        let path = dir.write("config.yml", &format!("accounts:{accounts}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let file = path.to_str().unwrap().to_owned();
        tokio::task::spawn_blocking(move || {
            let daemon = Daemon::spawn(&["--config.file", &file]);
            (daemon.log_text(), file)
        })
    };

    let inline = account("a", &server.base_url());
    let (log, file) = start(0o644, inline.clone()).await.unwrap();
    let line = log
        .lines()
        .find(|l| warned(l))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(line.contains("level=warn"), "{line}");
    assert!(line.contains(&format!("file={file}")), "{line}");
    assert!(line.contains("mode=0644"), "{line}");
    assert!(line.contains("chmod 600"), "{line}");
    assert!(
        line.contains("first=\"accounts[0] (a).dev_secret\""),
        "{line}"
    );
    assert!(!line.contains("s3cret-value"), "{line}");

    let (log, _) = start(0o600, inline).await.unwrap();
    assert!(!warned(&log), "{log}");

    // Secrets from a file: nothing inline to protect here.
    dir.write("secret", "s3cret-value\n");
    let from_file = account("a", &server.base_url())
        .replace("dev_secret: s3cret-value", "dev_secret_file: secret");
    let (log, _) = start(0o644, from_file).await.unwrap();
    assert!(!warned(&log), "{log}");
}
