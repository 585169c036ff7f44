//! The configuration file: `global` settings and the list of `accounts`.
//!
//! Loading validates everything up front (secrets readable, keys parse, URLs valid) and reports
//! every problem with its path, so a config that loads is one the pollers can run with.
//! Provider-specific keys are read by each provider's `Config::read` (see `providers`).

mod fields;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format as _, Toml, Yaml};
use figment::value::{Dict, Value};
use rust_decimal::Decimal;

pub use fields::{ConfigError, ConfigErrors, Fields, LoadedSecret, Problems};

use crate::providers::{CurrencyScope, ProviderConfig};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct Config {
    pub global: Global,
    pub accounts: Vec<AccountConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// Default interval between two polls of an account.
    pub poll_interval: Duration,
    /// Timeout of one HTTP request to a provider.
    pub request_timeout: Duration,
    /// Requests in flight at once, across all accounts.
    pub max_concurrent_requests: usize,
    /// Balances not refreshed for this long leave `/metrics`.
    pub stale_after: Duration,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            poll_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 32,
            stale_after: Duration::from_secs(30 * 60),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AccountConfig {
    pub name: String,
    pub poll_interval: Duration,
    pub thresholds: Vec<Threshold>,
    pub provider: ProviderConfig,
    /// Every secret of this account, so that text coming back from the provider can be
    /// scrubbed of them before it is logged or shown.
    pub secrets: Vec<Secret>,
}

/// A low-balance threshold of one kind and currency of an account.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub kind: &'static str,
    /// `None` only for accounts with a single currency learnt from the wire (EngageLab OTP):
    /// the threshold then applies to whatever currency the account reports.
    pub currency: Option<String>,
    pub warning: Option<Decimal>,
    pub critical: Option<Decimal>,
}

/// How the file is read, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
}

impl Format {
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "yml" | "yaml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

/// Reads and validates the configuration file at `path`. Relative secret files are resolved
/// against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let single = |message: String| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message,
        }])
    };
    let format = Format::from_path(path).ok_or_else(|| {
        single(format!(
            "{}: unknown file extension: use .yml, .yaml or .toml",
            path.display()
        ))
    })?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| single(format!("cannot read {}: {e}", path.display())))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, format, base_dir)
}

/// Parses and validates configuration text.
pub fn parse(text: &str, format: Format, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let figment = match format {
        Format::Yaml => Figment::from(Yaml::string(text)),
        Format::Toml => Figment::from(Toml::string(text)),
    };
    let dict: Dict = figment.extract().map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot parse the file: {}", e.kind),
        }])
    })?;

    let mut problems = Problems::new(base_dir);
    let mut top = Fields::new("", Value::from(dict), &mut problems);
    let global = top.section("global", read_global);
    let mut names = HashSet::new();
    let accounts = top
        .list("accounts", |path, value, problems| {
            let account = read_account(&path, value, &global, problems)?;
            if !names.insert(account.name.clone()) {
                problems.push(
                    format!("{path}.name"),
                    format!("{:?} is used by an earlier account", account.name),
                );
            }
            Some(account)
        })
        .unwrap_or_default();
    top.finish();

    if accounts.is_empty() && problems.is_empty() {
        problems.push("accounts", "at least one account is required");
    }
    problems.into_result(Config { global, accounts })
}

fn read_global(fields: &mut Fields<'_>) -> Global {
    let defaults = Global::default();
    let max_concurrent_requests = fields
        .optional::<usize>("max_concurrent_requests")
        .unwrap_or(defaults.max_concurrent_requests);
    if max_concurrent_requests == 0 {
        fields.error("max_concurrent_requests", "must be at least 1");
    }
    let global = Global {
        poll_interval: fields
            .duration("poll_interval")
            .unwrap_or(defaults.poll_interval),
        request_timeout: fields
            .duration("request_timeout")
            .unwrap_or(defaults.request_timeout),
        max_concurrent_requests,
        stale_after: fields
            .duration("stale_after")
            .unwrap_or(defaults.stale_after),
    };
    check_interval(fields, "poll_interval", global.poll_interval);
    global
}

fn check_interval(fields: &mut Fields<'_>, key: &str, interval: Duration) {
    if interval < Duration::from_secs(1) {
        fields.error(key, "must be at least 1s");
    }
}

