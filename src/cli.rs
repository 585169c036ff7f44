//! Command-line flags (Prometheus style) and the four ways to run: the daemon, `--once`,
//! `--config.check` and `--demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::logging::{self, LogFormat, LogLevel};
use crate::metrics::Metrics;
use crate::scheduler::Scheduler;
use crate::server::{self, Reload, Web};
use crate::web_config::{self, WebConfig};

#[derive(Debug, Parser)]
#[command(
    name = "balance_exporter",
    version = crate::VERSION_LONG,
    about = "Prometheus exporter of prepaid balances at payment and messaging providers",
    long_about = "Polls the balance APIs of EngageLab, PayBy, UQPay and Onerway accounts in the \
                  background and exposes balances and provider errors on /metrics."
)]
pub struct Args {
    /// Configuration file (.yml/.yaml read as YAML, .toml as TOML).
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "balance_exporter.yml"
    )]
    pub config_file: PathBuf,

    /// Load and validate the configuration (secrets, keys, URLs), print every problem, and
    /// exit 0 if it is valid, 1 if not. Polls nothing.
    #[arg(long = "config.check")]
    pub config_check: bool,

    /// Address to listen on: host:port, or :port for every interface.
    #[arg(long = "web.listen-address", value_name = "ADDR", default_value_t = format!(":{}", server::DEFAULT_PORT))]
    pub listen_address: String,

    /// Web configuration (TLS, basic authentication, headers) in the Prometheus
    /// exporter-toolkit format. Without it, plain HTTP and no authentication.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Connections open at once on the web server; one more is closed as soon as it is
    /// accepted, so that idle or abusive clients cannot exhaust file descriptors.
    #[arg(
        long = "web.max-connections",
        value_name = "N",
        default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_connections: u32,

    /// Enable the lifecycle endpoint: `POST /-/reload` (and PUT) reloads the configuration.
    /// SIGHUP reloads it either way.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,

    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    #[arg(long = "log.level", value_enum, default_value = "info")]
    pub log_level: LogLevel,

    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,

    /// Poll every account once, print the metrics to stdout, and exit 0 if every account
    /// succeeded with every balance that has a threshold, 1 otherwise.
    #[arg(long, conflicts_with = "config_check")]
    pub once: bool,

    /// Run against the built-in provider simulator: no configuration or credentials needed.
    #[arg(long, conflicts_with_all = ["once", "config_check"])]
    pub demo: bool,
}

pub async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = logging::init(args.log_level, args.log_format) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    raise_open_file_limit();
    if !args.telemetry_path.starts_with('/') {
        eprintln!("--web.telemetry-path must start with /");
        return ExitCode::FAILURE;
    }
    let web_config = match &args.web_config_file {
        None => WebConfig::default(),
        Some(path) => match web_config::load(path) {
            Ok(web_config) => web_config,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        },
    };
    if args.demo {
        return demo(&args, web_config).await;
    }
    let config = match config::load(&args.config_file) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "{}: invalid configuration:\n{errors}",
                args.config_file.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if args.config_check {
        if let Some(path) = &args.web_config_file {
            println!("{}: web configuration is valid", path.display());
        }
        let accounts = config.accounts.len();
        println!(
            "{}: configuration is valid ({accounts} account{})",
            args.config_file.display(),
            if accounts == 1 { "" } else { "s" }
        );
        return ExitCode::SUCCESS;
    }
    if args.once {
        return once(&config).await;
    }
    let path = args.config_file.clone();
    let reload = move |scheduler: &Scheduler| -> Result<(), String> {
        let result = config::load(&path)
            .map_err(|e| e.to_string())
            .and_then(|config| scheduler.apply(&config).map_err(|e| e.to_string()));
        match &result {
            Ok(_) => scheduler.metrics().config_loaded(true),
            Err(e) => scheduler.metrics().config_load_failed(e),
        }
        match &result {
            Ok(applied) => tracing::info!(
                file = %path.display(),
                added = applied.added,
                changed = applied.changed,
                removed = applied.removed,
                unchanged = applied.unchanged,
                "configuration reloaded"
            ),
            Err(e) => tracing::error!(
                file = %path.display(),
                error = %e,
                "reload failed; the running configuration stays"
            ),
        }
        result.map(|_| ())
    };
    tracing::info!(file = %args.config_file.display(), accounts = config.accounts.len(), "configuration loaded");
    run(&args, &config, Some(Arc::new(reload)), web_config).await
}

