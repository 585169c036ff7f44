//! Logs on stderr, one event a line, as logfmt (`time=... level=info target=... msg="..."
//! key=value`) or as JSON lines with the same keys (`{"time":...,"level":"info",...}`).
//!
//! The keys are those of Go's log/slog, which Prometheus and its exporters log through since
//! they moved to it (promslog): `time`, `level`, `msg`. Levels are lowercase in both formats,
//! as in the Prometheus programs of before slog, so that one query (`level=error`,
//! `"level":"error"`) finds them whichever format a fleet uses. `target` is the Rust module that
//! logged (slog's `source` is a file and line, which this does not have).

use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log.level`: only messages with this severity or above are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Failures: a start that cannot go on, a failed reload.
    Error,
    /// Also polls that failed and limits reached.
    Warn,
    /// Also start, listen addresses, reloads and stop.
    Info,
    /// Also every poll, retried requests and clients' connection problems.
    Debug,
    /// Also the HTTP and TLS libraries' own events (never a secret).
    Trace,
}

/// `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` pairs, one event a line.
    Logfmt,
    /// One JSON object a line, with the same keys as logfmt.
    Json,
}

/// The keys every line starts with, in this order; an event's own field of the same name is
/// written as `field_<name>`, so that a line never has a key twice.
const RESERVED: [&str; 4] = ["time", "level", "target", "msg"];

/// Installs the global subscriber, and a panic hook that logs a panic as an error line in the
/// same format (instead of the plain text Rust's own hook prints). Fails if a subscriber is
/// installed already.
pub fn init(level: LogLevel, format: LogFormat) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(level_name(level)))
        .with_writer(std::io::stderr)
        .event_format(Line { format })
        .try_init()
        .map_err(|e| e.to_string())?;
    std::panic::set_hook(Box::new(log_panic));
    Ok(())
}

/// A panic as one error line: `msg=panicked`, the thread, where, what, and the backtrace when
/// `RUST_BACKTRACE` asks for one.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let error = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(thread, location, error, backtrace = %backtrace, "panicked");
    } else {
        tracing::error!(thread, location, error, "panicked");
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

/// One line per event in `format`: `time`, `level`, `target`, `msg`, then the event's fields.
struct Line {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events bridged from the `log` crate (reqwest, rustls) carry their real target in
        // `log.*` fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let level = meta.level().as_str().to_ascii_lowercase();
        let mut line = Vec::with_capacity(fields.values.len() + 4);
        line.push(("time".to_owned(), Value::Text(time)));
        line.push(("level".to_owned(), Value::Text(level)));
        line.push(("target".to_owned(), Value::Text(meta.target().to_owned())));
        if let Some(message) = fields.message {
            line.push(("msg".to_owned(), Value::Text(message)));
        }
        line.extend(fields.values);
        let text = match self.format {
            LogFormat::Logfmt => logfmt_line(&line),
            LogFormat::Json => json_line(&line),
        };
        writeln!(writer, "{text}")
    }
}

/// A field's value: numbers and booleans stay typed in JSON.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::UInt(n) => write!(f, "{n}"),
            Value::Float(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn logfmt_line(line: &[(String, Value)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in line.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{key}={}", quote(&value.to_string()));
    }
    out
}

fn json_line(line: &[(String, Value)]) -> String {
    let mut object = String::from("{");
    for (i, (key, value)) in line.iter().enumerate() {
        if i > 0 {
            object.push(',');
        }
        let value = match value {
            Value::Text(s) => serde_json::Value::from(s.as_str()),
            Value::Int(n) => serde_json::Value::from(*n),
            Value::UInt(n) => serde_json::Value::from(*n),
            // NaN and infinities are no JSON numbers: written as text.
            Value::Float(n) => serde_json::Number::from_f64(*n)
                .map_or_else(|| serde_json::Value::from(n.to_string()), Into::into),
            Value::Bool(b) => serde_json::Value::from(*b),
        };
        let _ = write!(object, "{}:{value}", serde_json::Value::from(key.as_str()));
    }
    object.push('}');
    object
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    values: Vec<(String, Value)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, Value::Text(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, Value::Int(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, Value::UInt(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, Value::Float(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, Value::Bool(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, Value::Text(format!("{value:?}")));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => self.message = Some(value.to_string()),
            name if name.starts_with("log.") => {}
            name if RESERVED.contains(&name) => {
                self.values.push((format!("field_{name}"), value));
            }
            name => self.values.push((name.to_owned(), value)),
        }
    }
}

/// Quotes a logfmt value when it needs it.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(quote("sms-main"), "sms-main");
        assert_eq!(quote("poll failed"), "\"poll failed\"");
        assert_eq!(quote("a=b"), "\"a=b\"");
        assert_eq!(quote(""), "\"\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    /// What the formatter writes for the events `log` emits, one string per line.
    fn lines(format: LogFormat, log: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_writer(move || writer.clone())
            .event_format(Line { format })
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn sample() {
        tracing::warn!(
            account = "sms-main",
            attempts = 3u64,
            offset = -2i64,
            tls = false,
            error = %"said \"no\"\nthen hung up",
            time = "a field called time",
            "poll failed"
        );
    }

    #[test]
    fn logfmt_and_json_lines_have_the_same_keys_in_the_same_order() {
        let logfmt = lines(LogFormat::Logfmt, sample);
        let json = lines(LogFormat::Json, sample);
        assert_eq!((logfmt.len(), json.len()), (1, 1), "{logfmt:?} {json:?}");
        let logfmt_keys: Vec<&str> = logfmt[0]
            .split(' ')
            .filter_map(|pair| pair.split_once('=').map(|(k, _)| k))
            .filter(|k| !k.contains('"'))
            .collect();
        let keys = [
            "time",
            "level",
            "target",
            "msg",
            "account",
            "attempts",
            "offset",
            "tls",
            "error",
            "field_time",
        ];
        assert_eq!(logfmt_keys, keys, "{}", logfmt[0]);
        let object: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        let json_keys: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| object.get(k).is_some())
            .collect();
        assert_eq!(json_keys, keys, "{}", json[0]);
        assert_eq!(object.as_object().unwrap().len(), keys.len(), "{}", json[0]);
        // The order on the line, not only the set.
        let positions: Vec<usize> = keys
            .iter()
            .map(|k| json[0].find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{}", json[0]);
    }

    #[test]
    fn levels_are_lowercase_and_values_escaped_in_both_formats() {
        let logfmt = &lines(LogFormat::Logfmt, sample)[0];
        assert!(logfmt.contains(" level=warn "), "{logfmt}");
        assert!(logfmt.contains(" msg=\"poll failed\" "), "{logfmt}");
        assert!(
            logfmt.contains(r#"error="said \"no\"\nthen hung up""#),
            "{logfmt}"
        );
        let time = logfmt
            .strip_prefix("time=")
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{logfmt}");

        let json: serde_json::Value =
            serde_json::from_str(&lines(LogFormat::Json, sample)[0]).unwrap();
        assert_eq!(json["level"], "warn");
        assert_eq!(json["msg"], "poll failed");
        assert_eq!(json["error"], "said \"no\"\nthen hung up");
        assert_eq!(json["attempts"], 3);
        assert_eq!(json["offset"], -2);
        assert_eq!(json["tls"], false);
        assert_eq!(json["field_time"], "a field called time");
        assert!(humantime::parse_rfc3339(json["time"].as_str().unwrap()).is_ok());
        assert_eq!(json["target"], module_path!());
    }

    #[test]
    fn a_panic_is_one_error_line() {
        let json = lines(LogFormat::Json, || {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(log_panic));
            let _ = std::panic::catch_unwind(|| panic!("the \"ledger\" is {}", "gone"));
            std::panic::set_hook(previous);
        });
        assert_eq!(json.len(), 1, "{json:?}");
        let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "panicked");
        assert_eq!(v["error"], "the \"ledger\" is gone");
        assert!(
            v["location"]
                .as_str()
                .unwrap()
                .starts_with("src/logging.rs:"),
            "{v}"
        );
    }

    #[test]
    fn every_level_is_written_lowercase() {
        let log = || {
            tracing::error!("e");
            tracing::warn!("w");
            tracing::info!("i");
            tracing::debug!("d");
            tracing::trace!("t");
        };
        for format in [LogFormat::Logfmt, LogFormat::Json] {
            let levels: Vec<String> = lines(format, log)
                .iter()
                .map(|l| match format {
                    LogFormat::Logfmt => l.split(' ').nth(1).unwrap().to_owned(),
                    LogFormat::Json => {
                        let v: serde_json::Value = serde_json::from_str(l).unwrap();
                        format!("level={}", v["level"].as_str().unwrap())
                    }
                })
                .collect();
            assert_eq!(
                levels,
                [
                    "level=error",
                    "level=warn",
                    "level=info",
                    "level=debug",
                    "level=trace"
                ]
            );
        }
    }
}
