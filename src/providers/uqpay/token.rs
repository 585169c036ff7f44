//! The access token of one credential set, shared by every account that uses it.
//!
//! UQPay's acquiring line keeps one active token per API key: minting a new one logs out the
//! previous holder. So a token is minted lazily, cached in the scheduler's [`TokenSlots`]
//! (across polls, accounts and config reloads), refreshed shortly before it expires, and minted by one poll
//! at a time: the others wait on the slot's lock and take the fresh token.
//!
//! The slot holds no I/O: a poll locks it, asks for a usable token, mints one through its own
//! HTTP client if there is none, and stores the answer. Time is tokio's monotonic clock, so
//! the lifecycle can be run under paused time.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::MutexGuard;
use tokio::time::Instant;

use crate::providers::http::{MIN_PAUSE_CAP, later};
use crate::providers::{ErrorClass, ProviderError};
use crate::secret::Secret;

/// A token is replaced this long before it expires (the official SDKs' choice), or a quarter
/// of its lifetime when that is shorter.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The lifetime assumed when `expired_at` is missing, in the past or absurd on arrival.
pub const FALLBACK_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// A stated lifetime longer than this is taken for a unit or clock error.
pub const MAX_PLAUSIBLE_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// How long minting pauses after the token endpoint rate-limited us without `Retry-After`.
pub const MINT_BACKOFF: Duration = Duration::from_secs(30);
/// The longest the token endpoint can pause minting, whatever its `Retry-After` says. The slot
/// is shared by accounts of different poll intervals: the floor of every account's pause cap.
pub const MAX_MINT_PAUSE: Duration = MIN_PAUSE_CAP;

/// A token as the token endpoint gave it.
#[derive(Debug)]
pub struct Minted {
    pub value: Secret,
    pub lifetime: Lifetime,
}

/// How long a minted token lives, from when it was requested.
#[derive(Debug, Clone, PartialEq)]
pub enum Lifetime {
    /// As `expired_at` says.
    Stated(Duration),
    /// [`FALLBACK_LIFETIME`], because `expired_at` could not be believed (the reason).
    Fallback(String),
}

/// A cached token. Its value only leaves through [`Token::value`], onto the wire.
#[derive(Debug)]
pub struct Token {
    value: Secret,
    /// Tells a token apart from the one that replaced it.
    generation: u64,
    expires_at: Instant,
    refresh_at: Instant,
    /// Refused on the retry that follows a 401, right after it was minted: the key itself is
    /// refused rather than taken over by another process, so a later refusal is no news.
    refused_when_new: AtomicBool,
}

impl Token {
    pub fn value(&self) -> &Secret {
        &self.value
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Notes that the provider refused this token on the retry after a 401.
    pub fn mark_refused_when_new(&self) {
        self.refused_when_new.store(true, Ordering::Relaxed);
    }
}

/// Who holds the token of one credential set: base URL, client id and API key.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialKey {
    pub base_url: String,
    pub client_id: String,
    pub api_key: Secret,
}

impl CredentialKey {
    /// The credential set of an account's config.
    pub fn of(config: &super::Config) -> Self {
        CredentialKey {
            base_url: config.base_url.as_str().trim_end_matches('/').to_owned(),
            client_id: config.client_id.clone(),
            api_key: config.api_key.clone(),
        }
    }
}

impl Hash for CredentialKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.base_url.hash(state);
        self.client_id.hash(state);
        self.api_key.expose().hash(state);
    }
}

/// The token slots of every credential set in use: one per scheduler (in its
/// [`SharedState`](crate::providers::SharedState)), never process-wide. Weak: a credential set
/// no account uses any more is forgotten with its token; a reload builds the new providers
/// while the old ones still hold theirs, so the token carries over.
#[derive(Default)]
pub struct TokenSlots {
    slots: Mutex<HashMap<CredentialKey, Weak<TokenSlot>>>,
}

impl TokenSlots {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<CredentialKey, Weak<TokenSlot>>> {
        // Only weak handles: still consistent after a panic elsewhere.
        crate::sync::lock(&self.slots)
    }

    /// Forgets the mint pause of `key`'s slot, if it has one, keeping its token: a reload
    /// starts with a clean slate, and does not mint again while the token is valid.
    pub fn clear_mint_pause(&self, key: &CredentialKey) {
        let slot = self.slots().get(key).and_then(Weak::upgrade);
        if let Some(slot) = slot {
            *slot.pause() = None;
        }
    }

    /// The slot of `key`, shared by every account using it.
    pub fn slot_for(&self, key: CredentialKey) -> Arc<TokenSlot> {
        let mut slots = self.slots();
        if let Some(slot) = slots.get(&key).and_then(Weak::upgrade) {
            return slot;
        }
        slots.retain(|_, slot| slot.strong_count() > 0);
        let slot = Arc::new(TokenSlot::default());
        slots.insert(key, Arc::downgrade(&slot));
        slot
    }
}

