//! App tokens: compact JWTs signed with the app's Ed25519 key (`alg: EdDSA`).
//!
//! The original gim kept each app's RSA *private* key in its database. gim stores only the public
//! key: the tenant's business server holds the private key (printed once by `gim-logic app create`)
//! and mints tokens with it, using this module or any JWT library that does EdDSA.
//!
//! Two kinds of token: a *device* token names (app, user, device) and is what a client signs in with;
//! a *server* token names only the app and is the business server's credential for `LogicServerExt`.
//!
//! Tokens minted here carry `iat` (issued at) and a random `jti` (token id), so gim can refuse
//! tokens issued before a forced logout, revoke one token, and bound a token's lifetime; a `kid`
//! in the header names which of the app's keys signed it. Tokens without them (older minters)
//! still verify here; whether the app accepts them is its policy (logic's `apps`).

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

const HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

/// The longest key id gim accepts (`kid` in the header).
pub const KID_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token was issued for another app")]
    WrongApp,
    #[error("token was issued for another user or device")]
    WrongSubject,
    #[error("token is not a {0} token")]
    WrongKind(&'static str),
    #[error("key is malformed: {0}")]
    BadKey(String),
}

/// A key id is 1 to [`KID_MAX`] characters of `A-Z a-z 0-9 . _ -` (the empty id names an app's
/// original key, which tokens without a `kid` use).
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= KID_MAX
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Device,
    Server,
}

/// The claims gim reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub app_id: i64,
    #[serde(default)]
    pub user_id: i64,
    #[serde(default)]
    pub device_id: i64,
    /// Expiry, Unix seconds.
    pub exp: i64,
    pub kind: TokenKind,
    /// Issued at, Unix seconds (absent in tokens of older minters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// The token's id, unique per token (absent in tokens of older minters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// A fresh random token id: 16 bytes, base64url.
pub fn new_jti() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("os random");
    B64.encode(b)
}

/// An app's signing key, held by the tenant (never stored by gim).
#[derive(Clone)]
pub struct AppKey {
    signing: SigningKey,
    /// Written as `kid` into the header of every token this key signs.
    kid: Option<String>,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey(<private>)")
    }
}

impl AppKey {
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("os random");
        Self {
            signing: SigningKey::from_bytes(&seed),
            kid: None,
        }
    }

    /// The same key, naming itself `kid` in the tokens it signs (a key added to an app with
    /// that id). Panics on an invalid id (see [`valid_kid`]).
    pub fn with_kid(mut self, kid: &str) -> Self {
        assert!(valid_kid(kid), "invalid kid {kid:?}");
        self.kid = Some(kid.to_string());
        self
    }

    /// The key id it writes into tokens, if any.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// Reads the private key as printed by `gim-logic app create` (base64url, 32 bytes).
    pub fn from_private_b64(s: &str) -> Result<Self, TokenError> {
        let bytes = B64
            .decode(s.trim())
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| TokenError::BadKey("expected 32 bytes".into()))?;
        Ok(Self {
            signing: SigningKey::from_bytes(&seed),
            kid: None,
        })
    }

    pub fn private_b64(&self) -> String {
        B64.encode(self.signing.to_bytes())
    }

    /// The 32-byte public key gim stores to verify this app's tokens.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// [`Self::public_key`] as base64url (no padding), as logic's admin API takes it.
    pub fn public_b64(&self) -> String {
        B64.encode(self.public_key())
    }

    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let header = match &self.kid {
            // A valid kid needs no JSON escaping.
            Some(kid) => format!(r#"{{"alg":"EdDSA","typ":"JWT","kid":"{kid}"}}"#),
            None => HEADER.to_string(),
        };
        let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
        let sig = self.signing.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.to_bytes()))
    }

    /// A device token valid for `ttl_secs` from `now_secs`, issued at `now_secs` with a fresh
    /// `jti`.
    pub fn device_token(
        &self,
        app: i64,
        user: i64,
        device: i64,
        now_secs: i64,
        ttl_secs: i64,
    ) -> String {
        self.sign(&Claims {
            app_id: app,
            user_id: user,
            device_id: device,
            exp: now_secs + ttl_secs,
            kind: TokenKind::Device,
            iat: Some(now_secs),
            jti: Some(new_jti()),
        })
    }

    /// A business-server token valid for `ttl_secs` from `now_secs`.
    pub fn server_token(&self, app: i64, now_secs: i64, ttl_secs: i64) -> String {
        self.sign(&Claims {
            app_id: app,
            user_id: 0,
            device_id: 0,
            exp: now_secs + ttl_secs,
            kind: TokenKind::Server,
            iat: Some(now_secs),
            jti: Some(new_jti()),
        })
    }
}

