//! Authentication of the internal APIs: `LogicInt` (conn → logic) and `ConnInt` (logic → conn)
//! accept only calls that carry the cluster's shared secret.
//!
//! Why a shared secret and not mutual TLS: both tiers are one trust domain run by one operator,
//! and the secret rides in gRPC metadata on the channels that exist (no TLS stack on the hot
//! push and sign-in paths, no CA to create, rotate and distribute, no certificate reload). The
//! operator makes one random secret per cluster (a Kubernetes Secret) and mounts it in every
//! pod; the server compares it in constant time so response timing reveals nothing of it. What
//! it does not give: confidentiality of the internal traffic (the secret and the calls travel in
//! plaintext), so the internal ports must stay on the cluster network, behind NetworkPolicies,
//! until TLS lands (see `docs/security.md`).
//!
//! [`AddSecret`] is the client half (a tonic interceptor), [`CheckSecret`] the server half.
//!
//! Rotation without restarts: `internal.secret_file` may hold several secrets, one per line. The
//! first is the one sent; every one is accepted. The file is read again every [`RELOAD_EVERY`]
//! (a Kubernetes Secret volume is updated in place), so an operator rotates by writing
//! `new\nold` (every process accepts both and starts sending the new one), waiting one reload
//! period plus the Secret volume's sync delay, then writing `new` alone.

use crate::config::{ConfigError, InternalConfig};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// gRPC metadata key carrying the secret on internal calls.
pub const SECRET_HEADER: &str = "x-gim-internal-secret";

/// Shortest secret accepted: 16 characters of a random base64 string are 96 bits.
pub const MIN_SECRET_LEN: usize = 16;

/// Checks a secret's form: long enough, and only visible ASCII (it travels as a header value).
pub fn check_secret(s: &str) -> Result<(), String> {
    if s.len() < MIN_SECRET_LEN {
        return Err(format!(
            "must be at least {MIN_SECRET_LEN} characters, got {}",
            s.len()
        ));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters only (no spaces or control bytes)".into());
    }
    Ok(())
}

/// How often a secret file is read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// The cluster's shared secret: the one sent, and every one accepted (the sent one first). Clones
/// share it, so a reload reaches every channel and listener of the process. Its `Debug` never
/// shows a value.
#[derive(Clone)]
pub struct Secret(Arc<RwLock<Keys>>);

#[derive(PartialEq, Eq)]
struct Keys {
    accepted: Vec<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Keys {
    /// One secret per non-empty line, the first to be sent; surrounding whitespace ignored.
    fn parse(text: &str) -> Result<Self, String> {
        let mut accepted = Vec::new();
        for (n, line) in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            check_secret(line).map_err(|r| format!("secret {}: {r}", n + 1))?;
            accepted.push(MetadataValue::try_from(line).map_err(|e| e.to_string())?);
        }
        if accepted.is_empty() {
            return Err("no secret in it".into());
        }
        Ok(Self { accepted })
    }
}

impl Secret {
    pub fn new(s: &str) -> Result<Self, String> {
        check_secret(s)?;
        Self::parse(s)
    }

