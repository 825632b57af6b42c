//! OpenID Connect sign-in (`[web.oidc]`): this collector as a confidential client of one
//! provider, with the authorization-code flow and PKCE (S256).
//!
//! - [`Oidc::start`] makes a pending sign-in: random `state`, `nonce`, PKCE verifier and a
//!   browser binding (kept in a cookie, so that a callback only completes in the browser that
//!   started it), held in memory for [`PENDING_MAX_AGE`], at most [`PENDING_MAX`] of them (the
//!   oldest dropped first), and the provider's authorization URL;
//! - [`Oidc::finish`] takes the pending sign-in its `state` names (once: a state is never used
//!   twice), exchanges the code at the token endpoint with the client secret and the verifier,
//!   and verifies the ID token: its signature against the provider's JWKS (RS256/384/512,
//!   PS256/384/512, ES256/384; never `none` or an HMAC), its issuer, audience (and `azp`),
//!   expiry, not-before and nonce; then maps its claims to a user name and a role.
//!
//! Discovery and the JWKS are fetched when first needed and kept for [`METADATA_MAX_AGE`]; the
//! JWKS is fetched again when a token names an unknown key, at most once per
//! [`JWKS_REFETCH_MIN_INTERVAL`]. Every request to the provider has a timeout and a bounded
//! answer. The client secret, codes, tokens, states and nonces are never logged.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{provider_url_allowed, Config, OidcConfig};
use crate::http::auth::Role;
use crate::users::{encode, random_bytes, secret_hash};

/// How long a started sign-in may take to come back.
pub const PENDING_MAX_AGE: Duration = Duration::from_secs(10 * 60);
/// Most sign-ins pending at once.
pub const PENDING_MAX: usize = 10_000;
/// How long discovery and the JWKS are kept.
pub const METADATA_MAX_AGE: Duration = Duration::from_secs(60 * 60);
/// The JWKS is fetched again for an unknown key (the provider rotated its keys) at most this
/// often.
pub const JWKS_REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Each request to the provider.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider.
pub const PROVIDER_ANSWER_MAX_BYTES: usize = 1024 * 1024;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: u64 = 60;
/// The longest user name taken from a claim.
const USERNAME_MAX_CHARS: usize = 128;
/// The prefix of an OpenID Connect user's actor name (local names cannot hold a `:`).
pub const ACTOR_PREFIX: &str = "oidc:";

/// Why a sign-in with the provider failed. The messages name no secret.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("cannot read the OpenID Connect client secret file {path}: {source}")]
    SecretFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the OpenID Connect client secret file {0} is empty")]
    EmptySecret(std::path::PathBuf),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("the provider cannot be reached or answered badly: {0}")]
    Provider(String),
    #[error("no such sign-in: unknown, expired or used already")]
    UnknownState,
    #[error("the sign-in did not come back to the browser that started it")]
    OtherBrowser,
    #[error("the provider refused the sign-in: {0}")]
    Refused(String),
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
    #[error("the user {0} has no role here: no claim value maps to one")]
    NoRole(String),
    #[error("no usable user name in the ID token")]
    NoName,
    #[error("cannot make random values: {0}")]
    Random(String),
}

/// The provider's discovery document, the parts used.
#[derive(Clone, Debug, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

struct Cached<T> {
    value: T,
    fetched: Instant,
}

/// One started sign-in.
struct Pending {
    nonce: String,
    verifier: String,
    binding: [u8; 32],
    language: String,
    created: Instant,
}

/// A started sign-in: where to send the browser and the cookie that binds it.
pub struct Started {
    pub authorization_url: String,
    pub binding: String,
}

/// A verified sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// `oidc:<user name>`.
    pub actor: String,
    pub role: Role,
    /// The language the sign-in started in.
    pub language: String,
}

pub struct Oidc {
    config: OidcConfig,
    client_secret: String,
    http: reqwest::Client,
    metadata: Mutex<Option<Cached<Metadata>>>,
    jwks: Mutex<Option<Cached<Vec<jsonwebtoken::jwk::Jwk>>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Oidc")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn provider_error(error: impl std::fmt::Display) -> OidcError {
    OidcError::Provider(error.to_string())
}

