//! `--web.config.file`: TLS, basic authentication and extra response headers for the
//! exporter's own endpoints, read from the Prometheus exporter-toolkit web configuration format
//! so that users can reuse the file they already have. Keys of that format this exporter does
//! not implement are refused by name, never ignored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use figment::value::Value;
use hyper::header::{AUTHORIZATION, HeaderName, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
};
use tokio::sync::Semaphore;

use crate::config::{self, ConfigError, ConfigErrors, Fields, Format, Problems};
use crate::listener::{Handler, response};

/// Headers that may be configured, with the values allowed (any value when empty): the same
/// fixed set of security headers as the exporter-toolkit, so files stay interchangeable.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

/// Remembered outcomes of password checks, of each kind.
const VERDICT_CACHE_SIZE: usize = 100;
/// Password checks not answered from the cache that may be under way at once (one hashing,
/// the others waiting for their turn); one more is refused with 429 at once. A flood of
/// wrong passwords then costs one core at most and cannot build a queue in front of anyone.
const UNCACHED_CHECKS: usize = 4;

/// The web configuration; the default serves plain HTTP to anyone, with no extra headers.
#[derive(Default)]
pub struct WebConfig {
    /// Serve over TLS with this configuration.
    pub tls: Option<Arc<ServerConfig>>,
    auth: Option<Arc<BasicAuth>>,
    headers: Arc<Vec<(HeaderName, HeaderValue)>>,
}

/// A web configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: invalid web configuration:\n{errors}")]
pub struct WebConfigError {
    pub file: String,
    pub errors: ConfigErrors,
}

/// Reads and validates the web configuration file at `path`; relative file names in it are
/// resolved against its directory.
pub fn load(path: &Path) -> Result<WebConfig, WebConfigError> {
    let fail = |errors| WebConfigError {
        file: path.display().to_string(),
        errors,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read the file: {e}"),
        }]))
    })?;
    parse(&text, path.parent().unwrap_or(Path::new("."))).map_err(fail)
}

/// Parses and validates web configuration text (YAML).
pub fn parse(text: &str, base_dir: &Path) -> Result<WebConfig, ConfigErrors> {
    let mapping = config::parse_mapping(text, Format::Yaml)?;
    let mut problems = Problems::new(base_dir);
    let mut top = Fields::new("", Value::from(mapping), &mut problems);
    let tls = top.section("tls_server_config", read_tls);
    let headers = top.section("http_server_config", read_http_server_config);
    let auth = read_users(&mut top);
    refuse(
        &mut top,
        "rate_limit",
        "is not supported by balance_exporter",
    );
    top.finish();
    problems.into_result(WebConfig {
        tls,
        auth: auth.map(Arc::new),
        headers: Arc::new(headers),
    })
}

