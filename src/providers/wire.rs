//! Small helpers for reading provider answers that several providers need.

use serde::{Deserialize, Deserializer};

/// A code the provider writes as a string or as a number (`"40006"` or `40006`), kept as
/// its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireCode(pub String);

impl WireCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for WireCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Uint(u64),
        }
        Ok(WireCode(match Raw::deserialize(d)? {
            Raw::Text(s) => s.trim().to_owned(),
            Raw::Int(n) => n.to_string(),
            Raw::Uint(n) => n.to_string(),
        }))
    }
}

pub use crate::error::label_text;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_as_strings_or_numbers() {
        let code = |json: &str| serde_json::from_str::<WireCode>(json).map(|c| c.0);
        assert_eq!(code(r#""40006""#).unwrap(), "40006");
        assert_eq!(code("20000").unwrap(), "20000");
        assert_eq!(code(r#"" 200 ""#).unwrap(), "200");
        assert!(code("true").is_err());
        assert!(code("1.5").is_err());
    }

    #[test]
    fn label_text_is_bounded_and_printable() {
        assert_eq!(label_text(" ACTIVE\n"), "ACTIVE");
        assert_eq!(label_text(&"x".repeat(100)).len(), 64);
    }
}