impl Oidc {
    /// The client `[web.oidc]` configures, with its secret read; `None` when it is absent.
    pub fn load(config: &Config) -> Result<Option<Oidc>, OidcError> {
        let Some(oidc) = &config.web.oidc else {
            return Ok(None);
        };
        let path = config.in_data_dir(&oidc.client_secret_file);
        let secret = std::fs::read_to_string(&path)
            .map_err(|source| OidcError::SecretFile {
                path: path.clone(),
                source,
            })?
            .trim()
            .to_string();
        if secret.is_empty() {
            return Err(OidcError::EmptySecret(path));
        }
        Oidc::new(oidc.clone(), secret).map(Some)
    }

    pub fn new(config: OidcConfig, client_secret: String) -> Result<Oidc, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .connect_timeout(PROVIDER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| OidcError::Client(error.to_string()))?;
        Ok(Oidc {
            config,
            client_secret,
            http,
            metadata: Mutex::new(None),
            jwks: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// What the sign-in page's button names.
    pub fn display_name(&self) -> &str {
        &self.config.display_name
    }

    /// A GET to the provider, its JSON answer bounded.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        if !provider_url_allowed(url) {
            return Err(OidcError::Provider(
                "an endpoint is not https:// (or http:// on the loopback)".to_string(),
            ));
        }
        let response = self.http.get(url).send().await.map_err(provider_error)?;
        read_json(response).await
    }

