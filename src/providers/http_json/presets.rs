//! Built-in providers that are `http_json` plus defaults: data, not code. Each is registered
//! in `with_providers!` (its `presets` list) under its own `provider` name, reads its own
//! config keys, and is mapped onto the same [`super::Config`] as a hand-written `http_json`
//! account. Their simulators are in `sim.rs`.

use crate::error::ErrorClass;

/// One built-in provider as `http_json` data.
#[derive(Debug)]
pub struct Preset {
    /// The `provider` value in the config and the `provider` label.
    pub name: &'static str,
    pub default_base_url: &'static str,
    /// The API path; `{key}` stands for the value of plain key `key` (see [`Preset::keys`]).
    pub path: &'static str,
    /// Required plain (non-secret) keys: identifiers such as Twilio's `account_sid`.
    pub keys: &'static [&'static str],
    pub auth: PresetAuth,
    /// The currency of balances whose answer names none.
    pub currency: Option<&'static str>,
    pub balances: &'static [PresetBalance],
    /// Pointer to the provider's error code in a non-2xx answer.
    pub error_code: Option<&'static str>,
    /// The codes exported at 0 from the start, with their class.
    pub documented_errors: &'static [(&'static str, ErrorClass)],
    pub default_threshold_kind: &'static str,
}

/// How a preset authenticates, naming its keys.
#[derive(Debug)]
pub enum PresetAuth {
    /// HTTP Basic: the plain key `username`, the secret key `password`.
    Basic {
        username: &'static str,
        password: &'static str,
    },
    /// `Authorization: Bearer <secret key token>`.
    Bearer { token: &'static str },
}

#[derive(Debug)]
pub struct PresetBalance {
    pub kind: &'static str,
    pub amount: &'static str,
    pub currency: Option<&'static str>,
}

/// Twilio: `GET /2010-04-01/Accounts/{AccountSid}/Balance.json`, Basic `sid:token`; the answer
/// `{"account_sid":"AC...","balance":"12.34","currency":"USD"}` (a decimal string); errors
/// `{"code":20003,"message":"Authenticate","more_info":"...","status":401}`.
pub const TWILIO: Preset = Preset {
    name: "twilio",
    default_base_url: "https://api.twilio.com",
    path: "/2010-04-01/Accounts/{account_sid}/Balance.json",
    keys: &["account_sid"],
    auth: PresetAuth::Basic {
        username: "account_sid",
        password: "auth_token",
    },
    currency: None,
    balances: &[PresetBalance {
        kind: "available",
        amount: "/balance",
        currency: Some("/currency"),
    }],
    error_code: Some("/code"),
    documented_errors: &[
        // Authentication failed (wrong SID or token, or a suspended account).
        ("20003", ErrorClass::Auth),
        // The resource was not found: an account SID that is not the credentials'.
        ("20404", ErrorClass::Client),
        ("20429", ErrorClass::RateLimit),
        ("20500", ErrorClass::Server),
    ],
    default_threshold_kind: "available",
};

/// Telnyx: `GET /v2/balance`, Bearer API key; the answer `{"data":{"balance":"300.00",
/// "credit_limit":"100.00","available_credit":"400.00","pending":"10.00","currency":"USD",
/// "record_type":"balance"}}`; errors `{"errors":[{"code":"10009","title":...}]}`.
pub const TELNYX: Preset = Preset {
    name: "telnyx",
    default_base_url: "https://api.telnyx.com",
    path: "/v2/balance",
    keys: &[],
    auth: PresetAuth::Bearer { token: "api_key" },
    currency: None,
    balances: &[
        PresetBalance {
            kind: "balance",
            amount: "/data/balance",
            currency: Some("/data/currency"),
        },
        PresetBalance {
            kind: "credit_limit",
            amount: "/data/credit_limit",
            currency: Some("/data/currency"),
        },
        // balance + credit limit: what can be spent, so what thresholds watch by default.
        PresetBalance {
            kind: "available",
            amount: "/data/available_credit",
            currency: Some("/data/currency"),
        },
        PresetBalance {
            kind: "pending",
            amount: "/data/pending",
            currency: Some("/data/currency"),
        },
    ],
    error_code: Some("/errors/0/code"),
    documented_errors: &[
        ("10007", ErrorClass::Server),
        ("10009", ErrorClass::Auth),
        ("10010", ErrorClass::Auth),
        ("10011", ErrorClass::RateLimit),
    ],
    default_threshold_kind: "available",
};

/// Vonage: `GET https://rest.nexmo.com/account/get-balance`, Basic `api_key:api_secret` (as the
/// official SDK sends it); the answer `{"value":10.28,"autoReload":false}`, a number in EUR.
/// Errors carry no code of their own that the references agree on: `http_<status>`.
pub const VONAGE: Preset = Preset {
    name: "vonage",
    default_base_url: "https://rest.nexmo.com",
    path: "/account/get-balance",
    keys: &["api_key"],
    auth: PresetAuth::Basic {
        username: "api_key",
        password: "api_secret",
    },
    currency: Some("EUR"),
    balances: &[PresetBalance {
        kind: "available",
        amount: "/value",
        // No reference shows one, but an answer naming its currency is believed.
        currency: Some("/currency"),
    }],
    error_code: None,
    documented_errors: &[
        ("http_401", ErrorClass::Auth),
        ("http_429", ErrorClass::RateLimit),
        ("http_500", ErrorClass::Server),
    ],
    default_threshold_kind: "available",
};
