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

/// The ISO 4217 exponent of a currency (its minor units: JPY 0, USD 2, KWD 3, CLF 4), or
/// `None` for a code ISO 4217 does not list with minor units (unknown codes, XAU, XDR, ...).
/// Used to read amounts sent in minor units and to show amounts with their currency's digits.
pub fn minor_units(currency: &str) -> Option<u32> {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    const FOUR: &[&str] = &["CLF", "UYW"];
    const TWO: &[&str] = &[
        "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
        "BGN", "BMD", "BND", "BOB", "BOV", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF",
        "CHE", "CHF", "CHW", "CNY", "COP", "COU", "CRC", "CUC", "CUP", "CVE", "CZK", "DKK", "DOP",
        "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GTQ",
        "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IRR", "JMD", "KES", "KGS", "KHR",
        "KPW", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "MAD", "MDL", "MGA", "MKD", "MMK",
        "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MXV", "MYR", "MZN", "NAD", "NGN", "NIO",
        "NOK", "NPR", "NZD", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB",
        "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SLL", "SOS", "SRD", "SSP", "STN",
        "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "USD",
        "USN", "UYU", "UZS", "VED", "VES", "WST", "XCD", "XCG", "YER", "ZAR", "ZMW", "ZWG", "ZWL",
    ];
    let listed = |table: &[&str]| table.contains(&currency);
    if listed(TWO) {
        Some(2)
    } else if listed(ZERO) {
        Some(0)
    } else if listed(THREE) {
        Some(3)
    } else if listed(FOUR) {
        Some(4)
    } else {
        None
    }
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
    fn minor_units_follow_iso_4217() {
        assert_eq!(minor_units("JPY"), Some(0));
        assert_eq!(minor_units("USD"), Some(2));
        assert_eq!(minor_units("KWD"), Some(3));
        assert_eq!(minor_units("CLF"), Some(4));
        assert_eq!(minor_units("XAU"), None);
        assert_eq!(minor_units("usd"), None);
    }

    #[test]
    fn gauge_conversion() {
        assert_eq!(to_gauge(Decimal::new(123456, 4)), 12.3456);
    }
}