fn read_account(
    path: &str,
    value: Value,
    global: &Global,
    problems: &mut Problems,
) -> Option<AccountConfig> {
    let mut fields = Fields::new(path, value, problems);
    let name = fields.required_string("name");
    if let Some(name) = &name
        && !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        fields.error(
            "name",
            format!("{name:?} may only contain A-Z a-z 0-9 _ . -"),
        );
    }
    let poll_interval = fields.duration("poll_interval");
    if let Some(interval) = poll_interval {
        check_interval(&mut fields, "poll_interval", interval);
    }
    let provider_name: Option<String> = fields.required("provider");
    let provider = provider_name.and_then(|p| ProviderConfig::read(&p, &mut fields));
    let thresholds = match &provider {
        Some(provider) => read_thresholds(&mut fields, provider),
        // Without a valid provider the kinds and currencies are unknown: report only the
        // provider problem, and leave the thresholds unread.
        None => {
            fields.optional::<Value>("thresholds");
            Vec::new()
        }
    };
    let secrets = fields.finish();
    Some(AccountConfig {
        name: name?,
        poll_interval: poll_interval.unwrap_or(global.poll_interval),
        thresholds,
        provider: provider?,
        secrets,
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    kind: Option<String>,
    currency: Option<String>,
    #[serde(default, deserialize_with = "decimal")]
    warning: Option<Decimal>,
    #[serde(default, deserialize_with = "decimal")]
    critical: Option<Decimal>,
}

fn read_thresholds(fields: &mut Fields<'_>, provider: &ProviderConfig) -> Vec<Threshold> {
    let provider = provider.settings();
    let path = fields.path_of("thresholds");
    let raw: Vec<RawThreshold> = fields.optional("thresholds").unwrap_or_default();
    let mut out: Vec<Threshold> = Vec::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let at = |key: &str| format!("{path}[{i}].{key}");
        let kind = match raw.kind {
            None => Some(provider.default_threshold_kind()),
            Some(kind) => match provider.kinds().iter().find(|k| **k == kind) {
                Some(k) => Some(*k),
                None => {
                    fields.error_at(
                        &at("kind"),
                        format!(
                            "{kind:?} is not a balance kind of this provider (one of: {})",
                            provider.kinds().join(", ")
                        ),
                    );
                    None
                }
            },
        };
        let currency = match (raw.currency, provider.currency_scope()) {
            (Some(c), scope) => {
                let c = c.trim().to_ascii_uppercase();
                if !is_currency_code(&c) {
                    fields.error_at(&at("currency"), format!("{c:?} is not a currency code"));
                    None
                } else if let CurrencyScope::Fixed(list) = &scope {
                    if list.contains(&c) {
                        Some(Some(c))
                    } else {
                        fields.error_at(
                            &at("currency"),
                            format!(
                                "{c} is not among the account's currencies ({})",
                                list.join(", ")
                            ),
                        );
                        None
                    }
                } else {
                    Some(Some(c))
                }
            }
            (None, CurrencyScope::Fixed(list)) if list.len() == 1 => Some(Some(list[0].clone())),
            (None, CurrencyScope::SingleFromProvider) => Some(None),
            (None, _) => {
                fields.error_at(
                    &at("currency"),
                    "required: this account has more than one currency",
                );
                None
            }
        };
        if raw.warning.is_none() && raw.critical.is_none() {
            fields.error_at(&format!("{path}[{i}]"), "give warning, critical or both");
        }
        if let (Some(w), Some(c)) = (raw.warning, raw.critical)
            && w < c
        {
            fields.error_at(
                &at("warning"),
                format!("{w} is below the critical threshold {c}"),
            );
        }
        let (Some(kind), Some(currency)) = (kind, currency) else {
            continue;
        };
        if out.iter().any(|t| t.kind == kind && t.currency == currency) {
            fields.error_at(
                &format!("{path}[{i}]"),
                "duplicate threshold for the same kind and currency",
            );
            continue;
        }
        out.push(Threshold {
            kind,
            currency,
            warning: raw.warning,
            critical: raw.critical,
        });
    }
    out
}

/// Three ASCII letters, as ISO 4217 codes are.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase())
}

/// A number in the config (`100`, `99.5` or `"99.50"`) as a decimal.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum ConfigNumber {
    Int(i64),
    Float(f64),
    Text(String),
}

fn decimal<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    use serde::Deserialize;
    let parsed = match ConfigNumber::deserialize(d)? {
        ConfigNumber::Int(i) => Ok(Decimal::from(i)),
        // YAML has already turned the text into a float; its shortest form is what was written.
        ConfigNumber::Float(f) => f.to_string().parse::<Decimal>(),
        ConfigNumber::Text(t) => t.trim().parse::<Decimal>(),
    };
    parsed
        .map(Some)
        .map_err(|_| serde::de::Error::custom("expected a number such as 100 or 99.5"))
}