/// The token of one credential set, and what the token endpoint last told us.
#[derive(Default)]
pub struct TokenSlot {
    state: tokio::sync::Mutex<SlotState>,
    /// The token endpoint rate-limited us: no mint before this instant. Outside `state`, so
    /// that a reload can clear it while a poll holds the slot.
    mint_paused_until: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct SlotState {
    token: Option<Arc<Token>>,
    generations: u64,
    fallback_logged: bool,
}

impl TokenSlot {
    /// Waits for the slot (another poll may be minting) until `deadline`.
    pub async fn lock(&self, deadline: Instant) -> Result<SlotGuard<'_>, ProviderError> {
        match tokio::time::timeout_at(deadline, self.state.lock()).await {
            Ok(state) => Ok(SlotGuard { slot: self, state }),
            Err(_) => Err(ProviderError::new(
                "timeout",
                ErrorClass::Transport,
                "no time left in this poll while another poll was minting the access token",
            )),
        }
    }

    fn pause(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A plain instant: still meaningful after a panic elsewhere.
        crate::sync::lock(&self.mint_paused_until)
    }
}

/// What [`SlotGuard::usable`] found.
#[derive(Debug)]
pub enum Usable {
    /// Use this one.
    Token(Arc<Token>),
    /// Mint a new one.
    Mint {
        /// The provider rejected the current token before its lifetime was over: someone
        /// else probably minted with the same API key.
        rejected_early: bool,
    },
}

/// The locked slot: one poll at a time decides whether to mint, and mints.
pub struct SlotGuard<'a> {
    slot: &'a TokenSlot,
    state: MutexGuard<'a, SlotState>,
}

impl SlotGuard<'_> {
    /// The cached token unless it is due for refresh or is `rejected` (the one a 401 answered).
    /// A rejected token that is still current is dropped; one already replaced by another
    /// poll is not held against its successor.
    pub fn usable(&mut self, rejected: Option<&Token>, now: Instant) -> Usable {
        let mut rejected_early = false;
        if let (Some(rejected), Some(current)) = (rejected, &self.state.token)
            && current.generation == rejected.generation
        {
            rejected_early =
                now < current.expires_at && !current.refused_when_new.load(Ordering::Relaxed);
            self.state.token = None;
        }
        match &self.state.token {
            Some(token) if now < token.refresh_at => Usable::Token(token.clone()),
            _ => Usable::Mint { rejected_early },
        }
    }

    /// An error, without a request, while the token endpoint's `Retry-After` runs; it
    /// carries the rest of the pause as its `retry_after`.
    pub fn check_mint_allowed(&self, now: Instant) -> Result<(), ProviderError> {
        let paused_until = *self.slot.pause();
        match paused_until {
            Some(until) if now < until => {
                let left = until.saturating_duration_since(now);
                Err(ProviderError::new(
                    "too_many_requests",
                    ErrorClass::RateLimit,
                    format!(
                        "the token endpoint asked to wait; next mint in {}s",
                        left.as_secs().max(1)
                    ),
                )
                .with_retry_after(Some(left))
                .final_attempt())
            }
            _ => Ok(()),
        }
    }

    /// Records the outcome of a mint requested at `requested_at` and returns the token to
    /// use. A failed refresh keeps using the old token while it is still valid.
    pub fn store(
        &mut self,
        minted: Result<Minted, ProviderError>,
        requested_at: Instant,
        account: &str,
    ) -> Result<Arc<Token>, ProviderError> {
        let now = Instant::now();
        let minted = match minted {
            Ok(minted) => minted,
            Err(error) => {
                if error.class == ErrorClass::RateLimit {
                    let pause = error.retry_after.unwrap_or(MINT_BACKOFF);
                    *self.slot.pause() = Some(later(now, pause.min(MAX_MINT_PAUSE)));
                }
                return match &self.state.token {
                    Some(token) if now < token.expires_at => {
                        tracing::warn!(
                            account,
                            code = %error.code,
                            "refreshing the access token failed; the current one is still valid"
                        );
                        Ok(token.clone())
                    }
                    _ => Err(error),
                };
            }
        };
        *self.slot.pause() = None;
        let lifetime = match minted.lifetime {
            Lifetime::Stated(lifetime) => lifetime.min(MAX_PLAUSIBLE_LIFETIME),
            Lifetime::Fallback(reason) => {
                if !std::mem::replace(&mut self.state.fallback_logged, true) {
                    tracing::warn!(
                        account,
                        reason = %reason,
                        fallback_seconds = FALLBACK_LIFETIME.as_secs(),
                        "the token's expired_at cannot be believed; assuming the fallback lifetime on the local clock"
                    );
                }
                FALLBACK_LIFETIME
            }
        };
        self.state.generations += 1;
        let token = Arc::new(Token {
            value: minted.value,
            generation: self.state.generations,
            expires_at: later(requested_at, lifetime),
            refresh_at: later(requested_at, lifetime - refresh_margin(lifetime)),
            refused_when_new: AtomicBool::new(false),
        });
        tracing::info!(
            account,
            expires_in_seconds = lifetime.as_secs(),
            "minted a new UQPay access token"
        );
        self.state.token = Some(token.clone());
        Ok(token)
    }
}

