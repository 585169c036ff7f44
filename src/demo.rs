//! `--demo`: every provider's simulator on loopback and a configuration pointing at it, so the
//! exporter can be tried without credentials. Balances drain and errors happen, so the status
//! page, `/metrics` and the alert rules have something to show.

use std::path::Path;

use futures_util::future::BoxFuture;

use crate::config::{self, Config, Format};
use crate::sim::{DemoPart, SimServer};

/// One provider's part of the demo: its name and how to start its simulators.
struct Simulator {
    name: &'static str,
    start: fn() -> BoxFuture<'static, std::io::Result<DemoPart>>,
}

/// The table of simulators, from the providers' one list (`providers::with_providers!`): every
/// provider module has `sim::demo()`, and `http_json::sim::preset_demo` serves each preset.
macro_rules! simulators {
    ($($module:ident => $variant:ident),+ ; presets: $($preset:ident),* $(,)?) => {
        const SIMULATORS: &[Simulator] = &[$(Simulator {
            name: crate::providers::$module::NAME,
            start: || Box::pin(crate::providers::$module::sim::demo()),
        },)+ $(Simulator {
            name: crate::providers::http_json::presets::$preset.name,
            start: || Box::pin(crate::providers::http_json::sim::preset_demo(
                &crate::providers::http_json::presets::$preset,
            )),
        },)*];
    };
}
crate::providers::with_providers!(simulators);

/// Polls often, so that something visibly happens within minutes.
const DEMO_GLOBAL: &str = "global:
  poll_interval: 5s
  request_timeout: 2s
  stale_after: 1m
accounts:";

/// The running simulators (they stop when this is dropped) and the configuration to poll them.
pub struct Demo {
    pub config: Config,
    _servers: Vec<SimServer>,
}

pub async fn start() -> Result<Demo, String> {
    let mut yaml = DEMO_GLOBAL.to_owned();
    let mut servers = Vec::new();
    for simulator in SIMULATORS {
        let part = (simulator.start)()
            .await
            .map_err(|e| format!("cannot start the {} simulator: {e}", simulator.name))?;
        yaml.push_str(&part.accounts_yaml);
        servers.extend(part.servers);
    }
    let config = config::parse(&yaml, Format::Yaml, Path::new("."))
        .map_err(|e| format!("the demo configuration is invalid (a bug):\n{e}"))?;
    Ok(Demo {
        config,
        _servers: servers,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::providers::PROVIDERS;

    /// Every registered provider shows in the demo, under the name it is registered with.
    #[tokio::test]
    async fn the_demo_polls_every_registered_provider() {
        let demo = super::start().await.unwrap();
        let in_demo: BTreeSet<&str> = demo
            .config
            .accounts
            .iter()
            .map(|account| account.provider.settings().provider())
            .collect();
        let registered: BTreeSet<&str> = PROVIDERS.iter().map(|p| p.name).collect();
        assert_eq!(in_demo, registered);
    }
}
