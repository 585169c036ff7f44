//! Configured kind names as `&'static str`, the type the snapshot, thresholds and metrics
//! use for kinds. Each distinct name is leaked once and handed out again for every later
//! config naming it, so reloads with the same kinds allocate nothing; the number of distinct
//! names over the process's life is capped, so a config reloaded with ever new names cannot
//! grow memory without bound.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Distinct kind names the process will ever take from configs.
pub const MAX_KINDS: usize = 512;
/// The longest kind name: it is a label value.
pub const MAX_KIND_LEN: usize = 64;

// Append-only and bounded: the one process-wide table, because `&'static str` outlives any
// config or scheduler that could own it.
static INTERNED: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// Whether `name` is fit for a `kind` label: lower-case ASCII letters, digits and `_`,
/// starting with a letter, at most [`MAX_KIND_LEN`] bytes.
pub fn is_kind_name(name: &str) -> bool {
    name.len() <= MAX_KIND_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The one `&'static str` for `name`, or why it cannot be a kind.
pub fn intern(name: &str) -> Result<&'static str, String> {
    if !is_kind_name(name) {
        return Err(format!(
            "{name:?} is not a kind name: lower-case letters, digits and _, starting with a \
             letter, at most {MAX_KIND_LEN} characters"
        ));
    }
    let mut interned = crate::sync::lock(&INTERNED);
    if let Some(known) = interned.get(name) {
        return Ok(known);
    }
    if interned.len() >= MAX_KINDS {
        return Err(format!(
            "more than {MAX_KINDS} distinct kind names since the exporter started: restart it \
             to use new ones"
        ));
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    interned.insert(leaked);
    Ok(leaked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_is_the_same_str_and_costs_nothing_again() {
        let first = intern("wallet_main").unwrap();
        let before = crate::sync::lock(&INTERNED).len();
        for _ in 0..1000 {
            let again = intern(&String::from("wallet_main")).unwrap();
            assert!(std::ptr::eq(first, again));
        }
        assert_eq!(crate::sync::lock(&INTERNED).len(), before);
    }

    #[test]
    fn kind_names_are_label_safe() {
        for good in ["available", "on_hold", "a1", &"k".repeat(MAX_KIND_LEN)] {
            assert!(is_kind_name(good), "{good}");
        }
        for bad in [
            "",
            "Available",
            "1st",
            "_x",
            "on-hold",
            "on hold",
            "é",
            "a\"b",
            &"k".repeat(MAX_KIND_LEN + 1),
        ] {
            assert!(intern(bad).is_err(), "{bad}");
        }
    }
}