/// The header's `kid`, without verifying anything: only to find which of the app's keys to
/// verify with. `None` when the header has none.
pub fn peek_kid(token: &str) -> Result<Option<String>, TokenError> {
    let header = token.split('.').next().ok_or(TokenError::Malformed)?;
    let bytes = B64.decode(header).map_err(|_| TokenError::Malformed)?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    match v.get("kid") {
        None => Ok(None),
        Some(serde_json::Value::String(k)) => Ok(Some(k.clone())),
        Some(_) => Err(TokenError::Malformed),
    }
}

/// Reads the claims without verifying anything: only to find which app's key to verify with.
pub fn peek_app_id(token: &str) -> Result<i64, TokenError> {
    let payload = token.split('.').nth(1).ok_or(TokenError::Malformed)?;
    let bytes = B64.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    Ok(claims.app_id)
}

/// An app's public key, decoded once: decoding is a curve point decompression, about a tenth of
/// a verify, so a verifier that sees many tokens of one app keeps this instead of the bytes.
#[derive(Debug, Clone)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// The 32 bytes gim stores (as [`AppKey::public_key`] gives them).
    pub fn from_bytes(public_key: &[u8]) -> Result<Self, TokenError> {
        let key: [u8; 32] = public_key
            .try_into()
            .map_err(|_| TokenError::BadKey("public key must be 32 bytes".into()))?;
        VerifyingKey::from_bytes(&key)
            .map(Self)
            .map_err(|e| TokenError::BadKey(e.to_string()))
    }

    /// As [`AppKey::public_b64`] gives it.
    pub fn from_b64(s: &str) -> Result<Self, TokenError> {
        let bytes = B64
            .decode(s.trim())
            .map_err(|e| TokenError::BadKey(e.to_string()))?;
        Self::from_bytes(&bytes)
    }

    /// The 32 bytes gim stores.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// As [`AppKey::public_b64`] gives it.
    pub fn to_b64(&self) -> String {
        B64.encode(self.to_bytes())
    }
}

/// Verifies the signature with `public_key` and the expiry against `now_secs`, then the app.
pub fn verify(
    public_key: &[u8],
    token: &str,
    app_id: i64,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    verify_with(&PublicKey::from_bytes(public_key)?, token, app_id, now_secs)
}