impl WebConfig {
    /// `handler` behind basic authentication (when users are configured), with the configured
    /// headers added to every response, refusals included.
    pub fn wrap(&self, handler: Handler) -> Handler {
        if self.auth.is_none() && self.headers.is_empty() {
            return handler;
        }
        let auth = self.auth.clone();
        let headers = self.headers.clone();
        Arc::new(move |request| {
            let handler = handler.clone();
            let auth = auth.clone();
            let headers = headers.clone();
            Box::pin(async move {
                let verdict = match &auth {
                    Some(auth) => auth.check(request.headers().get(AUTHORIZATION)).await,
                    None => Verdict::Allowed,
                };
                let mut response = match verdict {
                    Verdict::Allowed => handler(request).await,
                    Verdict::Denied => {
                        let mut refusal =
                            response(401, "text/plain; charset=utf-8", "Unauthorized\n");
                        refusal.headers_mut().insert(
                            WWW_AUTHENTICATE,
                            HeaderValue::from_static("Basic realm=\"balance_exporter\""),
                        );
                        refusal
                    }
                    Verdict::Busy => {
                        let mut refusal = response(
                            429,
                            "text/plain; charset=utf-8",
                            "Too many password checks in progress; try again\n",
                        );
                        refusal
                            .headers_mut()
                            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                        refusal
                    }
                };
                for (name, value) in headers.iter() {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
                response
            })
        })
    }
}

/// Records `key` as a problem if it is present, so that it is neither ignored nor reported as
/// unknown.
fn refuse(fields: &mut Fields<'_>, key: &str, why: impl std::fmt::Display) {
    if fields.has(key) {
        fields.error(key, why);
    }
    fields.optional::<Value>(key);
}

fn read_tls(fields: &mut Fields<'_>) -> Option<Arc<ServerConfig>> {
    for (key, instead) in [
        ("cert", "cert_file"),
        ("key", "key_file"),
        ("client_ca", "client_ca_file"),
    ] {
        refuse(
            fields,
            key,
            format!("inline PEM is not supported by balance_exporter: use {instead}"),
        );
    }
    for key in [
        "client_allowed_sans",
        "cipher_suites",
        "curve_preferences",
        "prefer_server_cipher_suites",
    ] {
        refuse(fields, key, "is not supported by balance_exporter");
    }
    let known = [
        "cert_file",
        "key_file",
        "client_auth_type",
        "client_ca_file",
        "min_version",
        "max_version",
    ];
    if !known.iter().any(|key| fields.has(key)) {
        // As with the toolkit: no certificate, no TLS.
        return None;
    }
    for key in ["cert_file", "key_file"] {
        if !fields.has(key) {
            fields.error(key, "required to serve TLS");
        }
    }
    let client_ca_given = fields.has("client_ca_file");
    let certificates = fields.pem_certificates("cert_file");
    let private_key = fields.pem_private_key("key_file");
    let client_roots = fields.pem_certificates("client_ca_file");
    let client_auth = read_client_auth(fields, client_ca_given);
    let versions = read_versions(fields);

    let (certificates, private_key, client_auth, versions) =
        (certificates?, private_key?, client_auth?, versions?);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ClientCertVerifier> = match client_auth {
        ClientAuth::None => WebPkiClientVerifier::no_client_auth(),
        ClientAuth::Unverified { required } => Arc::new(UnverifiedClientCert {
            required,
            provider: provider.clone(),
        }),
        ClientAuth::Verified { required } => {
            let mut roots = RootCertStore::empty();
            for root in client_roots.unwrap_or_default() {
                if let Err(e) = roots.add(root) {
                    fields.error("client_ca_file", format!("unusable CA certificate: {e}"));
                    return None;
                }
            }
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if required {
                builder
            } else {
                builder.allow_unauthenticated()
            };
            match builder.build() {
                Ok(verifier) => verifier,
                Err(e) => {
                    fields.error("client_ca_file", format!("unusable CA certificates: {e}"));
                    return None;
                }
            }
        }
    };
    let built = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .and_then(|builder| {
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certificates, private_key)
        });
    match built {
        Ok(mut config) => {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(config))
        }
        Err(e) => {
            fields.error(
                "key_file",
                format!("cannot serve TLS with cert_file and key_file: {e}"),
            );
            None
        }
    }
}

enum ClientAuth {
    None,
    /// A client certificate is asked for, and is not checked against any CA.
    Unverified {
        required: bool,
    },
    /// A client certificate must chain to `client_ca_file`.
    Verified {
        required: bool,
    },
}

fn read_client_auth(fields: &mut Fields<'_>, client_ca_given: bool) -> Option<ClientAuth> {
    let name = fields
        .optional::<String>("client_auth_type")
        .unwrap_or_else(|| "NoClientCert".to_owned());
    let auth = match name.as_str() {
        "NoClientCert" => ClientAuth::None,
        "RequestClientCert" => ClientAuth::Unverified { required: false },
        // "RequireClientCert" is the toolkit's old name for it.
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::Unverified { required: true },
        "VerifyClientCertIfGiven" => ClientAuth::Verified { required: false },
        "RequireAndVerifyClientCert" => ClientAuth::Verified { required: true },
        other => {
            fields.error(
                "client_auth_type",
                format!(
                    "unknown value {other:?} (one of: NoClientCert, RequestClientCert, \
                     RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                ),
            );
            return None;
        }
    };
    match (&auth, client_ca_given) {
        (ClientAuth::Verified { .. }, false) => {
            fields.error(
                "client_ca_file",
                format!("required with client_auth_type {name}"),
            );
            None
        }
        (ClientAuth::None | ClientAuth::Unverified { .. }, true) => {
            fields.error(
                "client_ca_file",
                format!(
                    "has no effect with client_auth_type {name}: use \
                     RequireAndVerifyClientCert (or VerifyClientCertIfGiven)"
                ),
            );
            None
        }
        _ => Some(auth),
    }
}

/// The protocol versions between `min_version` (default TLS12) and `max_version` (TLS13).
fn read_versions(fields: &mut Fields<'_>) -> Option<Vec<&'static SupportedProtocolVersion>> {
    let mut read = |key: &str, default: u8| -> Option<u8> {
        let Some(name) = fields.optional::<String>(key) else {
            return Some(default);
        };
        match name.as_str() {
            "TLS12" => Some(12),
            "TLS13" => Some(13),
            "TLS10" | "TLS11" => {
                fields.error(
                    key,
                    format!(
                        "{name} is not supported: balance_exporter speaks TLS12 and TLS13 only"
                    ),
                );
                None
            }
            _ => {
                fields.error(key, format!("unknown version {name:?} (TLS12 or TLS13)"));
                None
            }
        }
    };
    let (min, max) = (read("min_version", 12), read("max_version", 13));
    let (min, max) = (min?, max?);
    if min > max {
        fields.error("min_version", "is above max_version");
        return None;
    }
    let versions = [(12, &rustls::version::TLS12), (13, &rustls::version::TLS13)];
    Some(
        versions
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, version)| version)
            .collect(),
    )
}

