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

/// The one-line description `-h` and `--help` both start with.
const ABOUT: &str = "Prometheus exporter of prepaid balances at payment and messaging providers.";

#[derive(Debug, Parser)]
#[command(
    name = "balance_exporter",
    about = ABOUT,
    long_about = None,
    // `--version` prints the Prometheus layout (version_text), which clap's flag cannot.
    disable_version_flag = true
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

    /// Address to listen on: host:port, [v6]:port, or :port for every interface. Repeat the
    /// flag to listen on several; the web configuration (TLS, authentication) applies to
    /// each.
    #[arg(
        long = "web.listen-address",
        value_name = "ADDR",
        action = clap::ArgAction::Append,
        default_values_t = [format!(":{}", server::DEFAULT_PORT)]
    )]
    pub listen_addresses: Vec<String>,

    /// Web configuration (TLS, basic authentication, headers) in the Prometheus
    /// exporter-toolkit format. Without it, plain HTTP and no authentication.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Connections open at once on the web server, all listen addresses together; one more
    /// is closed as soon as it is accepted, so that idle or abusive clients cannot exhaust
    /// file descriptors.
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

    /// Path under which to expose metrics. A path of the exporter's own pages (`/`, the
    /// status page; `/-/healthy`, `/-/ready`, `/-/reload`) hides that page, with a warning.
    #[arg(
        long = "web.telemetry-path",
        value_name = "PATH",
        default_value = "/metrics"
    )]
    pub telemetry_path: String,

    /// Only log messages with the given severity or above.
    #[arg(
        long = "log.level",
        value_name = "LEVEL",
        value_enum,
        default_value = "info"
    )]
    pub log_level: LogLevel,

    /// Output format of log messages, on stderr: the same keys (time, level, target, msg)
    /// in both.
    #[arg(
        long = "log.format",
        value_name = "FORMAT",
        value_enum,
        default_value = "logfmt"
    )]
    pub log_format: LogFormat,

    /// Poll every account once, print the metrics to stdout, and exit 0 if every account
    /// succeeded with every balance that has a threshold, 1 otherwise.
    #[arg(long, conflicts_with = "config_check")]
    pub once: bool,

    /// Run against the built-in provider simulator: no configuration or credentials needed.
    #[arg(long, conflicts_with_all = ["once", "config_check"])]
    pub demo: bool,

    /// Print the version and the build context, and exit.
    #[arg(long, short = 'V')]
    pub version: bool,
}

/// `--version`, in the layout of Prometheus and its exporters, so that the tools and habits
/// that read theirs read this one.
pub fn version_text() -> String {
    let features: Vec<&str> = [("demo", cfg!(feature = "demo"))]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
    let features = if features.is_empty() {
        "none".to_owned()
    } else {
        features.join(",")
    };
    format!(
        "balance_exporter, version {version} (branch: {branch}, revision: {revision})\n\
         \x20 build user:       {user}\n\
         \x20 build date:       {date}\n\
         \x20 rustc version:    {rustc}\n\
         \x20 platform:         {platform}\n\
         \x20 features:         {features}\n",
        version = crate::VERSION,
        branch = crate::BRANCH,
        revision = crate::REVISION,
        user = crate::BUILD_USER,
        date = crate::BUILD_DATE,
        rustc = crate::RUSTC_VERSION,
        platform = crate::PLATFORM,
    )
}

