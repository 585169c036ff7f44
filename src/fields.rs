//! Reading one YAML/TOML mapping key by key, collecting every problem with its path.
//!
//! A leaf of the crate: `config` reads its own sections with it and each provider reads its
//! keys with it, so providers need nothing from `config`.
//!
//! serde stops at the first error; `--config.check` must print all of them. So each section is
//! taken apart here: every key is deserialized on its own, problems are recorded as
//! `accounts[2] (sms-main).dev_key: ...`, and whatever key nobody asked for is reported as
//! unknown (with the closest known key when one is close).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::{Dict, Value};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;

use crate::secret::Secret;

/// One problem in the configuration, located by its path
/// (`accounts[2] (payby-ae).private_key_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one configuration; displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Where problems are collected and relative secret files are resolved.
pub struct Problems {
    errors: Vec<ConfigError>,
    base_dir: PathBuf,
    /// Paths of the secrets written in the file itself.
    inline_secrets: Vec<String>,
}

impl Problems {
    /// `base_dir` is made absolute (not canonical: symlinks stay as written), so that a file
    /// that cannot be read is named where it was looked for, not relative to an unknown
    /// working directory.
    pub fn new(base_dir: &Path) -> Self {
        // `a.yml`'s parent is the empty path: the working directory.
        let dir = if base_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            base_dir
        };
        let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        Problems {
            errors: Vec::new(),
            base_dir,
            inline_secrets: Vec::new(),
        }
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl fmt::Display) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.to_string(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Paths of the secrets given inline (`accounts[0].dev_secret`), not by file or variable.
    pub fn inline_secrets(&self) -> &[String] {
        &self.inline_secrets
    }

    pub fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}

/// A secret as loaded, with the path of the key it came from (`x`, `x_file` or `x_env`) so that
/// a later check of its content (a PEM key, say) can name that key.
pub struct LoadedSecret {
    pub value: Secret,
    pub path: String,
}

/// One mapping of the configuration, consumed key by key.
pub struct Fields<'p> {
    path: String,
    dict: Dict,
    asked: Vec<String>,
    secrets: Vec<Secret>,
    problems: &'p mut Problems,
}

impl<'p> Fields<'p> {
    /// `value` must be a mapping; if not, the problem is recorded and an empty one is used.
    pub fn new(path: impl Into<String>, value: Value, problems: &'p mut Problems) -> Self {
        let path = path.into();
        let dict = match value {
            Value::Dict(_, dict) => dict,
            Value::Empty(..) => Dict::new(),
            other => {
                problems.push(
                    &path,
                    format!("expected a mapping, found {}", describe(&other)),
                );
                Dict::new()
            }
        };
        Fields {
            path,
            dict,
            asked: Vec::new(),
            secrets: Vec::new(),
            problems,
        }
    }

    /// Names this mapping in every later problem by `name` as well as by its position:
    /// `accounts[2] (payby-ae).private_key_file`, so the account is found without counting.
    pub fn name_as(&mut self, name: &str) {
        self.path = format!("{} ({name})", self.path);
    }

    /// Leaves the keys not read yet unreported: when what they mean is unknown (an account
    /// whose provider is not known), reporting each as unknown would bury the one real
    /// problem.
    pub fn skip_unread(&mut self) {
        let unread: Vec<String> = self.dict.keys().cloned().collect();
        self.asked.extend(unread);
        self.dict.clear();
    }

    /// The full path of `key` in this mapping, for error messages.
    pub fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn error(&mut self, key: &str, message: impl fmt::Display) {
        let path = self.path_of(key);
        self.problems.push(path, message);
    }

    /// Records a problem with this mapping as a whole.
    pub fn error_here(&mut self, message: impl fmt::Display) {
        let path = self.path.clone();
        self.problems.push(path, message);
    }

    /// Records a problem at a path that is not a key of this mapping (a secret's source key).
    pub fn error_at(&mut self, path: &str, message: impl fmt::Display) {
        self.problems.push(path, message);
    }

    fn take_raw(&mut self, key: &str) -> Option<Value> {
        self.asked.push(key.to_owned());
        match self.dict.remove(key) {
            // `key:` with nothing after it in YAML reads as absent.
            Some(Value::Empty(..)) | None => None,
            Some(value) => Some(value),
        }
    }

    /// Whether `key` is present (and not empty) and not yet read.
    pub fn has(&self, key: &str) -> bool {
        !matches!(self.dict.get(key), None | Some(Value::Empty(..)))
    }