/// How long before expiry a token of `lifetime` is replaced.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    REFRESH_MARGIN.min(lifetime / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted(value: &str, lifetime: Duration) -> Result<Minted, ProviderError> {
        Ok(Minted {
            value: Secret::new(value),
            lifetime: Lifetime::Stated(lifetime),
        })
    }

    const HALF_HOUR: Duration = Duration::from_secs(1800);
    const FAR: Duration = Duration::from_secs(3600);

    fn slot() -> TokenSlot {
        TokenSlot::default()
    }

    async fn mint_into(slot: &TokenSlot, value: &str, lifetime: Duration) -> Arc<Token> {
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        guard
            .store(minted(value, lifetime), Instant::now(), "t")
            .unwrap()
    }

    fn is_token(usable: Usable, value: &str) -> bool {
        matches!(usable, Usable::Token(t) if t.value().expose() == value)
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_until_a_minute_before_it_expires() {
        let slot = slot();
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        assert!(matches!(
            guard.usable(None, Instant::now()),
            Usable::Mint {
                rejected_early: false
            }
        ));
        drop(guard);
        mint_into(&slot, "one", HALF_HOUR).await;
        tokio::time::advance(Duration::from_secs(29 * 60 - 1)).await;
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        assert!(is_token(guard.usable(None, Instant::now()), "one"));
        drop(guard);
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        assert!(matches!(
            guard.usable(None, Instant::now()),
            Usable::Mint { .. }
        ));
    }

    #[test]
    fn short_lifetimes_keep_three_quarters() {
        assert_eq!(refresh_margin(HALF_HOUR), REFRESH_MARGIN);
        assert_eq!(
            refresh_margin(Duration::from_secs(8)),
            Duration::from_secs(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_drops_only_the_current_token_and_tells_if_it_was_early() {
        let slot = slot();
        let first = mint_into(&slot, "one", HALF_HOUR).await;
        let second = mint_into(&slot, "two", HALF_HOUR).await;
        // A poll that still held the first token learns of the second, no mint, no warning.
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        assert!(is_token(guard.usable(Some(&first), Instant::now()), "two"));
        // The current one rejected ten minutes into its life: someone else minted.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(matches!(
            guard.usable(Some(&second), Instant::now()),
            Usable::Mint {
                rejected_early: true
            }
        ));
        // A token refused right after its mint: the key is refused, no takeover to warn of.
        drop(guard);
        let third = mint_into(&slot, "three", HALF_HOUR).await;
        third.mark_refused_when_new();
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        assert!(matches!(
            guard.usable(Some(&third), Instant::now()),
            Usable::Mint {
                rejected_early: false
            }
        ));
        // Dropped: even without a rejection it is not handed out again.
        assert!(matches!(
            guard.usable(None, Instant::now()),
            Usable::Mint {
                rejected_early: false
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_mint_pauses_minting_for_retry_after() {
        let slot = slot();
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        let limited = ProviderError::new("too_many_requests", ErrorClass::RateLimit, "slow down")
            .with_retry_after(Some(Duration::from_secs(20)));
        let error = guard.store(Err(limited), Instant::now(), "t").unwrap_err();
        assert_eq!(error.code, "too_many_requests");
        assert!(guard.check_mint_allowed(Instant::now()).is_err());
        tokio::time::advance(Duration::from_secs(19)).await;
        let refused = guard.check_mint_allowed(Instant::now()).unwrap_err();
        assert_eq!(refused.class, ErrorClass::RateLimit);
        assert!(!refused.is_retryable(), "waiting is the caller's business");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(guard.check_mint_allowed(Instant::now()).is_ok());
        // Without Retry-After, the default pause.
        let limited = ProviderError::new("too_many_requests", ErrorClass::RateLimit, "slow down");
        let _ = guard.store(Err(limited), Instant::now(), "t");
        tokio::time::advance(MINT_BACKOFF - Duration::from_secs(1)).await;
        assert!(guard.check_mint_allowed(Instant::now()).is_err());
        // Other failures do not pause minting.
        tokio::time::advance(Duration::from_secs(1)).await;
        let failed = ProviderError::new("http_502", ErrorClass::Server, "bad gateway");
        let _ = guard.store(Err(failed), Instant::now(), "t");
        assert!(guard.check_mint_allowed(Instant::now()).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hostile_retry_after_pauses_minting_ten_minutes_at_most() {
        for asked in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            crate::providers::http::MAX_RETRY_AFTER,
        ] {
            let slot = slot();
            let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
            let limited =
                ProviderError::new("too_many_requests", ErrorClass::RateLimit, "slow down")
                    .with_retry_after(Some(asked));
            let _ = guard.store(Err(limited), Instant::now(), "t");
            let refused = guard.check_mint_allowed(Instant::now()).unwrap_err();
            assert_eq!(refused.retry_after, Some(MAX_MINT_PAUSE), "{asked:?}");
            tokio::time::advance(MAX_MINT_PAUSE - Duration::from_secs(1)).await;
            assert!(guard.check_mint_allowed(Instant::now()).is_err());
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(
                guard.check_mint_allowed(Instant::now()).is_ok(),
                "{asked:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_stated_lifetime_is_capped_not_overflowed() {
        let slot = slot();
        let token = mint_into(&slot, "one", Duration::MAX).await;
        assert_eq!(token.expires_at, Instant::now() + MAX_PLAUSIBLE_LIFETIME);
    }

    #[tokio::test(start_paused = true)]
    async fn clearing_the_mint_pause_keeps_the_token() {
        let key = CredentialKey {
            base_url: "https://api.uqpay.com/api".into(),
            client_id: "c".into(),
            api_key: Secret::new("k"),
        };
        let slots = TokenSlots::default();
        let slot = slots.slot_for(key.clone());
        mint_into(&slot, "one", HALF_HOUR).await;
        // Due for refresh, the refresh rate-limited: the token is still valid and kept.
        tokio::time::advance(HALF_HOUR - Duration::from_secs(30)).await;
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        let limited = ProviderError::new("too_many_requests", ErrorClass::RateLimit, "slow down")
            .with_retry_after(Some(Duration::from_secs(300)));
        let kept = guard.store(Err(limited), Instant::now(), "t").unwrap();
        assert!(guard.check_mint_allowed(Instant::now()).is_err());
        // Cleared while a poll holds the slot, as a reload may.
        slots.clear_mint_pause(&key);
        assert!(guard.check_mint_allowed(Instant::now()).is_ok());
        assert_eq!(kept.value().expose(), "one");
        assert_eq!(guard.state.token.as_ref().map(|t| t.generation), Some(1));
        // A key no account uses is no slot; clearing it creates none.
        let unused = CredentialKey {
            api_key: Secret::new("unused"),
            ..key.clone()
        };
        slots.clear_mint_pause(&unused);
        assert!(!slots.slots().contains_key(&unused));
        // Another scheduler's slots know nothing of this token.
        let elsewhere = TokenSlots::default().slot_for(key);
        assert!(!Arc::ptr_eq(&slot, &elsewhere));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_still_valid_token() {
        let slot = slot();
        mint_into(&slot, "one", HALF_HOUR).await;
        tokio::time::advance(Duration::from_secs(29 * 60 + 30)).await;
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        assert!(matches!(
            guard.usable(None, Instant::now()),
            Usable::Mint { .. }
        ));
        let failed = ProviderError::new("http_503", ErrorClass::Server, "unavailable");
        let kept = guard
            .store(Err(failed.clone()), Instant::now(), "t")
            .unwrap();
        assert_eq!(kept.value().expose(), "one");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            guard
                .store(Err(failed), Instant::now(), "t")
                .unwrap_err()
                .code,
            "http_503",
            "an expired token is not handed out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fallback_lifetime_is_thirty_minutes_on_the_local_clock() {
        let slot = slot();
        let mut guard = slot.lock(Instant::now() + FAR).await.unwrap();
        let token = guard
            .store(
                Ok(Minted {
                    value: Secret::new("one"),
                    lifetime: Lifetime::Fallback("expired_at is in the past".into()),
                }),
                Instant::now(),
                "t",
            )
            .unwrap();
        assert_eq!(token.expires_at, Instant::now() + FALLBACK_LIFETIME);
        assert_eq!(
            token.refresh_at,
            Instant::now() + FALLBACK_LIFETIME - REFRESH_MARGIN
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_a_busy_slot_ends_at_the_deadline() {
        let slot = slot();
        let _held = slot.lock(Instant::now() + FAR).await.unwrap();
        let error = slot
            .lock(Instant::now() + Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(error.code, "timeout");
    }

    #[test]
    fn one_slot_per_credential_set() {
        let key = |client: &str, api_key: &str| CredentialKey {
            base_url: "https://api.uqpay.com/api".into(),
            client_id: client.into(),
            api_key: Secret::new(api_key),
        };
        let slots = TokenSlots::default();
        let a = slots.slot_for(key("c", "k"));
        let b = slots.slot_for(key("c", "k"));
        let other = slots.slot_for(key("c", "k2"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &other));
    }
}
