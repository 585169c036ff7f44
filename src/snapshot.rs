//! What one successful poll of an account found: the data the metrics are made of.

use rust_decimal::Decimal;

/// Balances and account facts of one account at one moment. Replaces the previous snapshot of
/// the account as a whole, so a currency the provider stops returning disappears.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub balances: Vec<Balance>,
    /// Account status per currency (`ACTIVE`...), where the provider reports one.
    pub statuses: Vec<AccountStatus>,
    /// Provider-side totals converted into one currency (Onerway's overview).
    pub overviews: Vec<Overview>,
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
        if self
            .balances
            .iter()
            .any(|b| b.currency == currency && b.kind == kind)
        {
            return;
        }
        self.balances.push(Balance {
            currency,
            kind,
            amount,
        });
    }

    /// The currencies present, sorted and without repeats.
    pub fn currencies(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.balances.iter().map(|b| b.currency.as_str()).collect();
        out.sort_unstable();
        out.dedup();
        out
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
        s.add("USD", "gift", None);
        assert_eq!(s.balances.len(), 1);
        assert_eq!(s.balances[0].currency, "USD");
        assert_eq!(s.balances[0].amount, Decimal::new(15, 1));
        assert_eq!(s.currencies(), vec!["USD"]);
    }
}