    /// The value of `key`, if present and valid; an invalid value is recorded as a problem.
    pub fn optional<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let value = self.take_raw(key)?;
        self.decode(key, &value)
    }

    /// Like [`Fields::optional`], recording a problem when the key is absent.
    pub fn required<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        if !self.dict.contains_key(key) || matches!(self.dict.get(key), Some(Value::Empty(..))) {
            self.take_raw(key);
            self.error(key, "required but missing");
            return None;
        }
        self.optional(key)
    }

    /// A non-empty string without surrounding whitespace.
    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let value: String = self.required(key)?;
        if value.trim().is_empty() || value.trim() != value {
            self.error(
                key,
                "must be a non-empty string without surrounding whitespace",
            );
            return None;
        }
        Some(value)
    }

    /// A duration written like `30s`, `5m`, `1h` or `1h30m`. A bare number has no unit: the
    /// problem says how to write it (`write 300s`) rather than that a string was expected.
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        const LIKE: &str = "durations are written like 30s, 5m or 1h";
        let text = match self.take_raw(key)? {
            Value::String(_, text) => text,
            Value::Num(_, number) => {
                let written = number_text(number);
                if written.starts_with('-') {
                    self.error(
                        key,
                        format!("expected a duration, found the number {written} ({LIKE})"),
                    );
                    return None;
                }
                self.error(
                    key,
                    format!("{written} has no unit: write {written}s ({LIKE})"),
                );
                return None;
            }
            other => {
                let found = describe(&other);
                self.error(key, format!("expected a duration, found {found} ({LIKE})"));
                return None;
            }
        };
        match humantime::parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(key, "must be longer than zero");
                None
            }
            Err(_) if is_bare_number(&text) => {
                let written = text.trim();
                self.error(
                    key,
                    format!("{written:?} has no unit: write {written}s ({LIKE})"),
                );
                None
            }
            Err(_) => {
                self.error(
                    key,
                    format!("expected a duration like 30s, 5m or 1h, found {text:?}"),
                );
                None
            }
        }
    }

    /// `base_url`: an http(s) URL without query or fragment; `default` when absent (a
    /// problem when there is no default).
    pub fn base_url(&mut self, default: Option<&str>) -> Option<reqwest::Url> {
        const KEY: &str = "base_url";
        let text = match (self.optional::<String>(KEY), default) {
            (Some(text), _) => text,
            (None, Some(default)) => default.to_owned(),
            (None, None) => {
                self.error(KEY, "required but missing");
                return None;
            }
        };
        let problem = match reqwest::Url::parse(&text) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
                format!("{text:?} is not an http(s) URL")
            }
            Ok(url) if url.query().is_some() || url.fragment().is_some() => {
                format!("{text:?} must not have a query or fragment")
            }
            Ok(url) => return Some(url),
            Err(e) => format!("{text:?} is not a valid URL: {e}"),
        };
        self.error(KEY, problem);
        None
    }

    /// A list of currency codes (`[AED, USD]`, case-insensitive): at least one, each like `USD`,
    /// no repeats.
    /// `None` when absent or invalid (the problem is recorded; absence only if `required`).
    pub fn currencies(&mut self, key: &str, required: bool) -> Option<Vec<String>> {
        let list: Vec<String> = if required {
            self.required(key)?
        } else {
            self.optional(key)?
        };
        if list.is_empty() {
            self.error(key, "list at least one currency, or leave the key out");
            return None;
        }
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for (i, given) in list.iter().enumerate() {
            let at = format!("{key}[{i}]");
            let code = given.trim().to_ascii_uppercase();
            if !is_currency_code(&code) {
                self.error(&at, format!("{given:?} is not a currency code like USD"));
            } else if out.contains(&code) {
                self.error(&at, format!("{code} is listed twice"));
            } else {
                out.push(code);
            }
        }
        (out.len() == list.len()).then_some(out)
    }

    /// A nested mapping, handed to `read` as its own [`Fields`] (unknown keys reported too).
    pub fn section<T>(&mut self, key: &str, read: impl FnOnce(&mut Fields<'_>) -> T) -> T {
        let value = self.take_raw(key).unwrap_or(Value::Empty(
            figment::value::Tag::Default,
            figment::value::Empty::None,
        ));
        let path = self.path_of(key);
        let mut fields = Fields::new(path, value, self.problems);
        let out = read(&mut fields);
        fields.finish();
        out
    }

    /// A sequence under `key`; each item is handed to `read` with its path (`key[i]`).
    pub fn list<T>(
        &mut self,
        key: &str,
        mut read: impl FnMut(String, Value, &mut Problems) -> Option<T>,
    ) -> Option<Vec<T>> {
        let value = self.take_raw(key)?;
        let path = self.path_of(key);
        match value {
            Value::Array(_, items) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, item)| read(format!("{path}[{i}]"), item, self.problems))
                    .collect(),
            ),
            other => {
                self.problems
                    .push(path, format!("expected a list, found {}", describe(&other)));
                None
            }
        }
    }

    /// A secret given as exactly one of `key` (inline), `key_file` (file contents, trailing
    /// newline trimmed) or `key_env` (name of an environment variable).
    pub fn secret(&mut self, key: &str) -> Option<LoadedSecret> {
        let file_key = format!("{key}_file");
        let env_key = format!("{key}_env");
        let inline = self.take_raw(key);
        let file = self.take_raw(&file_key);
        let env = self.take_raw(&env_key);
        let given = [inline.is_some(), file.is_some(), env.is_some()];
        let choices = format!("{key}, {file_key} or {env_key}");
        match given.iter().filter(|g| **g).count() {
            0 => {
                self.error(key, format!("required but missing: give one of {choices}"));
                return None;
            }
            1 => {}
            _ => {
                self.error(key, format!("give only one of {choices}"));
                return None;
            }
        }
        let (source_key, loaded) = if let Some(value) = inline {
            (key.to_owned(), self.secret_text(key, value))
        } else if let Some(value) = file {
            let loaded = self
                .decode::<String>(&file_key, &value)
                .and_then(|path| self.read_secret_file(&file_key, &path));
            (file_key, loaded)
        } else if let Some(value) = env {
            let loaded = self
                .decode::<String>(&env_key, &value)
                .and_then(|name| self.read_secret_env(&env_key, &name));
            (env_key, loaded)
        } else {
            return None;
        };
        let value = loaded?;
        if value.is_empty() {
            self.error(&source_key, "the secret is empty");
            return None;
        }
        if source_key == key {
            let path = self.path_of(key);
            self.problems.inline_secrets.push(path);
        }
        let secret = Secret::new(value);
        self.secrets.push(secret.clone());
        Some(LoadedSecret {
            value: secret,
            path: self.path_of(&source_key),
        })
    }

    /// An inline secret: a string, else a problem that names what was found but never its
    /// value (a parser's complaint would quote it, and it may be the right secret unquoted).
    fn secret_text(&mut self, key: &str, value: Value) -> Option<String> {
        match value {
            Value::String(_, text) => Some(text),
            other => {
                self.error(
                    key,
                    format!(
                        "expected a string, found {} (value not shown): write the secret in quotes",
                        describe(&other)
                    ),
                );
                None
            }
        }
    }

    fn read_secret_file(&mut self, key: &str, path: &str) -> Option<String> {
        let (full, bytes) = self.read_file(key, path)?;
        match String::from_utf8(bytes) {
            Ok(mut text) => {
                if text.ends_with('\n') {
                    text.pop();
                    if text.ends_with('\r') {
                        text.pop();
                    }
                }
                Some(text)
            }
            Err(_) => {
                self.error(key, format!("{} is not valid UTF-8", full.display()));
                None
            }
        }
    }

    /// The file at `path` (relative to the configuration's directory), with its full path.
    fn read_file(&mut self, key: &str, path: &str) -> Option<(PathBuf, Vec<u8>)> {
        let full = self.problems.base_dir.join(path);
        match std::fs::read(&full) {
            Ok(bytes) => Some((full, bytes)),
            Err(e) => {
                self.error(key, format!("cannot read {}: {e}", full.display()));
                None
            }
        }
    }

    /// The PEM certificates in the file named by `key`; at least one is required.
    pub fn pem_certificates(&mut self, key: &str) -> Option<Vec<CertificateDer<'static>>> {
        let path: String = self.optional(key)?;
        let (full, bytes) = self.read_file(key, &path)?;
        let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
        match certificates {
            Ok(certificates) if !certificates.is_empty() => Some(certificates),
            Ok(_) => {
                self.error(key, format!("no PEM certificate in {}", full.display()));
                None
            }
            Err(e) => {
                self.error(key, format!("{}: bad PEM: {e}", full.display()));
                None
            }
        }
    }

    /// The PEM private key in the file named by `key`.
    pub fn pem_private_key(&mut self, key: &str) -> Option<PrivateKeyDer<'static>> {
        let path: String = self.optional(key)?;
        let (full, bytes) = self.read_file(key, &path)?;
        match PrivateKeyDer::from_pem_slice(&bytes) {
            Ok(private_key) => Some(private_key),
            Err(e) => {
                // The error names what was wrong, never the key's bytes.
                self.error(
                    key,
                    format!("no usable PEM private key in {}: {e}", full.display()),
                );
                None
            }
        }
    }

    fn read_secret_env(&mut self, key: &str, name: &str) -> Option<String> {
        // Anything else is more likely the secret itself, given by mistake: not echoed.
        let is_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !is_name {
            self.error(
                key,
                "expected the name of an environment variable (letters, digits and _; value not shown)",
            );
            return None;
        }
        match std::env::var(name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => {
                self.error(key, format!("environment variable {name} is not set"));
                None
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                self.error(
                    key,
                    format!("environment variable {name} is not valid UTF-8"),
                );
                None
            }
        }
    }

    fn decode<T: DeserializeOwned>(&mut self, key: &str, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut path = self.path_of(key);
                for segment in e.path().iter() {
                    match segment {
                        serde_path_to_error::Segment::Seq { index } => {
                            path.push_str(&format!("[{index}]"))
                        }
                        serde_path_to_error::Segment::Map { key } => {
                            path.push('.');
                            path.push_str(key);
                        }
                        _ => {}
                    }
                }
                self.problems.push(path, e.inner().kind.to_string());
                None
            }
        }
    }

    /// Reports every key nobody asked for (with the closest known key, when one is close)
    /// and returns the secrets read from this mapping.
    pub fn finish(self) -> Vec<Secret> {
        let mut known: Vec<&str> = Vec::with_capacity(self.asked.len());
        for key in &self.asked {
            if !known.contains(&key.as_str()) {
                known.push(key);
            }
        }
        let expected = known.join(", ");
        for key in self.dict.keys() {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let message = match closest(key, known.iter().copied()) {
                Some(near) => {
                    format!("unknown key; did you mean {near}? (expected one of: {expected})")
                }
                None => format!("unknown key (expected one of: {expected})"),
            };
            self.problems.push(path, message);
        }
        self.secrets
    }
}

