//! Providers over TLS: an account's `ca_file` adds a private CA to the platform's roots for
//! that account's requests; without it, the same server's certificate is refused.

mod common;

use balance_exporter::providers::engagelab::Product;
use balance_exporter::providers::engagelab::sim::{EngageLabSim, SimAccount};
use balance_exporter::sim::{Ledger, SimServer};
use common::tls::TestCa;
use common::{Exporter, TempDir};
use rust_decimal::Decimal;

fn account(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        "
  - name: {name}
    provider: engagelab
    product: sms
    base_url: {base_url}
    dev_key: key-1
    dev_secret: secret-1{extra}"
    )
}

#[tokio::test]
async fn ca_file_trusts_a_private_ca_for_its_account_only() {
    let dir = TempDir::new("provider-tls");
    let ca = TestCa::new("sandbox CA");
    let ca_file = ca.write(&dir, "sandbox-ca.pem");
    let sim = EngageLabSim::new(Product::Sms);
    sim.add_account(
        "key-1",
        SimAccount::new(
            "secret-1",
            Ledger::fixed(Decimal::new(123_456, 4)),
            Ledger::fixed(Decimal::ZERO),
        ),
    );
    let server = SimServer::start_tls(sim.clone(), ca.server().server_config())
        .await
        .unwrap();
    let base_url = server.base_url();
    assert!(base_url.starts_with("https://"), "{base_url}");

    let with_ca = format!("\n    ca_file: {}", ca_file.display());
    let yaml = format!(
        "global:\n  poll_interval: 1h\n  request_timeout: 5s\naccounts:{}{}{}\n",
        account("trusted", &base_url, &with_ca),
        // A second account naming the same CA shares the first one's client.
        account("trusted-too", &base_url, &with_ca),
        account("untrusted", &base_url, ""),
    );
    let mut exporter = Exporter::start(&yaml).await;

    for name in ["trusted", "trusted-too"] {
        let event = exporter.poll(name).await;
        assert!(event.outcome.is_ok(), "{name}: {:?}", event.outcome);
    }
    let refused = exporter.poll("untrusted").await.outcome.unwrap_err();
    assert_eq!(refused.code, "tls", "{refused:?}");

    let m = exporter.scrape().await;
    let balance = |account| {
        m.value(
            "balance_amount",
            &[
                ("account", account),
                ("kind", "normal"),
                ("currency", "USD"),
            ],
        )
    };
    assert_eq!(balance("trusted"), Some(12.3456));
    assert_eq!(balance("untrusted"), None);
    assert_eq!(
        m.expect(
            "balance_api_errors_total",
            &[("account", "untrusted"), ("code", "tls")]
        ),
        1.0,
        "a certificate problem is not retried"
    );
    // Only the accounts that reached it were served.
    assert_eq!(server.request_count(), 2);
}
