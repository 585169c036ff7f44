//! `--web.config.file`: the daemon serving over TLS (with and without client certificates),
//! behind basic authentication, with extra headers, and refusing a bad file at startup. Test
//! certificates come from a CA generated in the test.

mod common;

use std::path::Path;

use common::tls::TestCa;
use common::{Daemon, TempDir, run_binary};
use reqwest::header::HeaderMap;

/// The daemon in `--demo` mode with `web_yml` as its web configuration, written to `dir`.
fn start(dir: &TempDir, web_yml: &str) -> Daemon {
    let web = dir.write("web.yml", web_yml);
    Daemon::spawn(&["--demo", "--web.config.file", path_arg(&web)])
}

fn path_arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temp path")
}

/// A client trusting only `ca`.
fn trusting(ca: &TestCa) -> reqwest::ClientBuilder {
    let root = reqwest::Certificate::from_pem(ca.cert_pem.as_bytes()).unwrap();
    reqwest::Client::builder().tls_certs_only([root])
}

async fn get(client: &reqwest::Client, url: &str) -> Result<(u16, HeaderMap, String), String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, headers, body))
}

/// A TLS server certificate for loopback, its files in `dir`, and the CA that signed it.
fn server_certificate(dir: &TempDir) -> TestCa {
    let ca = TestCa::new("test server CA");
    ca.server().write(dir, "server");
    ca
}

const TLS: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

#[tokio::test]
async fn https_serves_metrics_and_refuses_plain_http_and_untrusted_clients() {
    let dir = TempDir::new("web-tls");
    let ca = server_certificate(&dir);
    // Relative file names are read from the web config's directory.
    let daemon = start(&dir, TLS);
    let https = format!("https://{}/metrics", daemon.addr);

    // A client that connects and never says hello must not hold up anyone else.
    let _stalled = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();

    let client = trusting(&ca).build().unwrap();
    let (status, _, body) = get(&client, &https).await.expect("HTTPS scrape");
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE balance_exporter_"), "{body}");

    let plain = get(
        &reqwest::Client::new(),
        &format!("http://{}/metrics", daemon.addr),
    )
    .await;
    assert!(plain.is_err(), "plain HTTP to the TLS port: {plain:?}");

    let other_ca = TestCa::new("someone else");
    let untrusting = trusting(&other_ca).build().unwrap();
    let refused = get(&untrusting, &https).await;
    assert!(
        refused.is_err(),
        "a client not trusting the CA: {refused:?}"
    );

    // The failed handshakes above cost only their own connections.
    assert_eq!(get(&client, &https).await.unwrap().0, 200);

    // TLS 1.2 is accepted by default (min_version TLS12, as in the toolkit).
    let tls12_only = trusting(&ca)
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(get(&tls12_only, &https).await.expect("TLS 1.2").0, 200);
    daemon.stop_async().await;
}

#[tokio::test]
async fn min_version_tls13_refuses_a_tls12_client() {
    let dir = TempDir::new("web-tls13");
    let ca = server_certificate(&dir);
    let daemon = start(&dir, &format!("{TLS}  min_version: TLS13\n"));
    let url = format!("https://{}/-/healthy", daemon.addr);

    let tls12_only = trusting(&ca)
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let refused = get(&tls12_only, &url).await;
    assert!(refused.is_err(), "a TLS 1.2 client: {refused:?}");

    let tls13 = trusting(&ca).build().unwrap();
    assert_eq!(get(&tls13, &url).await.unwrap().0, 200);
    daemon.stop_async().await;
}

#[tokio::test]
async fn required_client_certificates_are_verified_against_client_ca_file() {
    let dir = TempDir::new("web-mtls");
    let ca = server_certificate(&dir);
    let client_ca = TestCa::new("test client CA");
    client_ca.write(&dir, "clients.pem");
    let daemon = start(
        &dir,
        &format!(
            "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients.pem\n"
        ),
    );
    let url = format!("https://{}/metrics", daemon.addr);

    let anonymous = trusting(&ca).build().unwrap();
    let refused = get(&anonymous, &url).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");

    let stranger = TestCa::new("not the client CA").client("mallory");
    let impostor = trusting(&ca).identity(stranger.identity()).build().unwrap();
    let refused = get(&impostor, &url).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );

    let prometheus = client_ca.client("prometheus");
    let known = trusting(&ca)
        .identity(prometheus.identity())
        .build()
        .unwrap();
    assert_eq!(get(&known, &url).await.expect("with a certificate").0, 200);
    daemon.stop_async().await;
}

#[tokio::test]
async fn basic_auth_covers_every_endpoint_and_headers_are_added() {
    let dir = TempDir::new("web-auth");
    let hash = bcrypt::hash("s3cret-pass", 4).unwrap();
    let daemon = start(
        &dir,
        &format!(
            "basic_auth_users:\n  prometheus: {hash}\nhttp_server_config:\n  headers:\n    \
             X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
        ),
    );
    let client = reqwest::Client::new();
    for path in ["/metrics", "/-/healthy", "/"] {
        let url = format!("http://{}{path}", daemon.addr);
        let attempts = [
            ("no credentials", client.get(&url), 401),
            (
                "a wrong password",
                client.get(&url).basic_auth("prometheus", Some("guess")),
                401,
            ),
            (
                "an unknown user",
                client.get(&url).basic_auth("root", Some("s3cret-pass")),
                401,
            ),
            (
                "the right password",
                client
                    .get(&url)
                    .basic_auth("prometheus", Some("s3cret-pass")),
                200,
            ),
        ];
        for (what, request, expected) in attempts {
            let response = request.send().await.unwrap();
            assert_eq!(response.status().as_u16(), expected, "{path} with {what}");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if expected == 401 {
                let challenge = header("www-authenticate").unwrap_or_default();
                assert!(
                    challenge.starts_with("Basic"),
                    "{path} with {what}: {challenge:?}"
                );
            } else {
                assert_eq!(header("www-authenticate"), None);
            }
            assert_eq!(header("x-frame-options").as_deref(), Some("deny"), "{path}");
            assert_eq!(
                header("x-content-type-options").as_deref(),
                Some("nosniff"),
                "{path}"
            );
        }
    }
    let log = daemon.stop_async().await;
    assert!(!log.contains("s3cret-pass"), "the password reached the log");
}

