//! A credential read from the config. Its value can only be reached through
//! [`Secret::expose`], so that formatting a config, an error or a log line never prints it.
//!
//! Text that comes back from a provider may echo a credential, as it was sent or encoded;
//! [`redact`] removes every form of it (see [`forms`]) before the text is logged, shown or
//! made a label value.

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What stands in for a secret in redacted text.
pub const REDACTED: &str = "<redacted>";

/// Shorter values (and shorter cut-off pieces of a value) are not looked for: they would
/// redact innocent text and reveal little anyway.
const MIN_LEN: usize = 4;

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
        f.write_str(REDACTED)
    }
}

/// The forms in which `value` may come back in a provider's text: as it is, base64 (standard
/// and URL-safe alphabets, with and without padding: a Basic `Authorization` header carries
/// `base64(user:password)`), and percent-encoded (a URL or form body).
fn forms(value: &str) -> Vec<String> {
    let bytes = value.as_bytes();
    let mut out = vec![value.to_owned()];
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        out.push(engine.encode(bytes));
    }
    out.push(percent_encoded(value));
    out.sort();
    out.dedup();
    out
}

/// Every byte outside the URL's unreserved set as `%XX`.
fn percent_encoded(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The byte ranges of `text` that reveal one of `secrets`, in any of its forms, compared
/// without regard to ASCII case (a provider may upper-case what it echoes). Text cut off in
/// the middle of a secret (a provider's message truncated to a length) ends with a piece of
/// it: that piece counts too. Sorted and merged.
fn revealing(text: &str, secrets: &[Secret]) -> Vec<Range<usize>> {
    // ASCII lower-casing keeps every byte where it is, so ranges found in `lower` are ranges
    // of `text`, on character boundaries (a UTF-8 needle only matches whole characters).
    let lower = text.to_ascii_lowercase();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for secret in secrets.iter().filter(|s| s.0.len() >= MIN_LEN) {
        for form in forms(&secret.0) {
            let needle = form.to_ascii_lowercase();
            // Overlapping occurrences too: the next search starts one character further.
            let step = needle.chars().next().map_or(1, char::len_utf8);
            let mut from = 0;
            while let Some(at) = lower[from..].find(&needle) {
                let start = from + at;
                ranges.push(start..start + needle.len());
                from = start + step;
            }
            if let Some(start) = cut_off_at_end(&lower, &needle) {
                ranges.push(start..lower.len());
            }
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    merged
}

/// Where `text` ends with the beginning of `needle` (at least [`MIN_LEN`] bytes of it, and
/// less than all of it): the start of the longest such piece.
fn cut_off_at_end(text: &str, needle: &str) -> Option<usize> {
    if text.len() < MIN_LEN {
        return None;
    }
    let first = *needle.as_bytes().first()?;
    let longest = needle.len().saturating_sub(1).min(text.len());
    let earliest = text.len() - longest;
    (earliest..=text.len().saturating_sub(MIN_LEN))
        .filter(|&i| text.as_bytes()[i] == first && text.is_char_boundary(i))
        .find(|&i| needle.starts_with(&text[i..]))
}

/// `text` with every occurrence of any of `secrets` (in any form, see [`revealing`])
/// replaced by [`REDACTED`], for text that comes back from a provider.
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let ranges = revealing(text, secrets);
    if ranges.is_empty() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for range in ranges {
        out.push_str(&text[copied..range.start]);
        out.push_str(REDACTED);
        copied = range.end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Whether `text` reveals any of `secrets` (what [`redact`] would change).
pub fn reveals(text: &str, secrets: &[Secret]) -> bool {
    !revealing(text, secrets).is_empty()
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
        assert!(!reveals("nothing here", &secrets));
        // Too short to look for.
        assert_eq!(redact("a b c", &[Secret::new("b")]), "a b c");
    }

    #[test]
    fn encoded_and_upper_cased_forms_are_redacted_too() {
        let secret = "s3cr3t/value+x?";
        let secrets = [
            Secret::new(secret),
            Secret::new(format!("dev-key:{secret}")),
        ];
        let basic = STANDARD.encode(format!("dev-key:{secret}"));
        for echoed in [
            secret.to_owned(),
            secret.to_ascii_uppercase(),
            STANDARD.encode(secret),
            STANDARD_NO_PAD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            percent_encoded(secret),
            format!("Basic {basic}"),
            format!("dev-key:{secret}"),
        ] {
            let text = format!("401: you sent {echoed}, which is wrong");
            let redacted = redact(&text, &secrets);
            assert!(reveals(&text, &secrets), "{text}");
            assert!(
                !redacted.contains(&echoed),
                "{echoed} survives in {redacted}"
            );
            assert!(
                redacted.starts_with("401: you sent ") && redacted.ends_with(", which is wrong")
            );
        }
        assert_eq!(
            redact(&format!("Authorization: Basic {basic}"), &secrets),
            "Authorization: Basic <redacted>"
        );
    }

    #[test]
    fn a_secret_cut_off_at_the_end_is_redacted() {
        let secrets = [Secret::new("0123456789abcdef")];
        assert_eq!(redact("key 0123456", &secrets), "key <redacted>");
        // Three characters reveal little and often match innocent text.
        assert_eq!(redact("key 012", &secrets), "key 012");
        assert_eq!(redact("012", &secrets), "012");
        assert_eq!(redact("", &secrets), "");
    }

    #[test]
    fn overlapping_and_repeated_occurrences_leave_nothing() {
        let secrets = [Secret::new("abab")];
        assert_eq!(redact("xabababx abab", &secrets), "x<redacted>x <redacted>");
        // Multi-byte text around and inside the secret: no panic, whole characters.
        let secrets = [Secret::new("clé-secrète")];
        assert_eq!(redact("é clé-secrète é", &secrets), "é <redacted> é");
        assert_eq!(redact("é CLé-secr", &secrets), "é <redacted>");
    }
}
