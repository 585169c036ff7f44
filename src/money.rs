//! Amounts from the wire, read as decimals from their exact JSON text.
//!
//! Going through `f64` would turn `897993.88` into `897993.8799999`; the text is parsed
//! directly instead, and only the gauge sees a float.

use rust_decimal::Decimal;
use serde_json::value::RawValue;

/// Reads an amount given as a JSON string (`"12.30"`) or number (`12.3`, `1.2e3`).
/// `None`, `null` and `""` are "no amount", never zero.
pub fn parse_amount(raw: Option<&RawValue>) -> Result<Option<Decimal>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let text = raw.get().trim();
    if text == "null" {
        return Ok(None);
    }
    let number = if text.starts_with('"') {
        let s: String = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let s = s.trim().to_owned();
        if s.is_empty() {
            return Ok(None);
        }
        s
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.to_owned()
    } else {
        return Err(format!("expected an amount, found {}", truncate(text)));
    };
    decimal_from_text(&number)
        .map(Some)
        .ok_or_else(|| format!("{} is not a decimal amount in range", truncate(&number)))
}

/// Parses plain (`-12.34`) or scientific (`1.5E+3`) decimal text exactly.
pub fn decimal_from_text(text: &str) -> Option<Decimal> {
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str_exact(text).ok()
    }
}

/// Converts a decimal to the gauge's float; the only place money becomes `f64`.
pub fn to_gauge(amount: Decimal) -> f64 {
    use rust_decimal::prelude::ToPrimitive;
    amount.to_f64().unwrap_or(f64::NAN)
}

fn truncate(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    fn amount(text: &str) -> Result<Option<Decimal>, String> {
        parse_amount(Some(&raw(text)))
    }

    #[test]
    fn numbers_keep_their_exact_digits() {
        assert_eq!(
            amount("897993.88").unwrap().unwrap().to_string(),
            "897993.88"
        );
        assert_eq!(
            amount("\"-12.3400\"").unwrap().unwrap().to_string(),
            "-12.3400"
        );
        assert_eq!(amount("1.5e3").unwrap().unwrap(), Decimal::from(1500));
        assert_eq!(amount("2").unwrap().unwrap(), Decimal::from(2));
    }

    #[test]
    fn absent_is_not_zero() {
        assert_eq!(parse_amount(None).unwrap(), None);
        assert_eq!(amount("null").unwrap(), None);
        assert_eq!(amount("\"\"").unwrap(), None);
        assert_eq!(amount("\"  \"").unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(amount("true").is_err());
        assert!(amount("\"12,5\"").is_err());
        assert!(amount("{}").is_err());
        assert!(amount("1e400").is_err());
        assert!(amount("123456789012345678901234567890123").is_err());
    }

    #[test]
    fn gauge_conversion() {
        assert_eq!(to_gauge(Decimal::new(123456, 4)), 12.3456);
    }
}