#[test]
fn a_bad_web_config_stops_startup_and_fails_the_check() {
    let dir = TempDir::new("web-bad");
    let web = dir.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS11\n",
    );
    let config = dir.write(
        "config.yml",
        "accounts:\n  - name: sms\n    provider: engagelab\n    product: sms\n    \
         dev_key: k\n    dev_secret: s\n",
    );
    let expected = [
        format!("{}: invalid web configuration", web.display()),
        "tls_server_config.min_version: TLS11 is not supported".to_owned(),
        "tls_server_config.cert_file: cannot read".to_owned(),
    ];

    // The daemon logs each problem as an error line naming the file.
    let (code, _, stderr) = run_binary(&["--demo", "--web.config.file", path_arg(&web)], &[]);
    assert_eq!(code, 1, "{stderr}");
    for e in &expected[1..] {
        assert!(
            stderr.lines().any(|l| l.contains(e.as_str())
                && l.contains("level=error ")
                && l.contains("msg=\"invalid web configuration\"")
                && l.contains(&format!("file={}", web.display()))),
            "missing a log line with {e:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("listening"), "{stderr}");

    let check = [
        "--config.check",
        "--config.file",
        path_arg(&config),
        "--web.config.file",
        path_arg(&web),
    ];
    let (code, _, stderr) = run_binary(&check, &[]);
    assert_eq!(code, 1, "{stderr}");
    for e in &expected {
        assert!(stderr.contains(e.as_str()), "missing {e:?} in:\n{stderr}");
    }

    let ca = TestCa::new("check");
    ca.server().write(&dir, "server");
    std::fs::write(&web, TLS).unwrap();
    let (code, stdout, stderr) = run_binary(&check, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("web configuration is valid"), "{stdout}");
}

#[tokio::test]
async fn require_any_client_cert_takes_any_certificate_but_needs_one() {
    let dir = TempDir::new("web-anycert");
    let ca = server_certificate(&dir);
    let daemon = start(
        &dir,
        &format!("{TLS}  client_auth_type: RequireAnyClientCert\n"),
    );
    let url = format!("https://{}/metrics", daemon.addr);

    let anonymous = trusting(&ca).build().unwrap();
    let refused = get(&anonymous, &url).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");

    let anyone = TestCa::new("any CA at all").client("anyone");
    let client = trusting(&ca).identity(anyone.identity()).build().unwrap();
    assert_eq!(get(&client, &url).await.expect("any certificate").0, 200);
    daemon.stop_async().await;
}

#[tokio::test]
async fn a_flood_of_wrong_passwords_gets_429_and_never_holds_up_a_cached_password() {
    let dir = TempDir::new("web-auth-flood");
    // Costly enough that the admitted guesses are still being hashed when the flood is refused.
    let hash = bcrypt::hash("s3cret-pass", 8).unwrap();
    let daemon = start(&dir, &format!("basic_auth_users:\n  prometheus: {hash}\n"));
    let url = format!("http://{}/metrics", daemon.addr);
    let client = reqwest::Client::new();
    let scrape = || {
        client
            .get(&url)
            .basic_auth("prometheus", Some("s3cret-pass"))
    };
    assert_eq!(scrape().send().await.unwrap().status().as_u16(), 200);

    const FLOOD: usize = 40;
    let (done, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..FLOOD {
        let request = client
            .get(&url)
            .basic_auth("prometheus", Some(format!("guess{i}")));
        let done = done.clone();
        tokio::spawn(async move {
            let status = request.send().await.map(|r| r.status().as_u16());
            let _ = done.send(status.map_err(|e| e.to_string()));
        });
    }
    drop(done);
    let mut statuses = Vec::new();
    // A first 429 means every admission is taken: those guesses are queued at bcrypt now.
    while !statuses.contains(&429) {
        let status = tokio::time::timeout(common::PATIENCE, outcomes.recv())
            .await
            .expect("the flood is answered")
            .unwrap_or_else(|| panic!("the whole flood was answered without a 429: {statuses:?}"))
            .expect("a flood request");
        statuses.push(status);
    }
    assert_eq!(scrape().send().await.unwrap().status().as_u16(), 200);
    while let Ok(status) = outcomes.try_recv() {
        statuses.push(status.expect("a flood request"));
    }
    assert!(
        statuses.len() < FLOOD,
        "the cached password was answered while guesses were still being hashed"
    );
    while let Some(status) = outcomes.recv().await {
        statuses.push(status.expect("a flood request"));
    }
    assert_eq!(statuses.len(), FLOOD);
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "a guess is refused or shed, never let in: {statuses:?}"
    );
    daemon.stop_async().await;
}