    /// Several secrets, one per line: the first is sent, all are accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(Self(Arc::new(RwLock::new(Keys::parse(text)?))))
    }

    /// How many secrets are accepted.
    pub fn accepted(&self) -> usize {
        self.0.read().expect("secret lock").accepted.len()
    }

    fn sent(&self) -> MetadataValue<Ascii> {
        self.0.read().expect("secret lock").accepted[0].clone()
    }

    /// Reads `path` again; keeps the current secrets when the file is unreadable or holds none
    /// (a half-written file must not lock the cluster out). Returns whether they changed.
    pub fn reload(&self, path: &str) -> Result<bool, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let keys = Keys::parse(&text)?;
        let mut cur = self.0.write().expect("secret lock");
        if *cur == keys {
            return Ok(false);
        }
        *cur = keys;
        Ok(true)
    }

    /// Reloads from `path` every `every` while any clone of this secret lives (needs a tokio
    /// runtime).
    pub fn watch(&self, path: String, every: Duration) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(keys) = weak.upgrade() else { return };
                match Secret(keys).reload(&path) {
                    Ok(true) => tracing::info!(file = %path, "internal secret reloaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "internal secret file unreadable; keeping the current secret")
                    }
                }
            }
        });
    }

    /// The configured secret, reading `secret_file` if that is the form given. `None` when none
    /// is configured, which is allowed only while `listen` (the internal listener, named by
    /// `listen_key`) is a loopback address.
    pub fn from_config(
        cfg: &InternalConfig,
        listen_key: &str,
        listen: SocketAddr,
    ) -> Result<Option<Self>, ConfigError> {
        cfg.validate_for(listen_key, listen)?;
        if !cfg.secret.is_empty() {
            return Self::new(&cfg.secret)
                .map(Some)
                .map_err(|r| ConfigError::new("internal.secret", r));
        }
        if cfg.secret_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&cfg.secret_file).map_err(|e| {
            ConfigError::new("internal.secret_file", format!("{}: {e}", cfg.secret_file))
        })?;
        let secret = Self::parse(&text).map_err(|r| ConfigError::new("internal.secret_file", r))?;
        if tokio::runtime::Handle::try_current().is_ok() {
            secret.watch(cfg.secret_file.clone(), RELOAD_EVERY);
        }
        Ok(Some(secret))
    }

    fn matches(&self, presented: &[u8]) -> bool {
        // Constant time over each secret's bytes; only lengths can show, and they are not secret.
        // Every accepted secret is compared, so timing does not tell which one matched.
        let keys = self.0.read().expect("secret lock");
        keys.accepted.iter().fold(false, |hit, k| {
            hit | bool::from(k.as_encoded_bytes().ct_eq(presented))
        })
    }
}

/// Client half: adds the secret to every call of a channel (nothing when none is configured).
#[derive(Clone, Debug, Default)]
pub struct AddSecret(pub Option<Secret>);

impl Interceptor for AddSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(s) = &self.0 {
            req.metadata_mut().insert(SECRET_HEADER, s.sent());
        }
        Ok(req)
    }
}

/// A channel whose calls carry the secret.
pub type SecretChannel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AddSecret>;

/// Server half: refuses a call without the secret with UNAUTHENTICATED and reports it to
/// `on_reject` (each tier counts it in its metrics with the service name). Without a configured
/// secret (a loopback-only listener, see [`Secret::from_config`]) every call passes.
#[derive(Clone)]
pub struct CheckSecret {
    secret: Option<Secret>,
    service: &'static str,
    on_reject: Arc<dyn Fn(&'static str) + Send + Sync>,
}

impl std::fmt::Debug for CheckSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckSecret")
            .field("service", &self.service)
            .field("enforced", &self.secret.is_some())
            .finish()
    }
}

