//! RFC 6901 JSON pointers, resolved over the answer's raw text so that numbers keep their
//! exact digits (a `serde_json::Value` would have turned them into `f64`).

use std::collections::HashMap;
use std::fmt;

use serde_json::value::RawValue;

/// Longest pointer accepted in the config, and most reference tokens in it.
pub const MAX_POINTER_LEN: usize = 256;
pub const MAX_TOKENS: usize = 32;

/// A parsed pointer: its text as written (for messages) and its unescaped reference tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.text.is_empty() {
            f.write_str("\"\" (the whole document)")
        } else {
            f.write_str(&self.text)
        }
    }
}

impl Pointer {
    /// Parses `text`: empty (the whole document) or `/`-separated tokens in which `~` only
    /// appears as `~0` (`~`) or `~1` (`/`).
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.len() > MAX_POINTER_LEN {
            return Err(format!("a JSON pointer of at most {MAX_POINTER_LEN} bytes"));
        }
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "{text:?} is not a JSON pointer: it must start with / (RFC 6901)"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            tokens.push(unescape(raw).ok_or_else(|| {
                format!("{text:?} is not a JSON pointer: ~ must be followed by 0 or 1 (RFC 6901)")
            })?);
        }
        if tokens.len() > MAX_TOKENS {
            return Err(format!(
                "{text:?} has more than {MAX_TOKENS} reference tokens"
            ));
        }
        Ok(Pointer {
            text: text.to_owned(),
            tokens,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value the pointer names in `document`, or `None` when it names nothing (a missing
    /// key, an index past the end, `-`, or a step into a number or string). `Err` only for
    /// text that is not JSON on the way.
    pub fn resolve<'a>(&self, document: &'a RawValue) -> Result<Option<&'a RawValue>, String> {
        let mut current = document;
        for token in &self.tokens {
            let text = current.get().trim_start();
            let next = if text.starts_with('{') {
                // The last of repeated keys wins, as in most JSON readers.
                let object: HashMap<String, &'a RawValue> =
                    serde_json::from_str(current.get()).map_err(|e| e.to_string())?;
                object.get(token.as_str()).copied()
            } else if text.starts_with('[') {
                match array_index(token) {
                    Some(index) => {
                        let array: Vec<&'a RawValue> =
                            serde_json::from_str(current.get()).map_err(|e| e.to_string())?;
                        array.get(index).copied()
                    }
                    None => None,
                }
            } else {
                None
            };
            match next {
                Some(value) => current = value,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }
}

/// `~1` is `/` and `~0` is `~`, decoded in that order so that `~01` is `~1`; `None` for any
/// other `~`.
fn unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// An array index as RFC 6901 writes it: `0` or digits without a leading zero. `-` (the
/// element after the last) and anything else name no element.
fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// The text of a resolved JSON string, or of any other value as it was written (`true`,
/// `12`), for comparisons with configured text and for codes.
pub fn scalar_text(value: &RawValue) -> Option<String> {
    let text = value.get().trim();
    if text.starts_with('"') {
        serde_json::from_str::<String>(text).ok()
    } else if text.starts_with(['{', '[']) || text == "null" {
        None
    } else {
        Some(text.to_owned())
    }
}