/// [`verify`] with a decoded key.
pub fn verify_with(
    key: &PublicKey,
    token: &str,
    app_id: i64,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    let key = &key.0;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header = B64.decode(h).map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    // Refuse anything but EdDSA: no "alg: none", no algorithm confusion.
    if header.get("alg").and_then(|a| a.as_str()) != Some("EdDSA") {
        return Err(TokenError::Malformed);
    }
    let sig: [u8; 64] = B64
        .decode(s)
        .map_err(|_| TokenError::Malformed)?
        .try_into()
        .map_err(|_| TokenError::Malformed)?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    key.verify_strict(signing_input.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let payload = B64.decode(p).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now_secs {
        return Err(TokenError::Expired);
    }
    if claims.app_id != app_id {
        return Err(TokenError::WrongApp);
    }
    Ok(claims)
}

/// [`verify`], plus: a device token for exactly this user and device.
pub fn verify_device(
    public_key: &[u8],
    token: &str,
    app_id: i64,
    user_id: i64,
    device_id: i64,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    let key = PublicKey::from_bytes(public_key)?;
    verify_device_with(&key, token, app_id, user_id, device_id, now_secs)
}

/// [`verify_device`] with a decoded key.
pub fn verify_device_with(
    key: &PublicKey,
    token: &str,
    app_id: i64,
    user_id: i64,
    device_id: i64,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    let c = verify_with(key, token, app_id, now_secs)?;
    if c.kind != TokenKind::Device {
        return Err(TokenError::WrongKind("device"));
    }
    if c.user_id != user_id || c.device_id != device_id {
        return Err(TokenError::WrongSubject);
    }
    Ok(c)
}

/// [`verify`], plus: a server token.
pub fn verify_server(
    public_key: &[u8],
    token: &str,
    app_id: i64,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    verify_server_with(&PublicKey::from_bytes(public_key)?, token, app_id, now_secs)
}

/// [`verify_server`] with a decoded key.
pub fn verify_server_with(
    key: &PublicKey,
    token: &str,
    app_id: i64,
    now_secs: i64,
) -> Result<Claims, TokenError> {
    let c = verify_with(key, token, app_id, now_secs)?;
    if c.kind != TokenKind::Server {
        return Err(TokenError::WrongKind("server"));
    }
    Ok(c)
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    crate::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn device_token_verifies_for_its_subject_only() {
        let k = AppKey::generate();
        let t = k.device_token(1, 10, 100, NOW, 60);
        let c = verify_device(&k.public_key(), &t, 1, 10, 100, NOW).unwrap();
        assert_eq!((c.app_id, c.user_id, c.device_id), (1, 10, 100));
        assert_eq!(
            verify_device(&k.public_key(), &t, 1, 10, 101, NOW),
            Err(TokenError::WrongSubject)
        );
        assert_eq!(
            verify_device(&k.public_key(), &t, 1, 11, 100, NOW),
            Err(TokenError::WrongSubject)
        );
        assert_eq!(
            verify_device(&k.public_key(), &t, 2, 10, 100, NOW),
            Err(TokenError::WrongApp)
        );
        assert_eq!(
            verify_server(&k.public_key(), &t, 1, NOW),
            Err(TokenError::WrongKind("server"))
        );
    }

    #[test]
    fn expired_forged_and_other_key_tokens_fail() {
        let k = AppKey::generate();
        let t = k.device_token(1, 10, 100, NOW, 60);
        assert_eq!(
            verify(&k.public_key(), &t, 1, NOW + 60),
            Err(TokenError::Expired)
        );
        let other = AppKey::generate();
        assert_eq!(
            verify(&other.public_key(), &t, 1, NOW),
            Err(TokenError::BadSignature)
        );
        // Swap in a payload for another user, keeping the signature.
        let forged_payload = B64.encode(
            br#"{"app_id":1,"user_id":11,"device_id":100,"exp":9999999999,"kind":"device"}"#,
        );
        let parts: Vec<&str> = t.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(
            verify(&k.public_key(), &forged, 1, NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&k.public_key(), "a.b", 1, NOW),
            Err(TokenError::Malformed)
        );
        assert_eq!(
            verify(&k.public_key(), "", 1, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let k = AppKey::generate();
        let t = k.server_token(1, NOW, 60);
        let parts: Vec<&str> = t.split('.').collect();
        let none = format!(
            "{}.{}.{}",
            B64.encode(r#"{"alg":"none"}"#),
            parts[1],
            parts[2]
        );
        assert_eq!(
            verify(&k.public_key(), &none, 1, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn private_key_round_trips_and_peek_reads_the_app() {
        let k = AppKey::generate();
        let k2 = AppKey::from_private_b64(&k.private_b64()).unwrap();
        assert_eq!(k.public_key(), k2.public_key());
        assert!(AppKey::from_private_b64("short").is_err());
        assert_eq!(peek_app_id(&k.server_token(7, NOW, 60)).unwrap(), 7);
        assert!(!format!("{k:?}").contains(&k.private_b64()));
    }

    #[test]
    fn tokens_carry_iat_jti_and_the_keys_kid() {
        let k = AppKey::generate();
        let t = k.device_token(1, 10, 100, NOW, 60);
        let c = verify(&k.public_key(), &t, 1, NOW).unwrap();
        assert_eq!(c.iat, Some(NOW));
        let jti = c.jti.clone().unwrap();
        assert_eq!(jti.len(), 22);
        let c2 = verify(
            &k.public_key(),
            &k.device_token(1, 10, 100, NOW, 60),
            1,
            NOW,
        )
        .unwrap();
        assert_ne!(c2.jti, c.jti, "a fresh jti per token");
        assert_eq!(peek_kid(&t), Ok(None));
        let k2 = k.clone().with_kid("2026-12.k_2");
        let t2 = k2.server_token(1, NOW, 60);
        assert_eq!(peek_kid(&t2), Ok(Some("2026-12.k_2".to_string())));
        assert!(verify_server(&k.public_key(), &t2, 1, NOW).is_ok());
        // A token of an older minter: no iat, jti or kid. Still verifies.
        let old = B64.encode(
            br#"{"app_id":1,"user_id":10,"device_id":100,"exp":1800000060,"kind":"device"}"#,
        );
        let input = format!("{}.{old}", B64.encode(HEADER));
        let sig = k.signing.sign(input.as_bytes());
        let old = format!("{input}.{}", B64.encode(sig.to_bytes()));
        let c = verify_device(&k.public_key(), &old, 1, 10, 100, NOW).unwrap();
        assert_eq!((c.iat, c.jti), (None, None));
        assert!(
            valid_kid("a") && !valid_kid("") && !valid_kid("a b") && !valid_kid(&"x".repeat(65))
        );
    }

    #[test]
    fn public_key_round_trips_as_base64() {
        let k = AppKey::generate();
        let p = PublicKey::from_b64(&k.public_b64()).unwrap();
        assert_eq!(p.to_bytes(), k.public_key());
        assert!(verify_with(&p, &k.server_token(3, NOW, 60), 3, NOW).is_ok());
        assert!(PublicKey::from_b64("not base64!").is_err());
        assert!(PublicKey::from_b64(&k.private_b64()[..20]).is_err());
    }
}