async fn once(config: &Config) -> ExitCode {
    let scheduler = Scheduler::new(Metrics::new(), Clock::system());
    scheduler.metrics().config_loaded(true);
    match scheduler.poll_once(config).await {
        Ok(all_ok) => {
            print!("{}", String::from_utf8_lossy(&scheduler.metrics().body()));
            // A poll can succeed and still lack a balance someone set a threshold on: then no
            // low-balance alert could fire for it, which is a failure too.
            let state = scheduler.metrics().snapshot_state();
            let now = tokio::time::Instant::now();
            let mut missing = 0;
            for a in state.accounts.values() {
                for (t, currency) in a.missing_balances(state.stale_after, now) {
                    missing += 1;
                    eprintln!(
                        "account {}: balance MISSING: {} ({}) has a threshold but is absent from the provider's answer",
                        a.account,
                        currency.escape_debug(),
                        t.kind
                    );
                }
            }
            if all_ok && missing == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cannot start the HTTP client: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The flag stays in a build without the simulators, so that every build takes the same flags.
#[cfg(not(feature = "demo"))]
async fn demo(_: &Args, _: WebConfig) -> ExitCode {
    eprintln!(
        "--demo: this build has no demo: it was built without the `demo` feature \
         (cargo build --no-default-features); build with the default features to run it"
    );
    ExitCode::FAILURE
}

#[cfg(feature = "demo")]
async fn demo(args: &Args, web_config: WebConfig) -> ExitCode {
    let demo = match crate::demo::start().await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        accounts = demo.config.accounts.len(),
        "demo: simulated providers started on loopback"
    );
    run(args, &demo.config, None, web_config).await
}

type ReloadWith = Arc<dyn Fn(&Scheduler) -> Result<(), String> + Send + Sync>;

/// The daemon: pollers, web server, signals.
async fn run(
    args: &Args,
    config: &Config,
    reload: Option<ReloadWith>,
    web_config: WebConfig,
) -> ExitCode {
    let listener = match server::bind(&args.listen_address).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {}: {e}", args.listen_address);
            return ExitCode::FAILURE;
        }
    };
    let scheduler = Scheduler::new(Metrics::new(), Clock::system());
    if let Err(e) = scheduler.apply(config) {
        eprintln!("cannot start the HTTP client: {e}");
        return ExitCode::FAILURE;
    }
    // The start-up load counts as the first (as in Prometheus), the demo's included.
    scheduler.metrics().config_loaded(true);
    let reload: Option<Reload> = reload.map(|reload| {
        let scheduler = scheduler.clone();
        Arc::new(move || reload(&scheduler)) as Reload
    });
    let web = Arc::new(Web {
        scheduler: scheduler.clone(),
        telemetry_path: args.telemetry_path.clone(),
        reload: reload.clone(),
        lifecycle: args.enable_lifecycle,
    });
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("cannot read the listen address: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        address = %addr,
        version = crate::VERSION,
        revision = crate::REVISION,
        tls = web_config.tls.is_some(),
        "listening"
    );
    if args.demo {
        tracing::info!(url = %server::browsable_url(addr), "demo running: open the status page");
    }
    if let Some(reload) = reload {
        tokio::spawn(reload_on_sighup(reload));
    }
    let shutdown = {
        let scheduler = scheduler.clone();
        async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            // Polls in flight are dropped where they are: nothing of theirs is recorded.
            scheduler.stop();
        }
    };
    let max_connections = args.max_connections as usize;
    if let Some(files) = open_file_limit()
        && files < (max_connections as u64).saturating_add(FILE_HEADROOM)
    {
        tracing::warn!(
            open_file_limit = files,
            max_connections,
            "the open-file limit leaves little room above --web.max-connections: raise it \
             (LimitNOFILE=, ulimit -n) or lower --web.max-connections"
        );
    }
    let handler = web_config.wrap(server::handler(web));
    crate::listener::accept_loop_limited(
        listener,
        web_config.tls.clone(),
        handler,
        crate::listener::Limits::exporter(max_connections),
        shutdown,
    )
    .await;
    scheduler.stop();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Files the process needs open besides its clients' connections: the listener, logs, the
/// configuration, outbound connections to the providers.
const FILE_HEADROOM: u64 = 64;

/// Raises the soft limit on open files to the hard limit, as the Go runtime does for every Go
/// exporter: the soft limit systemd and most shells start with (1,024) is a remnant of
/// select(2), which nothing here uses.
#[cfg(unix)]
fn raise_open_file_limit() {
    let Some(limit) = read_open_file_limit() else {
        return;
    };
    if limit.rlim_cur >= limit.rlim_max {
        tracing::debug!(
            limit = limit.rlim_cur,
            "the open-file limit is already at its hard limit"
        );
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        tracing::debug!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "raised the soft open-file limit to the hard limit"
        );
    } else {
        tracing::debug!(
            limit = limit.rlim_cur,
            hard_limit = limit.rlim_max,
            error = %std::io::Error::last_os_error(),
            "cannot raise the soft open-file limit; it stays"
        );
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit() {}

/// The soft limit on open files now in force, if there is one.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        read_open_file_limit()
            .map(|limit| limit.rlim_cur)
            .filter(|soft| *soft != libc::RLIM_INFINITY)
            // rlim_t is u64 on Linux, not everywhere.
            .map(
                #[allow(clippy::unnecessary_cast)]
                |soft| soft as u64,
            )
    }
    #[cfg(not(unix))]
    None
}

#[cfg(unix)]
fn read_open_file_limit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        Some(limit)
    } else {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot read the open-file limit");
        None
    }
}

async fn reload_on_sighup(reload: Reload) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            let reload = reload.clone();
            // The outcome is logged by the reload itself.
            let _ = tokio::task::spawn_blocking(move || reload()).await;
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