    async fn metadata(&self) -> Result<Metadata, OidcError> {
        if let Some(cached) = self
            .metadata
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|cached| cached.fetched.elapsed() < METADATA_MAX_AGE)
        {
            return Ok(cached.value.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let metadata: Metadata = self.get_json(&url).await?;
        if metadata.issuer != self.config.issuer {
            return Err(OidcError::Provider(
                "the discovery document names another issuer".to_string(),
            ));
        }
        for endpoint in [
            &metadata.authorization_endpoint,
            &metadata.token_endpoint,
            &metadata.jwks_uri,
        ] {
            if !provider_url_allowed(endpoint) {
                return Err(OidcError::Provider(
                    "an endpoint in the discovery document is not https://".to_string(),
                ));
            }
        }
        *self.metadata.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            value: metadata.clone(),
            fetched: Instant::now(),
        });
        Ok(metadata)
    }

    /// The provider's keys; fetched again when `refresh` (an unknown key), at most once per
    /// [`JWKS_REFETCH_MIN_INTERVAL`].
    async fn keys(
        &self,
        metadata: &Metadata,
        refresh: bool,
    ) -> Result<Vec<jsonwebtoken::jwk::Jwk>, OidcError> {
        if let Some(cached) = self
            .jwks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            let age = cached.fetched.elapsed();
            let keep = if refresh {
                age < JWKS_REFETCH_MIN_INTERVAL
            } else {
                age < METADATA_MAX_AGE
            };
            if keep {
                return Ok(cached.value.clone());
            }
        }
        let set: Value = self.get_json(&metadata.jwks_uri).await?;
        // Keys of kinds this client does not know are skipped, not fatal.
        let keys: Vec<jsonwebtoken::jwk::Jwk> = set
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|key| serde_json::from_value(key.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        *self.jwks.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            value: keys.clone(),
            fetched: Instant::now(),
        });
        Ok(keys)
    }

    /// Starts a sign-in in `language`: the provider's authorization URL and the browser binding
    /// (for a cookie).
    pub async fn start(&self, language: &str, now: Instant) -> Result<Started, OidcError> {
        let metadata = self.metadata().await?;
        let random = || {
            random_bytes::<32>()
                .map(|bytes| encode(&bytes))
                .map_err(|error| OidcError::Random(error.to_string()))
        };
        let (state, nonce, verifier, binding) = (random()?, random()?, random()?, random()?);
        let challenge = encode(&Sha256::digest(verifier.as_bytes()));
        let mut url =
            reqwest::Url::parse(&metadata.authorization_endpoint).map_err(provider_error)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() >= PENDING_MAX {
            pending.retain(|_, started| {
                now.saturating_duration_since(started.created) < PENDING_MAX_AGE
            });
        }
        if pending.len() >= PENDING_MAX {
            let oldest = pending
                .iter()
                .min_by_key(|(_, started)| started.created)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                pending.remove(&oldest);
            }
        }
        pending.insert(
            state,
            Pending {
                nonce,
                verifier,
                binding: secret_hash(&binding),
                language: language.to_string(),
                created: now,
            },
        );
        Ok(Started {
            authorization_url: url.to_string(),
            binding,
        })
    }

    /// Sign-ins pending.
    pub fn pending_count(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Ends the pending sign-in `state` names, if any.
    pub fn forget(&self, state: &str) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(state);
    }

    /// The language of the pending sign-in `state` names, if any (for the error page).
    pub fn pending_language(&self, state: &str) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(state)
            .map(|pending| pending.language.clone())
    }

    /// Finishes the sign-in `state` names with the provider's `code`, in the browser whose
    /// binding cookie is `binding`. The state is used up whatever happens.
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        binding: Option<&str>,
        now: Instant,
    ) -> Result<SignedIn, OidcError> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(state)
            .filter(|pending| now.saturating_duration_since(pending.created) < PENDING_MAX_AGE)
            .ok_or(OidcError::UnknownState)?;
        let bound = binding.is_some_and(|binding| {
            let offered = secret_hash(binding);
            offered
                .iter()
                .zip(pending.binding.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        });
        if !bound {
            return Err(OidcError::OtherBrowser);
        }
        let metadata = self.metadata().await?;
        let id_token = self.exchange(&metadata, code, &pending.verifier).await?;
        let claims = self.verify(&metadata, &id_token, &pending.nonce).await?;
        let name = self.username(&claims)?;
        let actor = format!("{ACTOR_PREFIX}{name}");
        let role = self
            .role(&claims)
            .ok_or_else(|| OidcError::NoRole(actor.clone()))?;
        Ok(SignedIn {
            actor,
            role,
            language: pending.language,
        })
    }

    /// The code for an ID token at the token endpoint.
    async fn exchange(
        &self,
        metadata: &Metadata,
        code: &str,
        verifier: &str,
    ) -> Result<String, OidcError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("code_verifier", verifier),
        ];
        // client_secret_basic unless the provider only takes client_secret_post.
        let post = metadata
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_some_and(|methods| {
                !methods.iter().any(|method| method == "client_secret_basic")
                    && methods.iter().any(|method| method == "client_secret_post")
            });
        let mut request = self.http.post(&metadata.token_endpoint);
        if post {
            form.push(("client_id", self.config.client_id.as_str()));
            form.push(("client_secret", self.client_secret.as_str()));
        } else {
            // RFC 6749 2.3.1: both form-encoded before the basic encoding.
            let encode = |text: &str| {
                serde_urlencoded::to_string([("", text)])
                    .map(|pair| pair.trim_start_matches('=').to_string())
                    .unwrap_or_default()
            };
            let pair = format!(
                "{}:{}",
                encode(&self.config.client_id),
                encode(&self.client_secret)
            );
            request = request.header(
                reqwest::header::AUTHORIZATION,
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            );
        }
        let body = serde_urlencoded::to_string(&form).map_err(provider_error)?;
        let response = request
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(provider_error)?;
        let status = response.status();
        let answer: Value = read_json_any_status(response).await?;
        if !status.is_success() {
            let error = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no error code");
            return Err(OidcError::Refused(format!(
                "the token endpoint answered {status}: {}",
                error.chars().take(100).collect::<String>()
            )));
        }
        answer
            .get("id_token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| OidcError::Provider("the token answer has no id_token".to_string()))
    }

    /// The ID token's claims once its signature, issuer, audience, times and nonce hold.
    async fn verify(
        &self,
        metadata: &Metadata,
        token: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, Value>, OidcError> {
        let invalid = |error: &dyn std::fmt::Display| OidcError::InvalidToken(error.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|error| invalid(&error))?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
        ];
        if !allowed.contains(&header.alg) {
            return Err(invalid(&format!(
                "signed with {:?}, not an asymmetric algorithm",
                header.alg
            )));
        }
        let find = |keys: &[jsonwebtoken::jwk::Jwk]| -> Option<jsonwebtoken::jwk::Jwk> {
            match &header.kid {
                Some(kid) => keys
                    .iter()
                    .find(|key| key.common.key_id.as_deref() == Some(kid.as_str()))
                    .cloned(),
                None if keys.len() == 1 => keys.first().cloned(),
                None => None,
            }
        };
        let key = match find(&self.keys(metadata, false).await?) {
            Some(key) => key,
            None => find(&self.keys(metadata, true).await?)
                .ok_or_else(|| invalid(&"signed with a key not in the provider's JWKS"))?,
        };
        let key = DecodingKey::from_jwk(&key).map_err(|error| invalid(&error))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .map_err(|error| invalid(&error))?;
        let claims = data.claims;
        if let Some(azp) = claims.get("azp") {
            if azp.as_str() != Some(self.config.client_id.as_str()) {
                return Err(invalid(&"azp names another client"));
            }
        }
        let given = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !same(given.as_bytes(), nonce.as_bytes()) {
            return Err(invalid(&"the nonce is not the one this sign-in sent"));
        }
        Ok(claims)
    }

    /// The user name: the configured claim, else `sub`; printable, at most
    /// [`USERNAME_MAX_CHARS`].
    fn username(&self, claims: &serde_json::Map<String, Value>) -> Result<String, OidcError> {
        let usable = |name: &&str| {
            !name.is_empty()
                && name.chars().count() <= USERNAME_MAX_CHARS
                && !name.chars().any(char::is_control)
        };
        claim(claims, &self.config.username_claim)
            .and_then(Value::as_str)
            .filter(usable)
            .or_else(|| claims.get("sub").and_then(Value::as_str).filter(usable))
            .map(str::to_string)
            .ok_or(OidcError::NoName)
    }

    /// The highest role the role claim's values map to, else the default role.
    pub fn role(&self, claims: &serde_json::Map<String, Value>) -> Option<Role> {
        let values: Vec<&str> = match claim(claims, &self.config.role_claim) {
            Some(Value::String(value)) => vec![value.as_str()],
            Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        values
            .into_iter()
            .filter_map(|value| self.config.roles.get(value).copied())
            .max()
            .or(self.config.default_role)
    }
}

