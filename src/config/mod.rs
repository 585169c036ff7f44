//! The configuration file: `global` settings and the list of `accounts`.
//!
//! Loading validates everything up front (secrets readable, keys parse, URLs valid) and reports
//! every problem with its path, so a config that loads is one the pollers can run with.
//! Provider-specific keys are read by each provider's `Config::read` (see `providers`).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use figment::providers::{Format as _, Toml, Yaml};
use figment::value::{Dict, Value};
use rust_decimal::Decimal;
use rustls::pki_types::CertificateDer;

pub use crate::fields::{
    ConfigError, ConfigErrors, Fields, LoadedSecret, Problems, closest, is_currency_code,
};

use crate::providers::http::HttpSettings;
use crate::providers::{CurrencyScope, PROVIDERS, ProviderConfig, ProviderSettings};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct Config {
    pub global: Global,
    pub accounts: Vec<AccountConfig>,
    /// Paths of the secrets written in the file itself (not `_file` or `_env`).
    pub inline_secrets: Vec<String>,
}

impl Config {
    /// What the shared HTTP client is built from: the global request settings and which
    /// accounts trust which extra CAs.
    pub fn http_settings(&self) -> HttpSettings {
        HttpSettings {
            request_timeout: self.global.request_timeout,
            max_concurrent_requests: self.global.max_concurrent_requests,
            extra_roots: self
                .accounts
                .iter()
                .filter(|a| !a.ca_certificates.is_empty())
                .map(|a| (a.name.clone(), a.ca_certificates.clone()))
                .collect(),
        }
    }
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
    /// Default cap on the currencies one account may report: a provider listing more fails
    /// the poll (`too_many_currencies`) instead of creating unbounded series.
    pub max_currencies: usize,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            poll_interval: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_concurrent_requests: 32,
            stale_after: Duration::from_secs(30 * 60),
            max_currencies: 100,
        }
    }
}

/// Compared field by field on reload, secrets included (by value, never shown).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountConfig {
    pub name: String,
    pub poll_interval: Duration,
    /// At most this many currencies per poll (`max_currencies`, else the global one).
    pub max_currencies: usize,
    pub thresholds: Vec<Threshold>,
    pub provider: ProviderConfig,
    /// Every secret of this account, and those its provider derives from them
    /// ([`ProviderSettings::derived_secrets`]), so that text coming back from the provider can
    /// be scrubbed of them before it is logged, shown or made a label.
    pub secrets: Vec<Secret>,
    /// CAs from `ca_file`, trusted for this account's requests besides the platform's roots.
    pub ca_certificates: Vec<CertificateDer<'static>>,
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        // Where it was looked for, when the path given is relative.
        let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            ": point --config.file at your configuration file, or try --demo, which needs none"
        } else {
            ""
        };
        single(format!("cannot read {}: {e}{hint}", full.display()))
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let config = parse(&text, format, base_dir)?;
    warn_if_secrets_exposed(path, &config.inline_secrets);
    Ok(config)
}

/// Warns when a file holding secrets inline can be read by users other than its owner.
fn warn_if_secrets_exposed(path: &Path, inline_secrets: &[String]) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let Some(first) = inline_secrets.first() else {
            return;
        };
        let Ok(metadata) = std::fs::metadata(path) else {
            return;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = %format!("{mode:04o}"),
                secrets = inline_secrets.len(),
                first = %first,
                "the configuration file holds secrets inline and other users can read it: run chmod 600 on it, or give the secrets as <key>_file or <key>_env"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, inline_secrets);
}

/// Parses and validates configuration text.
pub fn parse(text: &str, format: Format, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let dict = parse_mapping(text, format)?;
    let mut problems = Problems::new(base_dir);
    let mut top = Fields::new("", Value::from(dict), &mut problems);
    let global = top.section("global", read_global);
    let mut names = HashSet::new();
    let accounts = top
        .list("accounts", |path, value, problems| {
            read_account(&path, value, &global, &mut names, problems)
        })
        .unwrap_or_default();
    top.finish();

    if accounts.is_empty() && problems.is_empty() {
        problems.push("accounts", "at least one account is required");
    }
    let inline_secrets = problems.inline_secrets().to_vec();
    problems.into_result(Config {
        global,
        accounts,
        inline_secrets,
    })
}