fn read_http_server_config(fields: &mut Fields<'_>) -> Vec<(HeaderName, HeaderValue)> {
    if fields.optional::<bool>("http2") == Some(true) {
        fields.error(
            "http2",
            "HTTP/2 is not supported by balance_exporter: remove the key or set it to false",
        );
    }
    let path = fields.path_of("headers");
    let configured: BTreeMap<String, String> = fields.optional("headers").unwrap_or_default();
    let mut headers = Vec::new();
    for (name, value) in configured {
        let at = format!("{path}.{name}");
        let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            fields.error_at(
                &at,
                format!(
                    "this header cannot be configured (one of: {})",
                    names.join(", ")
                ),
            );
            continue;
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            fields.error_at(&at, format!("must be one of: {}", allowed.join(", ")));
            continue;
        }
        if value.is_empty() {
            // Blank means unset, as in the toolkit.
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(name), Ok(value)) => headers.push((name, value)),
            _ => fields.error_at(&at, "not a valid header value"),
        }
    }
    headers
}

fn read_users(fields: &mut Fields<'_>) -> Option<BasicAuth> {
    let path = fields.path_of("basic_auth_users");
    let users: BTreeMap<String, String> = fields.optional("basic_auth_users")?;
    let mut valid = true;
    for (user, hash) in &users {
        // The hash is not repeated in the message: it is as good as a password to a cracker.
        if hash.parse::<bcrypt::HashParts>().is_err() {
            fields.error_at(&format!("{path}.{user}"), "not a bcrypt hash");
            valid = false;
        }
    }
    if !valid {
        return None;
    }
    BasicAuth::new(users.into_iter().collect())
}

/// Basic authentication against bcrypt hashes, with the verdicts cached so that a scrape does
/// not cost a bcrypt hash each time.
pub struct BasicAuth {
    users: HashMap<String, String>,
    /// Checked for unknown users, so that they take as long as known ones.
    decoy_hash: String,
    verdicts: std::sync::Mutex<Verdicts>,
    /// Admission of checks the cache cannot answer: [`UNCACHED_CHECKS`] permits.
    uncached: Arc<Semaphore>,
    /// bcrypt is expensive on purpose: one check at a time, as the toolkit does.
    one_at_a_time: Arc<Semaphore>,
    hashes: AtomicU64,
}

/// The outcome of a basic-authentication check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No credentials, an unknown user or a wrong password.
    Denied,
    /// The credentials are not in the cache and as many checks as allowed are under way.
    Busy,
}

/// Cached verdicts by user and SHA-256 of the password (never the password itself). Failures
/// are kept apart, so that a flood of wrong passwords cannot push the right ones out.
#[derive(Default)]
struct Verdicts {
    passed: HashSet<VerdictKey>,
    failed: HashSet<VerdictKey>,
}

type VerdictKey = (String, [u8; 32]);

impl Verdicts {
    fn get(&self, key: &VerdictKey) -> Option<bool> {
        if self.passed.contains(key) {
            Some(true)
        } else if self.failed.contains(key) {
            Some(false)
        } else {
            None
        }
    }

    fn insert(&mut self, key: VerdictKey, passed: bool) {
        let set = if passed {
            &mut self.passed
        } else {
            &mut self.failed
        };
        if set.len() >= VERDICT_CACHE_SIZE
            && let Some(any) = set.iter().next().cloned()
        {
            set.remove(&any);
        }
        set.insert(key);
    }
}