/// The claim at a dotted `path` (`realm_access.roles`); a claim whose own name holds the dots
/// is found first.
fn claim<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn same(expected: &[u8], offered: &[u8]) -> bool {
    expected.len() == offered.len()
        && expected
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// At most [`PROVIDER_ANSWER_MAX_BYTES`] of an answer.
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, OidcError> {
    if response
        .content_length()
        .is_some_and(|length| length > PROVIDER_ANSWER_MAX_BYTES as u64)
    {
        return Err(OidcError::Provider("the answer is too large".to_string()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(provider_error)? {
        if body.len().saturating_add(chunk.len()) > PROVIDER_ANSWER_MAX_BYTES {
            return Err(OidcError::Provider("the answer is too large".to_string()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn read_json_any_status<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, OidcError> {
    let body = read_bounded(response).await?;
    serde_json::from_slice(&body).map_err(|error| {
        OidcError::Provider(format!("the answer is not the JSON expected: {error}"))
    })
}

async fn read_json<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, OidcError> {
    if !response.status().is_success() {
        return Err(OidcError::Provider(format!(
            "answered {}",
            response.status()
        )));
    }
    read_json_any_status(response).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(roles: &[(&str, Role)], default_role: Option<Role>) -> Oidc {
        let config = OidcConfig {
            issuer: "https://id.example".to_string(),
            display_name: "Example".to_string(),
            client_id: "posmon".to_string(),
            client_secret_file: "secret".into(),
            redirect_url: "https://posmon.example/login/oidc/callback".to_string(),
            scopes: vec!["openid".to_string()],
            role_claim: "realm_access.roles".to_string(),
            roles: roles
                .iter()
                .map(|(value, role)| (value.to_string(), *role))
                .collect(),
            default_role,
            username_claim: "preferred_username".to_string(),
        };
        Oidc::new(config, "secret".to_string()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn claims(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn the_highest_mapped_role_wins_else_the_default() {
        let oidc = client(&[("ops", Role::Operator), ("boss", Role::Admin)], None);
        let nested = |roles: Value| claims(serde_json::json!({"realm_access": {"roles": roles}}));
        assert_eq!(
            oidc.role(&nested(serde_json::json!(["x", "ops", "boss"]))),
            Some(Role::Admin)
        );
        assert_eq!(
            oidc.role(&nested(serde_json::json!("ops"))),
            Some(Role::Operator)
        );
        assert_eq!(oidc.role(&nested(serde_json::json!(["x", 7]))), None);
        assert_eq!(oidc.role(&claims(serde_json::json!({}))), None);
        let with_default = client(&[("ops", Role::Operator)], Some(Role::Viewer));
        assert_eq!(
            with_default.role(&nested(serde_json::json!(["x"]))),
            Some(Role::Viewer)
        );
    }

    #[test]
    fn the_user_name_falls_back_to_sub() {
        let oidc = client(&[], Some(Role::Viewer));
        let name = |value| oidc.username(&claims(value)).ok();
        assert_eq!(
            name(serde_json::json!({"preferred_username": "li", "sub": "1"})).as_deref(),
            Some("li")
        );
        assert_eq!(name(serde_json::json!({"sub": "1"})).as_deref(), Some("1"));
        assert_eq!(
            name(serde_json::json!({"preferred_username": "a\nb", "sub": "1"})).as_deref(),
            Some("1")
        );
        assert_eq!(
            name(serde_json::json!({"preferred_username": "x".repeat(200)})),
            None
        );
    }

    /// A client whose discovery is already cached (no provider needed to start sign-ins).
    fn discovered() -> Oidc {
        let oidc = client(&[], Some(Role::Viewer));
        *oidc.metadata.lock().unwrap_or_else(PoisonError::into_inner) = Some(Cached {
            value: Metadata {
                issuer: "https://id.example".to_string(),
                authorization_endpoint: "https://id.example/authorize".to_string(),
                token_endpoint: "https://id.example/token".to_string(),
                jwks_uri: "https://id.example/jwks".to_string(),
                token_endpoint_auth_methods_supported: None,
            },
            fetched: Instant::now(),
        });
        oidc
    }

    fn query(url: &str, key: &str) -> String {
        reqwest::Url::parse(url)
            .ok()
            .and_then(|url| {
                url.query_pairs()
                    .find(|(name, _)| name == key)
                    .map(|(_, value)| value.into_owned())
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_started_sign_in_carries_pkce_state_and_nonce() {
        let oidc = discovered();
        let started = oidc
            .start("zh-CN", Instant::now())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let url = &started.authorization_url;
        assert!(url.starts_with("https://id.example/authorize?"), "{url}");
        assert_eq!(query(url, "code_challenge_method"), "S256");
        assert_eq!(query(url, "code_challenge").len(), 43);
        assert_eq!(query(url, "state").len(), 43);
        assert_eq!(query(url, "nonce").len(), 43);
        assert_ne!(query(url, "state"), query(url, "nonce"));
        assert_eq!(query(url, "client_id"), "posmon");
        assert_eq!(
            oidc.pending_language(&query(url, "state")).as_deref(),
            Some("zh-CN")
        );
        // The other browser's binding: refused, and the state is gone.
        let state = query(url, "state");
        assert!(matches!(
            oidc.finish(&state, "code", Some("other"), Instant::now())
                .await,
            Err(OidcError::OtherBrowser)
        ));
        assert!(matches!(
            oidc.finish(&state, "code", Some(&started.binding), Instant::now())
                .await,
            Err(OidcError::UnknownState)
        ));
    }

    #[tokio::test]
    async fn pending_sign_ins_expire_and_are_bounded() {
        let oidc = discovered();
        let start = Instant::now();
        let started = oidc
            .start("en", start)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let state = query(&started.authorization_url, "state");
        let late = start + PENDING_MAX_AGE;
        assert!(matches!(
            oidc.finish(&state, "code", Some(&started.binding), late)
                .await,
            Err(OidcError::UnknownState)
        ));
        for n in 0..PENDING_MAX + 50 {
            let at = start + Duration::from_millis(u64::try_from(n).unwrap_or(0));
            oidc.start("en", at).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(oidc.pending_count(), PENDING_MAX);
    }

    #[tokio::test]
    async fn an_unknown_or_replayed_state_is_refused() {
        let oidc = client(&[], Some(Role::Viewer));
        let now = Instant::now();
        assert!(matches!(
            oidc.finish("made-up", "code", Some("b"), now).await,
            Err(OidcError::UnknownState)
        ));
    }
}
