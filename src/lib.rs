//! balance_exporter: polls the balance APIs of payment and messaging providers and exposes
//! per-currency balances and provider errors for Prometheus.
//!
//! Data flows one way: [`config`] -> [`scheduler`] (one poller per account, each calling its
//! [`providers`] module) -> [`snapshot`] -> [`metrics`] state -> rendered body -> [`server`].
//!
//! The top-level modules import one another one way only (`tests/module_graph.rs` checks it):
//! leaf types ([`error`], [`fields`], [`snapshot`], [`transport`], money, secrets, the clock)
//! at the bottom; providers above them, reporting through `providers::http::PollObserver`
//! and knowing no metrics or global config; then config, metrics, the scheduler, the web
//! side and the CLI.

pub mod cli;
pub mod clock;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod fields;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod money;
pub mod providers;
pub mod scheduler;
pub mod secret;
pub mod server;
#[cfg(feature = "demo")]
pub mod sim;
pub mod snapshot;
pub mod status_page;
pub mod sync;
pub mod transport;
pub mod web_config;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a git checkout); the rest of the
/// build context (build.rs) is printed by `--version`.
pub const REVISION: &str = env!("BALANCE_EXPORTER_REVISION");
/// The git branch of the build (`HEAD` when detached, `unknown` without git).
pub const BRANCH: &str = env!("BALANCE_EXPORTER_BRANCH");
/// `user@host` that built the binary.
pub const BUILD_USER: &str = env!("BALANCE_EXPORTER_BUILD_USER");
/// When the binary was built, `YYYYMMDD-HH:MM:SS` UTC.
pub const BUILD_DATE: &str = env!("BALANCE_EXPORTER_BUILD_DATE");
/// The compiler, `1.95.0 (59807616e 2026-04-14)`.
pub const RUSTC_VERSION: &str = env!("BALANCE_EXPORTER_RUSTC_VERSION");
/// The target as `os/arch` in Go's names (`linux/amd64`).
pub const PLATFORM: &str = env!("BALANCE_EXPORTER_PLATFORM");
