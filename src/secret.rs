//! A credential read from the config. Its value can only be reached through
//! [`Secret::expose`], so that formatting a config, an error or a log line never prints it.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The raw value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Replaces every occurrence of any of `secrets` in `text`, for text that comes back from a
/// provider (an error message may echo what we sent).
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut out = text.to_owned();
    for secret in secrets {
        // Very short values would redact innocent text and reveal little anyway.
        if secret.0.len() >= 4 && out.contains(&secret.0) {
            out = out.replace(&secret.0, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn redact_replaces_echoed_secrets() {
        let secrets = [Secret::new("abcd1234")];
        assert_eq!(
            redact("bad key abcd1234 given", &secrets),
            "bad key <redacted> given"
        );
        assert_eq!(redact("nothing here", &secrets), "nothing here");
    }
}