/// The top-level mapping of a YAML or TOML text, to be read with [`Fields`].
///
/// A syntax error is reported by line and column with the parser's complaint, never with the
/// offending line itself: that line may hold a secret.
pub fn parse_mapping(text: &str, format: Format) -> Result<Dict, ConfigErrors> {
    let parsed = match format {
        Format::Yaml => Yaml::from_str::<Value>(text).map_err(|e| {
            let location = e.location().map(|l| (l.line(), l.column()));
            (location, e.to_string())
        }),
        Format::Toml => Toml::from_str::<Value>(text).map_err(|e| {
            let location = e.span().map(|span| line_and_column(text, span.start));
            (location, e.message().to_owned())
        }),
    };
    let problem = match parsed {
        Ok(Value::Dict(_, dict)) => return Ok(dict),
        // An empty YAML file.
        Ok(Value::Empty(..)) => return Ok(Dict::new()),
        Ok(_) => "the file must be a mapping (with global and accounts)".to_owned(),
        Err((location, message)) => {
            let message = parse_complaint(&message, text);
            match location {
                Some((line, column)) => format!("line {line}, column {column}: {message}"),
                None => message,
            }
        }
    };
    // The file's text in the other format: the fix first, the parser's complaint after.
    let message = match format {
        Format::Yaml if reads_as_config(Format::Toml, text) => format!(
            "cannot parse the file as YAML: it reads as TOML: name the file .toml (the format follows the file's extension); as YAML: {problem}"
        ),
        Format::Toml if reads_as_config(Format::Yaml, text) => format!(
            "cannot parse the file as TOML: it reads as YAML: name the file .yml (the format follows the file's extension); as TOML: {problem}"
        ),
        _ => format!("cannot parse the file: {problem}"),
    };
    Err(ConfigErrors(vec![ConfigError {
        path: String::new(),
        message,
    }]))
}

/// Whether `text` parses in `format` as a mapping with `global` or `accounts`: what the
/// file was meant to be when it fails in the format its extension names.
fn reads_as_config(format: Format, text: &str) -> bool {
    let parsed = match format {
        Format::Yaml => Yaml::from_str::<Value>(text).ok(),
        Format::Toml => Toml::from_str::<Value>(text).ok(),
    };
    matches!(parsed, Some(Value::Dict(_, dict)) if dict.contains_key("accounts") || dict.contains_key("global"))
}