/// The one of `known` closest to `given` (by edit distance, ignoring case), if it is close
/// enough to be a slip of the keyboard rather than another word: one edit in a short name,
/// up to a third of the letters in a longer one. Ties go to the earlier of `known`.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_lower = given.to_lowercase();
    // Names here are short; anything long is not a misspelling of one and would only cost.
    if given_lower.chars().count() > 64 {
        return None;
    }
    let allowed = (given_lower.chars().count() / 3).clamp(1, 3);
    let mut best: Option<(usize, &str)> = None;
    for candidate in known {
        if candidate == given {
            continue;
        }
        let distance = edit_distance(&given_lower, &candidate.to_lowercase());
        if distance <= allowed && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to `b`, by character.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows of the optimal-string-alignment table: two back, one back, this one.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current: Vec<usize> = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// A number as the file wrote it (YAML and TOML numbers keep no text; their shortest form is
/// what was written).
fn number_text(number: figment::value::Num) -> String {
    use figment::value::Num;
    match number {
        Num::U8(n) => n.to_string(),
        Num::U16(n) => n.to_string(),
        Num::U32(n) => n.to_string(),
        Num::U64(n) => n.to_string(),
        Num::U128(n) => n.to_string(),
        Num::USize(n) => n.to_string(),
        Num::I8(n) => n.to_string(),
        Num::I16(n) => n.to_string(),
        Num::I32(n) => n.to_string(),
        Num::I64(n) => n.to_string(),
        Num::I128(n) => n.to_string(),
        Num::ISize(n) => n.to_string(),
        Num::F32(n) => n.to_string(),
        Num::F64(n) => n.to_string(),
    }
}

/// Digits, perhaps with a decimal point: a duration written without its unit.
fn is_bare_number(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty()
        && text.len() <= 20
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.chars().any(|c| c.is_ascii_digit())
        && text.matches('.').count() <= 1
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "nothing",
        Value::Dict(..) => "a mapping",
        Value::Array(..) => "a list",
    }
}

/// Three ASCII letters, as ISO 4217 codes are.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase())
}