impl CheckSecret {
    /// `service`: the gRPC service name it guards, passed to `on_reject`.
    pub fn new(
        secret: Option<Secret>,
        service: &'static str,
        on_reject: impl Fn(&'static str) + Send + Sync + 'static,
    ) -> Self {
        Self {
            secret,
            service,
            on_reject: Arc::new(on_reject),
        }
    }
}

impl Interceptor for CheckSecret {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = &self.secret else {
            return Ok(req);
        };
        let ok = req
            .metadata()
            .get(SECRET_HEADER)
            .is_some_and(|v| secret.matches(v.as_encoded_bytes()));
        if ok {
            return Ok(req);
        }
        (self.on_reject)(self.service);
        // Debug only: the metric is the operator's signal, and a flood of bad calls must not
        // become a flood of log lines.
        tracing::debug!(service = self.service, peer = ?req.remote_addr(), "internal call refused: no valid secret");
        Err(Status::unauthenticated(
            "internal API: missing or wrong cluster secret",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    const S: &str = "0123456789abcdef-cluster";

    fn checker(secret: Option<&str>) -> (CheckSecret, Arc<AtomicU64>) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        let c = CheckSecret::new(secret.map(|s| Secret::new(s).unwrap()), "svc.X", move |s| {
            assert_eq!(s, "svc.X");
            m.fetch_add(1, Ordering::Relaxed);
        });
        (c, n)
    }

    fn with_header(v: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(v) = v {
            r.metadata_mut().insert(SECRET_HEADER, v.parse().unwrap());
        }
        r
    }

    #[test]
    fn the_right_secret_passes_anything_else_is_unauthenticated_and_counted() {
        let (mut c, n) = checker(Some(S));
        assert!(c.call(with_header(Some(S))).is_ok());
        for bad in [
            None,
            Some(""),
            Some("0123456789abcdef-clusteR"),
            Some("0123456789abcdef"),
        ] {
            let e = c.call(with_header(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_client_half_adds_what_the_server_half_checks() {
        let (mut c, _) = checker(Some(S));
        let req = AddSecret(Some(Secret::new(S).unwrap()))
            .call(Request::new(()))
            .unwrap();
        assert!(c.call(req).is_ok());
        let req = AddSecret(None).call(Request::new(())).unwrap();
        assert!(c.call(req).is_err());
    }

    #[test]
    fn without_a_secret_every_call_passes() {
        let (mut c, n) = checker(None);
        assert!(c.call(with_header(None)).is_ok());
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }

    const NEW: &str = "the-rotated-in-cluster-secret";

    #[tokio::test]
    async fn a_rotated_secret_file_is_picked_up_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let p = path.to_str().unwrap().to_string();
        std::fs::write(&path, format!("{S}\n")).unwrap();
        let cfg = InternalConfig {
            secret: String::new(),
            secret_file: p.clone(),
        };
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let secret = Secret::from_config(&cfg, "k", any).unwrap().unwrap();
        secret.watch(p.clone(), Duration::from_millis(50));
        let (mut check, rejected) = {
            let n = Arc::new(AtomicU64::new(0));
            let n2 = n.clone();
            (
                CheckSecret::new(Some(secret.clone()), "svc", move |_| {
                    n2.fetch_add(1, Ordering::Relaxed);
                }),
                n,
            )
        };
        let mut send = AddSecret(Some(secret.clone()));
        let sent = |a: &mut AddSecret| {
            a.call(Request::new(()))
                .unwrap()
                .metadata()
                .get(SECRET_HEADER)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(sent(&mut send), S);
        assert!(check.call(with_header(Some(NEW))).is_err(), "not yet");
        // Step 1 of a rotation: the new secret first, the old one still accepted.
        std::fs::write(&path, format!("{NEW}\n{S}\n")).unwrap();
        wait_for(|| secret.accepted() == 2).await;
        assert_eq!(sent(&mut send), NEW, "the new one is sent");
        assert!(check.call(with_header(Some(NEW))).is_ok());
        assert!(
            check.call(with_header(Some(S))).is_ok(),
            "a peer not reloaded yet"
        );
        // A half-written (empty) file changes nothing.
        std::fs::write(&path, "").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(secret.accepted(), 2);
        // Step 2: the old one retired.
        std::fs::write(&path, format!("{NEW}\n")).unwrap();
        wait_for(|| secret.accepted() == 1).await;
        assert!(
            check.call(with_header(Some(S))).is_err(),
            "the old one is refused"
        );
        assert!(check.call(with_header(Some(NEW))).is_ok());
        assert_eq!(rejected.load(Ordering::Relaxed), 2);
    }

    async fn wait_for(f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "never reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn secrets_are_checked_and_read_from_files() {
        let lo: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let cfg = |secret: &str, file: &str| InternalConfig {
            secret: secret.into(),
            secret_file: file.into(),
        };
        assert!(
            Secret::from_config(&cfg("", ""), "k", lo)
                .unwrap()
                .is_none()
        );
        let e = Secret::from_config(&cfg("", ""), "x.int_listen", any).unwrap_err();
        assert_eq!(e.key, "internal.secret");
        assert!(e.reason.contains("x.int_listen"), "{e}");
        assert_eq!(
            Secret::from_config(&cfg("short", ""), "k", lo)
                .unwrap_err()
                .key,
            "internal.secret"
        );
        assert!(Secret::new("has a space in it!!").is_err());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{S}\n")).unwrap();
        let p = path.to_str().unwrap();
        let s = Secret::from_config(&cfg("", p), "k", any).unwrap().unwrap();
        assert!(s.matches(S.as_bytes()), "trailing newline trimmed");
        assert_eq!(
            Secret::from_config(&cfg(S, p), "k", any).unwrap_err().key,
            "internal.secret",
            "both forms at once"
        );
        let missing = dir.path().join("nope");
        let e = Secret::from_config(&cfg("", missing.to_str().unwrap()), "k", any).unwrap_err();
        assert_eq!(e.key, "internal.secret_file");
        assert!(
            !format!("{s:?}{:?}", cfg(S, "")).contains(S),
            "Debug redacts"
        );
    }
}