/// The 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A parser's complaint on one line, without the locations it writes itself (given apart)
/// and without any value it quotes from the file: a quoted piece longer than a token
/// (`` `=` ``, `'"'`) that the file holds other than as a key is dropped, as it may be a
/// secret.
fn parse_complaint(message: &str, source: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = rest[open..].chars().next().unwrap_or('"');
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let quoted = &after[..close];
        if quoted.chars().count() > 3 && appears_as_value(quoted, source) {
            out.push_str("(value not shown)");
        } else {
            out.push(quote);
            out.push_str(quoted);
            out.push(quote);
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    let one_line = out
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    without_marks(&one_line)
}

/// Whether `piece` occurs in `source` other than as a key or table name (followed by `=`,
/// `:`, `.` or `]`, perhaps after a closing quote and spaces).
fn appears_as_value(piece: &str, source: &str) -> bool {
    source.match_indices(piece).any(|(at, _)| {
        let after = source[at + piece.len()..].trim_start_matches(['"', '\'', ' ', '\t']);
        !after.starts_with(['=', ':', '.', ']'])
    })
}

/// `text` without serde_yaml's ` at line L column C` (the location is given apart).
fn without_marks(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" at line ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at line ".len()..];
        let digits = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let line_digits = digits(after);
        let column = after[line_digits..].strip_prefix(" column ");
        match column {
            Some(column) if line_digits > 0 && digits(column) > 0 => {
                rest = &column[digits(column)..];
            }
            _ => {
                out.push_str(" at line ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
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
        max_currencies: read_max_currencies(fields).unwrap_or(defaults.max_currencies),
    };
    check_interval(fields, "poll_interval", global.poll_interval);
    global
}

/// `max_currencies`: at least 1.
fn read_max_currencies(fields: &mut Fields<'_>) -> Option<usize> {
    let max = fields.optional::<usize>("max_currencies")?;
    if max == 0 {
        fields.error("max_currencies", "must be at least 1");
        return None;
    }
    Some(max)
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
    names: &mut HashSet<String>,
    problems: &mut Problems,
) -> Option<AccountConfig> {
    let mut fields = Fields::new(path, value, problems);
    let name = fields.required_string("name");
    if let Some(name) = &name
        && !names.insert(name.clone())
    {
        fields.error("name", format!("{name:?} is used by an earlier account"));
    }
    let name_is_valid = name.as_ref().is_some_and(|name| {
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    });
    match &name {
        Some(name) if !name_is_valid => fields.error(
            "name",
            format!("{name:?} may only contain A-Z a-z 0-9 _ . -"),
        ),
        // From here on the account's problems name it: `accounts[2] (payby-ae).dev_key`.
        Some(name) => fields.name_as(name),
        None => {}
    }
    let poll_interval = fields.duration("poll_interval");
    if let Some(interval) = poll_interval {
        check_interval(&mut fields, "poll_interval", interval);
    }
    let max_currencies = read_max_currencies(&mut fields).unwrap_or(global.max_currencies);
    let provider_name = read_provider_name(&mut fields);
    let provider = provider_name
        .as_deref()
        .and_then(|p| ProviderConfig::read(p, &mut fields));
    let thresholds = match &provider {
        Some(provider) => read_thresholds(&mut fields, provider),
        // Without a valid provider the kinds and currencies are unknown: report only the
        // provider problem, and leave the thresholds unread.
        None => {
            fields.optional::<Value>("thresholds");
            Vec::new()
        }
    };
    let ca_certificates = fields.pem_certificates("ca_file").unwrap_or_default();
    if provider_name.is_none() {
        // Which keys belong depends on the provider: without one, the one problem is that.
        fields.skip_unread();
    }
    let mut secrets = fields.finish();
    if let Some(provider) = &provider {
        secrets.extend(provider.settings().derived_secrets());
    }
    Some(AccountConfig {
        name: name?,
        poll_interval: poll_interval.unwrap_or(global.poll_interval),
        max_currencies,
        thresholds,
        provider: provider?,
        secrets,
        ca_certificates,
    })
}

/// The account's `provider` if it names a registered one; else the problem is recorded, with
/// the closest registered name when one is close (`paybi`: did you mean payby?).
fn read_provider_name(fields: &mut Fields<'_>) -> Option<String> {
    let name: String = fields.required("provider")?;
    let known = || PROVIDERS.iter().map(|p| p.name);
    if known().any(|known| known == name) {
        return Some(name);
    }
    let hint = closest(&name, known())
        .map(|near| format!(": did you mean {near}?"))
        .unwrap_or_default();
    let all: Vec<&str> = known().collect();
    fields.error(
        "provider",
        format!(
            "unknown provider {name:?}{hint} (known providers: {}; the account's other keys are checked once it names one)",
            all.join(", ")
        ),
    );
    None
}

fn read_thresholds(fields: &mut Fields<'_>, provider: &ProviderConfig) -> Vec<Threshold> {
    let provider = provider.settings();
    let mut out: Vec<Threshold> = Vec::new();
    fields.list("thresholds", |path, value, problems| {
        let mut item = Fields::new(path, value, problems);
        let threshold = read_threshold(&mut item, provider);
        match threshold {
            Some(t)
                if out
                    .iter()
                    .any(|o| o.kind == t.kind && o.currency == t.currency) =>
            {
                item.error_here("duplicate threshold for the same kind and currency")
            }
            Some(t) => out.push(t),
            None => {}
        }
        item.finish();
        Some(())
    });
    out
}

fn read_threshold(fields: &mut Fields<'_>, provider: &dyn ProviderSettings) -> Option<Threshold> {
    let kind = match fields.optional::<String>("kind") {
        None => Some(provider.default_threshold_kind()),
        Some(kind) => {
            let found = provider.kinds().iter().find(|k| **k == kind).copied();
            if found.is_none() {
                fields.error(
                    "kind",
                    format!(
                        "{kind:?} is not a balance kind of this provider (one of: {})",
                        provider.kinds().join(", ")
                    ),
                );
            }
            found
        }
    };
    let currency = match (
        fields.optional::<String>("currency"),
        provider.currency_scope(),
    ) {
        (Some(c), scope) => {
            let c = c.trim().to_ascii_uppercase();
            match scope {
                _ if !is_currency_code(&c) => {
                    fields.error("currency", format!("{c:?} is not a currency code"));
                    None
                }
                CurrencyScope::Fixed(list) if !list.contains(&c) => {
                    fields.error(
                        "currency",
                        format!(
                            "{c} is not among the account's currencies ({})",
                            list.join(", ")
                        ),
                    );
                    None
                }
                _ => Some(Some(c)),
            }
        }
        (None, CurrencyScope::Fixed(list)) if list.len() == 1 => Some(Some(list[0].clone())),
        (None, CurrencyScope::SingleFromProvider) => Some(None),
        (None, _) => {
            fields.error(
                "currency",
                "required: this account has more than one currency",
            );
            None
        }
    };
    let warning = fields.optional::<ConfigDecimal>("warning").map(|d| d.0);
    let critical = fields.optional::<ConfigDecimal>("critical").map(|d| d.0);
    match (warning, critical) {
        (None, None) => fields.error_here("give warning, critical or both"),
        (Some(w), Some(c)) if w < c => fields.error(
            "warning",
            format!("{w} is below the critical threshold {c}"),
        ),
        _ => {}
    }
    Some(Threshold {
        kind: kind?,
        currency: currency?,
        warning,
        critical,
    })
}

/// A number in the config (`100`, `99.5` or `"99.50"`) as a decimal.
struct ConfigDecimal(Decimal);

impl<'de> serde::Deserialize<'de> for ConfigDecimal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Written {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let parsed = match Written::deserialize(d)? {
            Written::Int(i) => Ok(Decimal::from(i)),
            // YAML has already made the text a float; its shortest form is what was written.
            Written::Float(f) => f.to_string().parse::<Decimal>(),
            Written::Text(t) => t.trim().parse::<Decimal>(),
        };
        parsed
            .map(ConfigDecimal)
            .map_err(|_| serde::de::Error::custom("expected a number such as 100 or 99.5"))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn parse_yaml(text: &str) -> Result<Config, ConfigErrors> {
        parse(text, Format::Yaml, Path::new("/nonexistent"))
    }

    fn problems(text: &str) -> Vec<String> {
        parse_yaml(text)
            .expect_err("config should be invalid")
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Every one of `expected` begins some reported problem.
    pub(crate) fn assert_reported(found: &[String], expected: &[&str]) {
        for e in expected {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in:\n{}",
                found.join("\n")
            );
        }
    }

    const SMS: &str = "
accounts:
  - name: sms-main
    provider: engagelab
    product: sms
    dev_key: key
    dev_secret: s3cr3t-value
";

    #[test]
    fn max_currencies_is_global_with_a_per_account_override() {
        let config = parse_yaml(SMS).unwrap();
        assert_eq!(config.accounts[0].max_currencies, 100);
        let text = format!("global: {{max_currencies: 7}}\n{SMS}    max_currencies: 3\n");
        let config = parse_yaml(&text).unwrap();
        assert_eq!(config.global.max_currencies, 7);
        assert_eq!(config.accounts[0].max_currencies, 3);
        let text = format!("global: {{max_currencies: 0}}\n{SMS}");
        assert_reported(
            &problems(&text),
            &["global.max_currencies: must be at least 1"],
        );
    }

    #[test]
    fn defaults_apply_and_secrets_stay_hidden() {
        let config = parse_yaml(SMS).unwrap();
        assert_eq!(config.global, Global::default());
        let account = &config.accounts[0];
        assert_eq!(account.poll_interval, Duration::from_secs(60));
        let ProviderConfig::EngageLab(c) = &account.provider else {
            panic!("not engagelab: {:?}", account.provider);
        };
        assert_eq!(c.currency, "USD");
        assert_eq!(c.base_url.as_str(), "https://smsapi.engagelab.com/");
        assert_eq!(c.dev_secret.expose(), "s3cr3t-value");
        assert!(!format!("{config:?}").contains("s3cr3t"));
        // The secret, and the Basic credentials derived from it.
        let secrets: Vec<&str> = account.secrets.iter().map(Secret::expose).collect();
        assert_eq!(secrets, ["s3cr3t-value", "key:s3cr3t-value"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems(
            "
global:
  poll_interval: soon
  max_concurrent_requests: 0
  colour: blue
accounts:
  - name: ok
    provider: engagelab
    product: sms
    dev_key: k
    dev_secret: s
  - name: bad name
    provider: engagelab
    product: fax
    dev_key: k
    dev_secret: s
    dev_secret_env: ALSO
    base_url: ftp://example.com
    thresholds:
      - kind: bonus
        warning: 1
      - warning: 1
        critical: 5
      - currency: EUR
        warning: lots
  - name: ok
    provider: paypal
  - provider: engagelab
    product: sms
    dev_key: k
    dev_secret_file: missing-file
",
        );
        let expect = [
            "global.poll_interval: expected a duration like 30s, 5m or 1h, found \"soon\"",
            "global.max_concurrent_requests: must be at least 1",
            "global.colour: unknown key",
            "accounts[1].name: \"bad name\" may only contain",
            "accounts[1].product: \"fax\" is not a product (sms or otp)",
            "accounts[1].dev_secret: give only one of dev_secret, dev_secret_file or dev_secret_env",
            "accounts[1].base_url: \"ftp://example.com\" is not an http(s) URL",
            "accounts[2] (ok).provider: unknown provider \"paypal\" (known providers:",
            "accounts[3].name: required but missing",
            "accounts[3].dev_secret_file: cannot read /nonexistent/missing-file",
        ];
        assert_reported(&found, &expect);
    }

    #[test]
    fn an_unknown_provider_is_one_error_with_the_closest_name() {
        let text = "
accounts:
  - name: payby-ae
    provider: paybi
    environment: uat
    partner_id: 200000018128
    private_key_file: payby/merchant_private_key_pkcs1.pem
    payby_public_key_file: payby/payby_public_key.pem
    currencies: [AED]
    thresholds:
      - currency: AED
        critical: 1000
";
        let found = problems(text);
        assert_eq!(
            found,
            [
                "accounts[0] (payby-ae).provider: unknown provider \"paybi\": did you mean payby? \
                 (known providers: engagelab, payby, onerway, uqpay; the account's other keys are \
                 checked once it names one)"
                    .replace("engagelab, payby, onerway, uqpay", &known_providers())
            ]
        );
        // Case is a slip too; a name like no other gets the list only.
        assert!(problems(&text.replace("paybi", "PayBy"))[0].contains(": did you mean payby? ("));
        let far = problems(&text.replace("paybi", "stripe-ish-thing"));
        assert_eq!(far.len(), 1, "{far:?}");
        assert!(!far[0].contains("did you mean"), "{far:?}");
        // No provider at all: the same, one error.
        let missing = problems(&text.replace("    provider: paybi\n", ""));
        assert_eq!(
            missing,
            ["accounts[0] (payby-ae).provider: required but missing"]
        );
    }

    /// The registered providers, as the message lists them (others are being added).
    fn known_providers() -> String {
        crate::providers::PROVIDERS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn an_unknown_key_suggests_the_closest_known_key_when_one_is_close() {
        let found = problems(&format!(
            "global:\n  pol_interval: 5m\n  colour: blue\n{SMS}    dev_secert_file: x\n    thresholds:\n      - warnign: 5\n"
        ));
        assert_reported(
            &found,
            &[
                "global.pol_interval: unknown key; did you mean poll_interval? (expected one of: max_concurrent_requests, poll_interval,",
                "global.colour: unknown key (expected one of:",
                "accounts[0] (sms-main).dev_secert_file: unknown key; did you mean dev_secret_file? (expected one of:",
                "accounts[0] (sms-main).thresholds[0].warnign: unknown key; did you mean warning? (expected one of: kind, currency, warning, critical)",
            ],
        );
    }

    #[test]
    fn a_bare_number_for_a_duration_says_how_to_write_it() {
        let found = problems(&format!(
            "global:\n  poll_interval: 300\n  stale_after: \"90\"\n  request_timeout: [1]\n{SMS}    poll_interval: -5\n"
        ));
        assert_eq!(
            found,
            [
                "global.poll_interval: 300 has no unit: write 300s (durations are written like 30s, 5m or 1h)",
                "global.request_timeout: expected a duration, found a list (durations are written like 30s, 5m or 1h)",
                "global.stale_after: \"90\" has no unit: write 90s (durations are written like 30s, 5m or 1h)",
                "accounts[0] (sms-main).poll_interval: expected a duration, found the number -5 (durations are written like 30s, 5m or 1h)",
            ]
        );
        let toml = "[global]\npoll_interval = 2.5\n";
        let found = parse(toml, Format::Toml, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            found.starts_with("global.poll_interval: 2.5 has no unit: write 2.5s"),
            "{found}"
        );
    }

    #[test]
    fn toml_in_a_yaml_file_or_yaml_in_a_toml_file_says_so() {
        let as_yaml = parse_yaml(OTP_TOML).unwrap_err().to_string();
        assert!(
            as_yaml.starts_with(
                "cannot parse the file as YAML: it reads as TOML: name the file .toml (the format follows the file's extension); as YAML: "
            ),
            "{as_yaml}"
        );
        // A TOML file that starts with its accounts fails differently in YAML; same hint.
        let accounts_first = &OTP_TOML[OTP_TOML.find("[[accounts]]").unwrap()..];
        let as_yaml = parse_yaml(accounts_first).unwrap_err().to_string();
        assert!(
            as_yaml.starts_with(
                "cannot parse the file as YAML: it reads as TOML: name the file .toml"
            ),
            "{as_yaml}"
        );
        let as_toml = parse(SMS, Format::Toml, Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            as_toml.starts_with(
                "cannot parse the file as TOML: it reads as YAML: name the file .yml (the format follows the file's extension); as TOML: line "
            ),
            "{as_toml}"
        );
        // A plain syntax error in the right format gets no such hint.
        let broken = parse_yaml("accounts: [").unwrap_err().to_string();
        assert!(!broken.contains("it reads as"), "{broken}");
    }

    #[test]
    fn relative_paths_are_shown_resolved_and_a_missing_file_says_what_to_do() {
        let dir = std::env::temp_dir().join(format!("be-config-paths-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("exporter.yml");
        std::fs::write(
            &file,
            SMS.replace("dev_secret: s3cr3t-value", "dev_secret_file: secrets/dev"),
        )
        .unwrap();
        let found = load(&file).unwrap_err().to_string();
        let expected = format!(
            "accounts[0] (sms-main).dev_secret_file: cannot read {}: ",
            dir.join("secrets/dev").display()
        );
        assert!(found.starts_with(&expected), "{found}");
        // A relative base directory is resolved against the working directory.
        let relative = parse(
            &SMS.replace(
                "dev_secret: s3cr3t-value",
                "dev_secret_file: no-such-secret",
            ),
            Format::Yaml,
            Path::new(""),
        )
        .unwrap_err()
        .to_string();
        let cwd = std::env::current_dir().unwrap();
        assert!(
            relative.contains(&format!(
                "cannot read {}: ",
                cwd.join("no-such-secret").display()
            )),
            "{relative}"
        );
        let missing = load(&dir.join("nothing-here.yml")).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            missing.starts_with(&format!(
                "cannot read {}: ",
                dir.join("nothing-here.yml").display()
            )) && missing.ends_with(
                ": point --config.file at your configuration file, or try --demo, which needs none"
            ),
            "{missing}"
        );
    }

    #[test]
    fn closest_is_only_a_near_miss() {
        let keys = ["poll_interval", "stale_after", "max_currencies"];
        assert_eq!(closest("poll_intreval", keys), Some("poll_interval"));
        assert_eq!(closest("Poll_Interval", keys), Some("poll_interval"));
        assert_eq!(closest("stale", keys), None);
        assert_eq!(closest("colour", keys), None);
        assert_eq!(
            closest("poll_interval", keys),
            None,
            "an exact match is no suggestion"
        );
        assert_eq!(
            closest("uqpy", ["engagelab", "payby", "uqpay"]),
            Some("uqpay")
        );
        assert_eq!(closest(&"x".repeat(10_000), keys), None);
        assert_eq!(closest("", keys), None);
    }

    #[test]
    fn threshold_problems_name_the_threshold() {
        let found = problems(&format!(
            "{SMS}    thresholds:
      - kind: bonus
        warning: 1
      - warning: 1
        critical: 5
      - currency: EUR
        warning: 3
      - critical: lots
      - kind: gift
"
        ));
        let expect = [
            "accounts[0] (sms-main).thresholds[0].kind: \"bonus\" is not a balance kind of this provider (one of: normal, gift, total)",
            "accounts[0] (sms-main).thresholds[1].warning: 1 is below the critical threshold 5",
            "accounts[0] (sms-main).thresholds[2].currency: EUR is not among the account's currencies (USD)",
            "accounts[0] (sms-main).thresholds[3].critical: expected a number",
            "accounts[0] (sms-main).thresholds[4]: give warning, critical or both",
        ];
        assert_reported(&found, &expect);
    }

    #[test]
    fn duplicate_names_and_thresholds_are_refused() {
        let twice = format!("{SMS}{}", SMS.replace("accounts:\n", ""));
        assert!(
            problems(&twice)
                .iter()
                .any(|p| p.starts_with("accounts[1].name: \"sms-main\" is used by an earlier"))
        );
        let found = problems(&format!(
            "{SMS}    thresholds:\n      - warning: 2\n      - kind: total\n        critical: 1\n"
        ));
        assert!(found[0].starts_with("accounts[0] (sms-main).thresholds[1]: duplicate threshold"));
    }

    #[test]
    fn secrets_from_files_and_environment() {
        let dir = std::env::temp_dir().join(format!("be-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("secret"), "from-file\r\n").unwrap();
        // SAFETY: only this test reads or writes this variable.
        unsafe { std::env::set_var("BE_TEST_SECRET_ONLY_HERE", "from-env") };
        let text = "
accounts:
  - name: a
    provider: engagelab
    product: sms
    dev_key: k
    dev_secret_file: secret
  - name: b
    provider: engagelab
    product: otp
    dev_key: k
    dev_secret_env: BE_TEST_SECRET_ONLY_HERE
";
        let config = parse(text, Format::Yaml, &dir).unwrap();
        let secret = |i: usize| match &config.accounts[i].provider {
            ProviderConfig::EngageLab(c) => c.dev_secret.expose().to_owned(),
            other => panic!("not engagelab: {other:?}"),
        };
        assert_eq!(secret(0), "from-file");
        assert_eq!(secret(1), "from-env");
        let missing = parse(
            &text.replace("BE_TEST_SECRET_ONLY_HERE", "BE_NOT_SET_ANYWHERE"),
            Format::Yaml,
            &dir,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            missing,
            "accounts[1] (b).dev_secret_env: environment variable BE_NOT_SET_ANYWHERE is not set"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_ca_file_must_be_a_readable_pem_certificate() {
        let dir = std::env::temp_dir().join(format!("be-config-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("not-pem.txt"), "hello").unwrap();
        let text = format!(
            "{SMS}    ca_file: missing.pem\n{}",
            SMS.replace("accounts:\n", "")
                .replace("sms-main", "other")
                .replace("s3cr3t-value", "s\n    ca_file: not-pem.txt")
        );
        let found: Vec<String> = parse(&text, Format::Yaml, &dir)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_reported(
            &found,
            &[
                "accounts[0] (sms-main).ca_file: cannot read",
                "accounts[1] (other).ca_file: no PEM certificate in",
            ],
        );
    }

    const OTP_TOML: &str = r#"
[global]
poll_interval = "5m"
stale_after = "1h"

[[accounts]]
name = "otp"
provider = "engagelab"
product = "otp"
dev_key = "k"
dev_secret = "s"
poll_interval = "90s"

[[accounts.thresholds]]
warning = 100.5
"#;

    #[test]
    fn toml_reads_the_same_shape() {
        let config = parse(OTP_TOML, Format::Toml, Path::new(".")).unwrap();
        assert_eq!(config.global.poll_interval, Duration::from_secs(300));
        assert_eq!(config.global.stale_after, Duration::from_secs(3600));
        let account = &config.accounts[0];
        assert_eq!(account.poll_interval, Duration::from_secs(90));
        assert_eq!(account.thresholds[0].warning, Some(Decimal::new(1005, 1)));
        assert_eq!(account.thresholds[0].currency, None);
        assert_eq!(account.thresholds[0].kind, "total");
    }

    #[test]
    fn an_empty_or_unparsable_file_says_so() {
        assert_eq!(
            parse_yaml("").unwrap_err().to_string(),
            "accounts: at least one account is required"
        );
        assert!(
            parse_yaml("accounts: [")
                .unwrap_err()
                .to_string()
                .starts_with("cannot parse the file")
        );
        assert!(
            parse_yaml("accounts: 3")
                .unwrap_err()
                .to_string()
                .starts_with("accounts: expected a list")
        );
    }

    /// Valid files for every provider, in YAML and TOML.
    fn valid_files() -> Vec<(Format, String)> {
        let yaml = format!(
            "{SMS}    thresholds:
      - warning: 100
        critical: 10.5
  - name: payby
    provider: payby
    environment: uat
    partner_id: 200000018128
    private_key_file: payby/merchant_private_key_pkcs1.pem
    payby_public_key_file: payby/payby_public_key.pem
    currencies: [AED, USD]
    thresholds:
      - currency: AED
        critical: 1000
  - name: onerway
    provider: onerway
    base_url: https://account.example
    apikey: key-123456
    overview_path: /v1/overview
    display_currency: EUR
  - name: uqpay
    provider: uqpay
    client_id: client-1
    api_key: api-key-1
    currencies: [SGD]
    poll_interval: 90s
global:
  poll_interval: 5m
  request_timeout: 10s
  max_concurrent_requests: 4
  stale_after: 1h
"
        );
        vec![(Format::Yaml, yaml), (Format::Toml, OTP_TOML.to_owned())]
    }

    #[test]
    fn the_loader_never_panics_on_arbitrary_or_mutated_files() {
        use proptest::test_runner::{Config as Cases, TestRunner};

        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let files = valid_files();
        for (format, text) in &files {
            let config = parse(text, *format, &testdata).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.accounts.is_empty(), "the seeds are valid");
        }
        let dir = std::env::temp_dir().join(format!("be-config-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.yml");
        let seeds = files.iter().map(|(_, t)| t.clone().into_bytes()).collect();
        let mut runner = TestRunner::new(Cases::default());
        let result = runner.run(&crate::providers::fuzz::bodies(seeds), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse(&text, Format::Yaml, &testdata);
            let _ = parse(&text, Format::Toml, &testdata);
            // As a file: bytes that are not UTF-8 must be refused, not unwrapped.
            std::fs::write(&file, &bytes).unwrap();
            let _ = load(&file);
            Ok(())
        });
        std::fs::remove_dir_all(&dir).unwrap();
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    /// A secret planted in broken files of every kind; it must never be in the errors.
    const PLANTED: &str = "8675309123";

    fn assert_hidden(found: &str, what: &str) {
        assert!(
            !found.contains(PLANTED) && !found.contains("86753"),
            "{what}: the secret shows in:\n{found}"
        );
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_never_printed() {
        let values = [
            ("a number", PLANTED.to_owned()),
            ("a number", format!("-{PLANTED}")),
            ("a number", format!("{PLANTED}.5")),
            ("a boolean", "true".to_owned()),
            ("a list", format!("[{PLANTED}, x{PLANTED}]")),
            ("a mapping", format!("{{x{PLANTED}: {PLANTED}}}")),
        ];
        for (found, value) in &values {
            let yaml = SMS.replace("s3cr3t-value", value);
            let errors = parse_yaml(&yaml).unwrap_err().to_string();
            assert_hidden(&errors, &yaml);
            assert_eq!(
                errors,
                format!(
                    "accounts[0] (sms-main).dev_secret: expected a string, found {found} (value not shown): write the secret in quotes"
                )
            );
        }
        let toml = |value: &str| {
            format!(
                "[[accounts]]\nname = \"a\"\nprovider = \"onerway\"\nbase_url = \"https://a.example\"\noverview_path = \"/o\"\napikey = {value}\n"
            )
        };
        for value in [
            PLANTED.to_owned(),
            format!("{PLANTED}.25"),
            "false".to_owned(),
            format!("[{PLANTED}]"),
            format!("{{ x = {PLANTED} }}"),
            "1979-05-27".to_owned(),
        ] {
            let text = toml(&value);
            let errors = parse(&text, Format::Toml, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                errors.starts_with("accounts[0] (a).apikey: expected a string, found "),
                "{text}: {errors}"
            );
            assert_hidden(&errors, &text);
        }
        // What looks like a value rather than a variable's name is not echoed either.
        let text = SMS.replace(
            "dev_secret: s3cr3t-value",
            &format!("dev_secret_env: '{PLANTED}'"),
        );
        let errors = parse_yaml(&text).unwrap_err().to_string();
        assert!(
            errors.starts_with(
                "accounts[0] (sms-main).dev_secret_env: expected the name of an environment variable"
            ),
            "{errors}"
        );
        assert_hidden(&errors, &text);
    }

    #[test]
    fn syntax_errors_give_line_and_column_never_the_line() {
        let yaml = [
            (
                format!("accounts:\n  - name: a\n    dev_secret: \"{PLANTED}\n"),
                "line 4, column 1: ",
            ),
            (
                format!("accounts:\n  - name: a\n    dev_secret: !!int x{PLANTED}\n"),
                "line 3, column 17: ",
            ),
            (
                format!("accounts:\n  - name: a\n    dev_secret: !!float x{PLANTED}\n"),
                "line 3, column 17: ",
            ),
            (
                format!("accounts:\n  - name: a\n    dev_secret: {PLANTED}: x: y\n"),
                "line 3, column 27: ",
            ),
            (
                format!("accounts:\n  - name: a\n    dev_secret: '{PLANTED}'x\n"),
                "line 3, column 29: ",
            ),
            (
                format!("accounts:\n  - name: a\n    dev_secret: *{PLANTED}\n"),
                "line 3, column 17: ",
            ),
        ];
        for (text, at) in &yaml {
            let errors = parse_yaml(text).unwrap_err().to_string();
            assert_hidden(&errors, text);
            let expected = format!("cannot parse the file: {at}");
            assert!(errors.starts_with(&expected), "{text:?}: {errors}");
            assert!(
                errors.len() > expected.len() + 5,
                "the complaint is kept: {errors}"
            );
        }
        let toml = [
            (
                format!("[[accounts]]\nname = \"a\"\ndev_secret = {PLANTED}x\n"),
                "line 3, column 24: expected newline",
            ),
            (
                format!("[[accounts]]\nname = \"a\"\ndev_secret = \"{PLANTED}\n"),
                "line 3, column 25: invalid basic string",
            ),
            (
                format!("[[accounts]]\nname = \"a\"\ndev_secret = 1979-05-27T{PLANTED}\n"),
                "line 3, column 24: ",
            ),
            (
                format!("[[accounts]]\nname = \"a\"\ndev_secret = [{PLANTED}x]\n"),
                "line 3, column 25: invalid array",
            ),
            (
                format!(
                    "[[accounts]]\nname = \"a\"\ndev_secret = \"{PLANTED}\"\ndev_secret = \"{PLANTED}\"\n"
                ),
                "line 4, column 1: duplicate key `dev_secret` in table `accounts`",
            ),
        ];
        for (text, at) in &toml {
            let errors = parse(text, Format::Toml, Path::new("."))
                .unwrap_err()
                .to_string();
            assert_hidden(&errors, text);
            let expected = format!("cannot parse the file: {at}");
            assert!(errors.starts_with(&expected), "{text:?}: {errors}");
            assert!(
                !errors.contains('\n') && !errors.contains('^'),
                "one line, no source excerpt: {errors}"
            );
        }
        assert_eq!(
            parse_yaml(&format!("- {PLANTED}")).unwrap_err().to_string(),
            "cannot parse the file: the file must be a mapping (with global and accounts)"
        );
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_and_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_and_column("é\nxé", 6), (2, 3));
        // Inside a character: the character's own column.
        assert_eq!(line_and_column("é\nxé", 5), (2, 2));
        assert_eq!(line_and_column("é", 1), (1, 1));
        assert_eq!(line_and_column("", 7), (1, 1));
    }
}
