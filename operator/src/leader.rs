//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never both
//! reconcile. Writes use the Lease's resourceVersion, so of two candidates racing for an expired
//! lease exactly one update succeeds (the other gets 409 Conflict).

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use std::time::Duration;

#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    lease: Duration,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("name", &self.name)
            .field("identity", &self.identity)
            .finish()
    }
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease: Duration,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            lease,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// How often a holder renews: a third of the lease, like client-go.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// One attempt: true if this candidate holds the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let secs = self.lease.as_secs().max(1) as i32;
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                let held_for = spec.lease_duration_seconds.unwrap_or(secs) as i64;
                let expired = match &spec.renew_time {
                    Some(t) => t.0 + SignedDuration::from_secs(held_for) < now,
                    None => true,
                };
                let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                if !(mine || expired || vacant) {
                    return Ok(false);
                }
                if !mine {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(secs);
                spec.renew_time = Some(MicroTime(now));
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Blocks until this candidate holds the lease; `report` sees every attempt's outcome.
    pub async fn acquire(&self, report: impl Fn(Result<bool, &kube::Error>)) {
        loop {
            let r = self.try_acquire_or_renew().await;
            report(r.as_ref().map(|b| *b));
            match r {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.renew_every()).await;
        }
    }

    /// Renews until a renewal has not succeeded for a whole lease period, then returns: the
    /// caller must stop acting, because another replica may take over from then on.
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("lease taken by another replica");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
            // Stop a little before the lease runs out so two leaders never overlap.
            if last_ok.elapsed() + self.renew_every() >= self.lease {
                tracing::error!("could not renew the lease in time");
                return;
            }
        }
    }

    /// Gives the lease up on clean shutdown so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}
