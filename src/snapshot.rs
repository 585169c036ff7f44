//! What one successful poll of an account found: the data the metrics are made of.

use std::collections::HashSet;

use rust_decimal::Decimal;

use crate::error::{ErrorClass, ProviderError, codes};

/// Balances and account facts of one account at one moment. Replaces the previous snapshot of
/// the account as a whole, so a currency the provider stops returning disappears.
///
/// Balances go in through [`Snapshot::add`] only: it keeps the index of what is present.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// In the order the provider listed them, each currency and kind once.
    pub balances: Vec<Balance>,
    /// Account status per currency (`ACTIVE`...), where the provider reports one.
    pub statuses: Vec<AccountStatus>,
    /// Provider-side totals converted into one currency (Onerway's overview).
    pub overviews: Vec<Overview>,
    /// `(currency, kind)` of every balance: a hostile answer listing tens of thousands of
    /// balances is merged in linear time, not by scanning `balances` for each one.
    present: HashSet<(String, &'static str)>,
}

/// The index is derived from `balances`, so it takes no part in equality.
impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.balances == other.balances
            && self.statuses == other.statuses
            && self.overviews == other.overviews
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Balance {
    pub currency: String,
    /// A kind of the provider (`total`, `available`...), the `kind` label.
    pub kind: &'static str,
    pub amount: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountStatus {
    pub currency: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Overview {
    pub currency: String,
    pub amount: Decimal,
}

impl Snapshot {
    /// Adds a balance; an amount of `None` (absent on the wire) adds nothing. A currency and
    /// kind already present keeps its first amount: providers may list a currency twice.
    pub fn add(&mut self, currency: &str, kind: &'static str, amount: Option<Decimal>) {
        let Some(amount) = amount else { return };
        let currency = currency.trim().to_ascii_uppercase();
        if !self.present.insert((currency.clone(), kind)) {
            return;
        }
        self.balances.push(Balance {
            currency,
            kind,
            amount,
        });
    }

    /// Whether a balance of `currency` and `kind` is present (`currency` as exported).
    pub fn has(&self, currency: &str, kind: &'static str) -> bool {
        self.present.contains(&(currency.to_owned(), kind))
    }

    /// The currencies present, sorted and without repeats.
    pub fn currencies(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.balances.iter().map(|b| b.currency.as_str()).collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Refuses a snapshot naming more than `max_currencies` distinct currencies (balances,
    /// statuses and overviews together): each currency is a handful of series, and a provider
    /// must not be able to create them without bound. Code `too_many_currencies`, class
    /// `decode`.
    pub fn check_currencies(&self, max_currencies: usize) -> Result<(), ProviderError> {
        let distinct: HashSet<&str> = self
            .balances
            .iter()
            .map(|b| b.currency.as_str())
            .chain(self.statuses.iter().map(|s| s.currency.as_str()))
            .chain(self.overviews.iter().map(|o| o.currency.as_str()))
            .collect();
        if distinct.len() <= max_currencies {
            return Ok(());
        }
        Err(ProviderError::new(
            codes::TOO_MANY_CURRENCIES,
            ErrorClass::Decode,
            format!(
                "the answer names {} currencies, more than max_currencies ({max_currencies}); \
                 the previous balances stay",
                distinct.len()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_amounts_add_nothing_and_repeats_keep_the_first() {
        let mut s = Snapshot::default();
        s.add("usd", "total", Some(Decimal::new(15, 1)));
        s.add("USD", "total", Some(Decimal::new(99, 0)));
        s.add(" Usd ", "total", Some(Decimal::new(7, 0)));
        s.add("USD", "gift", None);
        assert_eq!(s.balances.len(), 1);
        assert_eq!(s.balances[0].currency, "USD");
        assert_eq!(s.balances[0].amount, Decimal::new(15, 1));
        assert_eq!(s.currencies(), vec!["USD"]);
        assert!(s.has("USD", "total"));
        assert!(!s.has("USD", "gift"), "an absent amount is no balance");
    }

    #[test]
    fn balances_keep_the_order_listed_with_the_first_of_each_currency_and_kind() {
        let mut s = Snapshot::default();
        for (currency, kind, amount) in [
            ("EUR", "available", 1),
            ("usd", "available", 2),
            ("EUR", "frozen", 3),
            ("eur", "available", 4),
            ("AED", "available", 5),
            ("USD", "available", 6),
        ] {
            s.add(currency, kind, Some(Decimal::from(amount)));
        }
        let listed: Vec<(&str, &str, i64)> = s
            .balances
            .iter()
            .map(|b| {
                (
                    b.currency.as_str(),
                    b.kind,
                    i64::try_from(b.amount).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("EUR", "available", 1),
                ("USD", "available", 2),
                ("EUR", "frozen", 3),
                ("AED", "available", 5)
            ]
        );
        assert_eq!(s.currencies(), ["AED", "EUR", "USD"]);
    }

    /// A hostile-sized answer, every balance listed twice: each is kept once, with its first
    /// amount. (With the former scan per add, this alone took seconds.)
    #[test]
    fn merging_many_balances_keeps_each_once() {
        let mut s = Snapshot::default();
        for round in 0..2 {
            for i in 0..50_000u32 {
                s.add(&format!("C{i:05}"), "available", Some(Decimal::from(round)));
            }
        }
        assert_eq!(s.balances.len(), 50_000);
        assert!(s.balances.iter().all(|b| b.amount == Decimal::ZERO));
    }

    #[test]
    fn more_currencies_than_allowed_is_refused_with_its_own_code() {
        let mut s = Snapshot::default();
        for c in ["AED", "EUR", "USD"] {
            s.add(c, "available", Some(Decimal::ONE));
            s.add(c, "frozen", Some(Decimal::ONE));
        }
        assert_eq!(
            s.check_currencies(3),
            Ok(()),
            "kinds do not count, currencies do"
        );
        let error = s.check_currencies(2).unwrap_err();
        assert_eq!(error.code, codes::TOO_MANY_CURRENCIES);
        assert_eq!(error.class, ErrorClass::Decode);
        assert!(error.message.contains("3 currencies"), "{}", error.message);

        // A status in a currency with no balance names a currency too.
        s.statuses.push(AccountStatus {
            currency: "GBP".into(),
            status: "ACTIVE".into(),
        });
        assert!(s.check_currencies(3).is_err());
        assert_eq!(s.check_currencies(4), Ok(()));
    }

    #[test]
    fn equality_ignores_how_balances_were_merged() {
        let mut a = Snapshot::default();
        a.add("USD", "total", Some(Decimal::ONE));
        let mut b = a.clone();
        b.add("USD", "total", Some(Decimal::TEN));
        assert_eq!(a, b);
        b.add("EUR", "total", Some(Decimal::TEN));
        assert_ne!(a, b);
    }
}