impl BasicAuth {
    /// `None` when there are no users: then nothing is protected, as with the toolkit.
    pub fn new(users: HashMap<String, String>) -> Option<BasicAuth> {
        let decoy_hash = users.values().next()?.clone();
        Some(BasicAuth {
            users,
            decoy_hash,
            verdicts: std::sync::Mutex::default(),
            uncached: Arc::new(Semaphore::new(UNCACHED_CHECKS)),
            one_at_a_time: Arc::new(Semaphore::new(1)),
            hashes: AtomicU64::new(0),
        })
    }

    /// How many bcrypt checks ran.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::Relaxed)
    }

    /// Whether the `Authorization` header holds a configured user's password. A cached
    /// verdict is given at once; otherwise the check waits for its turn at bcrypt, unless too
    /// many already do ([`Verdict::Busy`]).
    pub async fn check(&self, authorization: Option<&HeaderValue>) -> Verdict {
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            return Verdict::Denied;
        };
        let mut digest = [0u8; 32];
        digest.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &password).as_ref(),
        );
        let key: VerdictKey = (user, digest);
        if let Some(passed) = self.cached(&key) {
            return Verdict::from(passed);
        }
        let Ok(admitted) = self.uncached.clone().try_acquire_owned() else {
            return Verdict::Busy;
        };
        let Ok(turn) = self.one_at_a_time.clone().acquire_owned().await else {
            return Verdict::Busy;
        };
        // The same credentials may have been checked while this request waited.
        if let Some(passed) = self.cached(&key) {
            return Verdict::from(passed);
        }
        let known = self.users.get(&key.0);
        let hash = known.unwrap_or(&self.decoy_hash).clone();
        self.hashes.fetch_add(1, Ordering::Relaxed);
        let matches = tokio::task::spawn_blocking(move || {
            // Held until the hash is done, even if the client has gone: a client that hangs
            // up cannot start more hashing than the permits allow.
            let _permits = (admitted, turn);
            bcrypt::verify(password, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        let passed = matches && known.is_some();
        crate::sync::lock(&self.verdicts).insert(key, passed);
        Verdict::from(passed)
    }

    fn cached(&self, key: &VerdictKey) -> Option<bool> {
        crate::sync::lock(&self.verdicts).get(key)
    }
}

impl From<bool> for Verdict {
    fn from(passed: bool) -> Verdict {
        if passed {
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }
}

/// User and password of a `Basic` `Authorization` header.
fn basic_credentials(header: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let header = header.to_str().ok()?;
    let (scheme, encoded) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Client certificates asked for but not checked against any CA (`RequestClientCert`,
/// `RequireAnyClientCert`): the client still proves it holds the certificate's key.
#[derive(Debug)]
struct UnverifiedClientCert {
    required: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for UnverifiedClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::assert_reported;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/nonexistent")) {
            Ok(_) => panic!("web config should be invalid:\n{text}"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn an_empty_file_protects_nothing() {
        let config = parse("", Path::new(".")).unwrap();
        assert!(config.tls.is_none() && config.auth.is_none() && config.headers.is_empty());
    }

    #[test]
    fn every_problem_names_its_field() {
        let found = problems(
            "
tls_server_config:
  cert_file: missing.pem
  min_version: TLS10
  max_version: TLS14
  client_auth_type: RequireAndVerifyClientCert
  cipher_suites: [TLS_AES_128_GCM_SHA256]
  key: inline
  colour: blue
http_server_config:
  http2: true
  headers:
    X-Frame-Options: allow
    Server: mine
basic_auth_users:
  alice: not-a-hash
rate_limit:
  interval: 1s
",
        );
        assert_reported(
            &found,
            &[
                "tls_server_config.cert_file: cannot read /nonexistent/missing.pem",
                "tls_server_config.key_file: required to serve TLS",
                "tls_server_config.min_version: TLS10 is not supported",
                "tls_server_config.max_version: unknown version \"TLS14\"",
                "tls_server_config.client_ca_file: required with client_auth_type RequireAndVerifyClientCert",
                "tls_server_config.cipher_suites: is not supported by balance_exporter",
                "tls_server_config.key: inline PEM is not supported by balance_exporter: use key_file",
                "tls_server_config.colour: unknown key",
                "http_server_config.http2: HTTP/2 is not supported",
                "http_server_config.headers.X-Frame-Options: must be one of: deny, sameorigin",
                "http_server_config.headers.Server: this header cannot be configured",
                "basic_auth_users.alice: not a bcrypt hash",
                "rate_limit: is not supported by balance_exporter",
            ],
        );
        assert!(
            !found.iter().any(|f| f.contains("not-a-hash")),
            "a hash is never repeated: {found:?}"
        );
    }

    #[test]
    fn a_client_ca_without_verification_is_refused() {
        let found = problems(
            "tls_server_config:\n  cert_file: c.pem\n  key_file: k.pem\n  client_ca_file: ca.pem\n",
        );
        assert_reported(
            &found,
            &["tls_server_config.client_ca_file: has no effect with client_auth_type NoClientCert"],
        );
    }

    fn header(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap()
    }

    #[tokio::test]
    async fn verdicts_are_cached_so_a_scrape_costs_no_hash() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = BasicAuth::new(HashMap::from([("prometheus".to_owned(), hash)])).unwrap();
        let right = header("prometheus", "right");
        assert!(auth.check(Some(&right)).await == Verdict::Allowed);
        assert_eq!(auth.hashes(), 1);
        assert!(auth.check(Some(&right)).await == Verdict::Allowed);
        assert_eq!(auth.hashes(), 1, "the second check hit the cache");

        let wrong = header("prometheus", "wrong");
        assert_eq!(auth.check(Some(&wrong)).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&wrong)).await, Verdict::Denied);
        assert_eq!(auth.hashes(), 2, "a failure is cached too");

        // An unknown user costs a hash like a known one, and never passes, even with a
        // password that is right for somebody else.
        assert_eq!(
            auth.check(Some(&header("nobody", "right"))).await,
            Verdict::Denied
        );
        assert_eq!(auth.hashes(), 3);
        assert_eq!(auth.check(None).await, Verdict::Denied);
        assert_eq!(
            auth.check(Some(&HeaderValue::from_static("Bearer x")))
                .await,
            Verdict::Denied
        );
        assert_eq!(auth.hashes(), 3, "no credentials, no hash");
    }

    #[tokio::test]
    async fn failures_cannot_push_out_the_right_password() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = BasicAuth::new(HashMap::from([("prometheus".to_owned(), hash)])).unwrap();
        let right = header("prometheus", "right");
        assert!(auth.check(Some(&right)).await == Verdict::Allowed);
        for i in 0..VERDICT_CACHE_SIZE + 5 {
            assert_eq!(
                auth.check(Some(&header("prometheus", &format!("guess{i}"))))
                    .await,
                Verdict::Denied
            );
        }
        let before = auth.hashes();
        assert!(auth.check(Some(&right)).await == Verdict::Allowed);
        assert_eq!(auth.hashes(), before, "the right password is still cached");
        let cached = auth.verdicts.lock().unwrap();
        assert_eq!(
            cached.failed.len(),
            VERDICT_CACHE_SIZE,
            "failures stay bounded"
        );
    }

    #[tokio::test]
    async fn a_flood_of_wrong_passwords_is_refused_beyond_a_few_and_queues_before_no_one() {
        // Slow enough that the flood is still being hashed when the last request comes in.
        let hash = bcrypt::hash("right", 8).unwrap();
        let auth =
            Arc::new(BasicAuth::new(HashMap::from([("prometheus".to_owned(), hash)])).unwrap());
        let right = header("prometheus", "right");
        assert_eq!(auth.check(Some(&right)).await, Verdict::Allowed);
        let hashed_before = auth.hashes();

        let flood: Vec<_> = (0..4 * UNCACHED_CHECKS)
            .map(|i| {
                let auth = auth.clone();
                let guess = header("prometheus", &format!("guess{i}"));
                tokio::spawn(async move { auth.check(Some(&guess)).await })
            })
            .collect();
        // Let every flood task reach its admission (or refusal) before the right password.
        tokio::task::yield_now().await;
        assert_eq!(auth.check(Some(&right)).await, Verdict::Allowed);
        assert!(
            flood.iter().any(|task| !task.is_finished()),
            "the cached password was answered while the flood was still being hashed"
        );
        let mut outcomes = Vec::new();
        for task in flood {
            outcomes.push(task.await.unwrap());
        }
        let denied = outcomes.iter().filter(|v| **v == Verdict::Denied).count();
        let busy = outcomes.iter().filter(|v| **v == Verdict::Busy).count();
        assert_eq!(
            denied + busy,
            outcomes.len(),
            "no guess passes: {outcomes:?}"
        );
        assert!(
            busy >= outcomes.len() - 2 * UNCACHED_CHECKS,
            "guesses beyond the admitted ones are refused at once: {outcomes:?}"
        );
        assert_eq!(
            auth.hashes() - hashed_before,
            denied as u64,
            "a refused guess costs no hash"
        );
    }
}