pub async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => return command_line_error(&e),
    };
    if args.version {
        print!("{}", version_text());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = logging::init(args.log_level, args.log_format) {
        eprintln!("cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    raise_open_file_limit();
    if let Err(e) = check_telemetry_path(&args.telemetry_path) {
        tracing::error!(path = %args.telemetry_path, error = %e, "invalid --web.telemetry-path");
        return ExitCode::FAILURE;
    }
    let web_config = match &args.web_config_file {
        None => WebConfig::default(),
        Some(path) => match web_config::load(path) {
            Ok(web_config) => web_config,
            Err(e) if args.config_check => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            Err(e) => {
                log_problems("invalid web configuration", &e.file, &e.errors);
                return ExitCode::FAILURE;
            }
        },
    };
    // The daemon's first lines say what runs, as Prometheus' do; the one-shot modes keep
    // stderr for their findings.
    if !args.config_check && !args.once {
        tracing::info!(
            version = crate::VERSION,
            branch = crate::BRANCH,
            revision = crate::REVISION,
            "starting balance_exporter"
        );
        tracing::info!(
            rustc = crate::RUSTC_VERSION,
            platform = crate::PLATFORM,
            user = crate::BUILD_USER,
            date = crate::BUILD_DATE,
            "build context"
        );
    }
    if args.demo {
        return demo(&args, web_config).await;
    }
    let config = match config::load(&args.config_file) {
        Ok(config) => config,
        // --config.check reports to the person (or CI job) that runs it, as promtool does;
        // everywhere else a problem is a log line.
        Err(errors) if args.config_check => {
            eprintln!(
                "{}: invalid configuration:\n{errors}",
                args.config_file.display()
            );
            return ExitCode::FAILURE;
        }
        Err(errors) => {
            let file = args.config_file.display().to_string();
            log_problems("invalid configuration", &file, &errors);
            return ExitCode::FAILURE;
        }
    };
    if args.config_check {
        if let Some(path) = &args.web_config_file {
            println!("{}: web configuration is valid", path.display());
        }
        println!(
            "{}: configuration is valid ({})",
            args.config_file.display(),
            count(config.accounts.len(), "account", "accounts")
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

/// `1 account`, `2 accounts`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Logs every problem of a file that stops the start, one line each (`msg` says which file
/// kind, `error` the problem with its place in the file).
fn log_problems(what: &str, file: &str, errors: &crate::config::ConfigErrors) {
    for error in &errors.0 {
        tracing::error!(file, error = %error, "{what}");
    }
}

/// A command line clap refused. Help goes to stdout as usual; an error is logged in the format
/// the command line asked for (when that much of it can be read), like every other failure.
fn command_line_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let code = ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return code;
    }
    let format = requested_log_format(std::env::args_os().skip(1));
    if logging::init(LogLevel::Error, format).is_err() {
        let _ = e.print();
        return code;
    }
    tracing::error!(
        error = %clap_problem(&e.render().to_string()),
        "invalid command line; see --help"
    );
    code
}

/// The problem in clap's rendered error, on one line: its message and tips, without the usage
/// summary (which `--help` gives in full).
fn clap_problem(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The `--log.format` of a command line clap could not parse; logfmt when there is none or it
/// is not one.
fn requested_log_format(args: impl Iterator<Item = std::ffi::OsString>) -> LogFormat {
    use clap::ValueEnum;
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let mut format = LogFormat::Logfmt;
    for (i, arg) in args.iter().enumerate() {
        let value = match arg.strip_prefix("--log.format") {
            Some("") => args.get(i + 1).map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(parsed) = value.and_then(|v| LogFormat::from_str(v, false).ok()) {
            format = parsed;
        }
    }
    format
}

/// The exporter's own pages, which a telemetry path equal to theirs hides.
const BUILT_IN_PATHS: [(&str, &str); 4] = [
    ("/", "the status page"),
    ("/-/healthy", "the health check"),
    ("/-/ready", "the readiness check"),
    ("/-/reload", "the reload endpoint"),
];

/// Refuses a telemetry path no request could reach; warns when it hides a built-in page.
fn check_telemetry_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("it must start with /");
    }
    // Requests are routed on the path alone: a query or fragment never matches.
    if path.contains(['?', '#']) || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it must be a plain path, without ?, #, spaces or control characters");
    }
    if let Some((_, page)) = BUILT_IN_PATHS.iter().find(|(p, _)| *p == path) {
        tracing::warn!(
            path,
            hidden = page,
            "--web.telemetry-path is the path of a built-in page, which is no longer served; \
             choose another path (the default is /metrics) to keep it"
        );
    }
    Ok(())
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
                    tracing::error!(
                        account = %a.account,
                        currency = %currency.escape_debug(),
                        kind = %t.kind,
                        "balance MISSING: it has a threshold but is absent from the provider's answer"
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
            tracing::error!(error = %e, "cannot start the HTTP client");
            ExitCode::FAILURE
        }
    }
}

/// The flag stays in a build without the simulators, so that every build takes the same flags.
#[cfg(not(feature = "demo"))]
async fn demo(_: &Args, _: WebConfig) -> ExitCode {
    tracing::error!(
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
            tracing::error!(error = %e, "cannot start the demo's simulators");
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
    // Every address or none: an exporter missing one of its addresses would be scraped on
    // some and not others, which is harder to see than a failed start.
    let mut listeners = Vec::with_capacity(args.listen_addresses.len());
    for (i, address) in args.listen_addresses.iter().enumerate() {
        // Said as such, rather than as the "address in use" its second bind would give. Port
        // 0 (any free port) is no duplicate: each bind gets its own.
        let any_port = address
            .rsplit_once(':')
            .is_some_and(|(_, port)| port == "0");
        if !any_port && args.listen_addresses[..i].contains(address) {
            tracing::error!(address = %address, "--web.listen-address is given twice");
            return ExitCode::FAILURE;
        }
        match server::bind(address).await {
            Ok(listener) => listeners.push(listener),
            Err(e) => {
                tracing::error!(address = %address, error = %e, "cannot listen");
                return ExitCode::FAILURE;
            }
        }
    }
    let scheduler = Scheduler::new(Metrics::new(), Clock::system());
    if let Err(e) = scheduler.apply(config) {
        tracing::error!(error = %e, "cannot start the HTTP client");
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
    let mut addresses = Vec::with_capacity(listeners.len());
    for listener in &listeners {
        match listener.local_addr() {
            Ok(addr) => addresses.push(addr),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the listen address");
                return ExitCode::FAILURE;
            }
        }
    }
    for addr in &addresses {
        tracing::info!(address = %addr, tls = web_config.tls.is_some(), "listening");
    }
    if args.demo
        && let Some(addr) = addresses.first()
    {
        tracing::info!(url = %server::browsable_url(*addr), "demo running: open the status page");
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
    crate::listener::serve(
        listeners,
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_help_text() {
        let command = Args::command();
        command.clone().debug_assert();
        for arg in command.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(
                help.split_whitespace().count() >= 3,
                "--{} has no help text",
                arg.get_long().unwrap_or_default()
            );
        }
    }

    #[test]
    fn listen_address_repeats_and_defaults_to_every_interface() {
        let parse = |args: &[&str]| {
            Args::try_parse_from(std::iter::once("balance_exporter").chain(args.iter().copied()))
                .unwrap()
                .listen_addresses
        };
        assert_eq!(parse(&[]), [format!(":{}", server::DEFAULT_PORT)]);
        assert_eq!(
            parse(&[
                "--web.listen-address",
                "127.0.0.1:9863",
                "--web.listen-address=[::1]:9863"
            ]),
            ["127.0.0.1:9863", "[::1]:9863"]
        );
    }

    #[test]
    fn the_log_format_of_a_command_line_clap_refused() {
        let format = |args: &[&str]| requested_log_format(args.iter().map(Into::into));
        assert_eq!(format(&["--bogus"]), LogFormat::Logfmt);
        assert_eq!(
            format(&["--log.format", "json", "--bogus"]),
            LogFormat::Json
        );
        assert_eq!(format(&["--bogus", "--log.format=json"]), LogFormat::Json);
        assert_eq!(format(&["--log.format=xml"]), LogFormat::Logfmt);
        assert_eq!(format(&["--log.format"]), LogFormat::Logfmt);
        // A value that only looks like the flag is no flag.
        assert_eq!(format(&["--log.formats=json"]), LogFormat::Logfmt);
    }

    #[test]
    fn clap_errors_become_one_line_without_the_usage() {
        let error =
            Args::try_parse_from(["balance_exporter", "--web.listen-adress", "x"]).unwrap_err();
        let problem = clap_problem(&error.render().to_string());
        assert!(!problem.contains('\n'), "{problem}");
        assert!(!problem.contains("Usage"), "{problem}");
        assert!(
            problem.starts_with("unexpected argument '--web.listen-adress'"),
            "{problem}"
        );
        assert!(
            problem.contains("tip: a similar argument exists: '--web.listen-address'"),
            "{problem}"
        );
    }

    #[test]
    fn telemetry_paths_that_no_request_can_reach_are_refused() {
        assert!(check_telemetry_path("/metrics").is_ok());
        assert!(check_telemetry_path("/").is_ok(), "allowed, with a warning");
        for path in ["metrics", "", "/metrics?x=1", "/a#b", "/a b", "/a\n"] {
            assert!(check_telemetry_path(path).is_err(), "{path:?}");
        }
    }

    #[test]
    fn version_text_has_the_prometheus_layout() {
        let text = version_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "balance_exporter, version {} (branch: {}, revision: {})",
                crate::VERSION,
                crate::BRANCH,
                crate::REVISION
            )
        );
        let keys: Vec<&str> = lines[1..]
            .iter()
            .map(|l| l.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            [
                "  build user",
                "  build date",
                "  rustc version",
                "  platform",
                "  features"
            ]
        );
        // The values line up in one column, as Prometheus' do.
        let columns: BTreeSet<usize> = lines[1..]
            .iter()
            .map(|l| l.len() - l.split_once(':').unwrap().1.trim_start().len())
            .collect();
        assert_eq!(columns.len(), 1, "{text}");
    }

    #[test]
    fn plurals() {
        assert_eq!(count(1, "account", "accounts"), "1 account");
        assert_eq!(count(0, "account", "accounts"), "0 accounts");
        assert_eq!(count(2, "account", "accounts"), "2 accounts");
    }
}
