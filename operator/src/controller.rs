//! The reconcile loop: one `GimCluster` in, server-side applied children and a status out.
//!
//! The controller watches GimClusters as untyped objects and parses each one inside its own
//! reconcile, so a cluster our types cannot read (an older or hand-edited object) is reported as
//! `Degraded` on its own status instead of breaking the shared watch for every other cluster.

use crate::apis::ApiSupport;
use crate::autoscale;
use crate::crd::{Condition, GimCluster, GimClusterStatus, TierStatus};
use crate::diagnose::{self, Migration, Problem};
use crate::render::{self, CLUSTER_LABEL, MANAGED_BY, MANAGER, Rendered, Target};
use crate::validate::{self, Invalid};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding an object: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A small fixed set of label values for the errors metric: the API status class, not its
    /// free-text message, so the series count stays bounded.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) => match e.code {
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                409 => "conflict",
                422 => "invalid",
                429 => "throttled",
                500..=599 => "server_error",
                _ => "api_other",
            },
            Error::Kube(kube::Error::SerdeError(_)) => "decode",
            Error::Kube(_) => "transport",
            Error::Json(_) => "encode",
        }
    }
}

/// Tunables; the defaults suit production, tests shorten them.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Periodic re-reconcile (status refresh, connection autoscaling).
    pub resync: Duration,
    /// First retry after an error; doubles per consecutive failure of the same object.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Re-check interval while a migration Job runs.
    pub migration_poll: Duration,
    pub registry_timeout: Duration,
    /// A failed migration Job is deleted and run again this long after it gave up (at once when
    /// the MySQL Secret changes), so a fixed database recovers without anyone deleting it.
    pub migration_retry: Duration,
    /// A conn/logic container running this long without passing readiness is `PodsNotReady`.
    pub not_ready_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            resync: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            migration_poll: Duration::from_secs(5),
            registry_timeout: Duration::from_secs(2),
            migration_retry: Duration::from_secs(120),
            not_ready_grace: Duration::from_secs(120),
        }
    }
}

/// Annotation on the migration Job: the MySQL Secret's resourceVersion it ran with. A failed Job
/// whose Secret has changed since is retried at once.
pub const MYSQL_SECRET_VERSION: &str = "gim.io/mysql-secret-version";

pub struct Context {
    pub client: Client,
    /// Metrics and readiness this process reports.
    pub health: Arc<crate::admin::Health>,
    pub apis: ApiSupport,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Consecutive failures per (namespace, name): the exponential back-off state.
    failures: Mutex<HashMap<(String, String), u32>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("apis", &self.apis)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Context {
    pub fn new(
        client: Client,
        apis: ApiSupport,
        settings: Settings,
        instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance,
            },
        );
        Context {
            client,
            health: Default::default(),
            apis,
            recorder,
            settings,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records one more failure and returns the delay before the next attempt.
    pub fn backoff(&self, ns: &str, name: &str) -> Duration {
        let mut f = self.failures.lock().expect("backoff lock");
        let n = f.entry((ns.to_string(), name.to_string())).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(&self.settings, *n)
    }

    fn reset_backoff(&self, ns: &str, name: &str) {
        self.failures
            .lock()
            .expect("backoff lock")
            .remove(&(ns.to_string(), name.to_string()));
    }
}

/// base * 2^(n-1), capped.
pub fn backoff_delay(s: &Settings, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    s.backoff_base
        .saturating_mul(1u32 << exp)
        .min(s.backoff_max)
}

pub fn gimcluster_resource() -> ApiResource {
    ApiResource::erase::<GimCluster>(&())
}

/// Runs the controller until `shutdown` resolves. `namespace` limits the watch (None = all).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ar = gimcluster_resource();
    let (clusters, deployments, jobs, pods) = match &namespace {
        Some(ns) => (
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            Api::<Deployment>::namespaced(client.clone(), ns),
            Api::<Job>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            Api::<Deployment>::all(client.clone()),
            Api::<Job>::all(client.clone()),
            Api::<Pod>::all(client.clone()),
        ),
    };
    let pod_owner = ar.clone();
    let owned = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
    let controller = Controller::new_with(clusters.clone(), watcher::Config::default(), ar)
        .owns(deployments, owned.clone())
        .owns(jobs, owned)
        // Pods carry the cluster label (not an owner reference to the GimCluster): their status
        // changes (image pulls, crashes, readiness) feed the Degraded condition.
        .watches(
            pods,
            watcher::Config::default().labels(CLUSTER_LABEL),
            move |pod: Pod| {
                let ns = pod.namespace()?;
                let cluster = pod.labels().get(CLUSTER_LABEL)?;
                Some(ObjectRef::new_with(cluster, pod_owner.clone()).within(&ns))
            },
        );
    let health = ctx.health.clone();
    let store = controller.store();
    health.set_store(store.clone());
    // Not `store.wait_until_ready()`: kube's store wakes only the last of several waiters, and
    // the controller's own runner waits on it too. One list of the same API with the same
    // credentials proves the same: the CRD is served and this account may read it.
    let synced = health.clone();
    let list_api = clusters.clone();
    let retry = ctx.settings.backoff_base;
    tokio::spawn(async move {
        let mut delay = retry;
        loop {
            match list_api
                .list_metadata(&ListParams::default().limit(1))
                .await
            {
                Ok(_) => return synced.set_synced(),
                Err(e) => synced.watch_error(&e.to_string()),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| {
            let health = health.clone();
            async move {
                match res {
                    Ok((obj, _)) => tracing::debug!(cluster = %obj, "reconciled"),
                    Err(kube::runtime::controller::Error::QueueError(e)) => {
                        health.watch_error(&e.to_string());
                        tracing::warn!(error = %e, "watch failed");
                    }
                    Err(e) => tracing::warn!(error = %e, "reconcile failed"),
                }
            }
        })
        .await;
}

fn error_policy(obj: Arc<DynamicObject>, err: &Error, ctx: Arc<Context>) -> Action {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let delay = ctx.backoff(&ns, &name);
    tracing::warn!(namespace = %ns, name = %name, error = %err, retry_in = ?delay, "reconcile error");
    Action::requeue(delay)
}

/// Entry point per object; public for the mocked-API tests.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = tokio::time::Instant::now();
    let res = reconcile_object(obj, &ctx).await;
    ctx.health
        .metrics
        .reconciled(started, res.as_ref().map(|_| ()));
    res
}

async fn reconcile_object(obj: Arc<DynamicObject>, ctx: &Context) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    if obj.metadata.deletion_timestamp.is_some() {
        // Children carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let prev = previous_status(&obj);
    let generation = obj.metadata.generation;
    let reference = obj.object_ref(&gimcluster_resource());
    let mut cx = Cx {
        ctx,
        ns: &ns,
        name: &name,
        generation,
        prev: &prev,
        reference,
    };
    let gc: GimCluster = match serde_json::to_value(&*obj).and_then(serde_json::from_value) {
        Ok(gc) => gc,
        Err(e) => {
            let inv = Invalid {
                reason: "MalformedSpec",
                message: format!("cannot read spec: {e}"),
            };
            cx.degrade(inv).await?;
            ctx.reset_backoff(&ns, &name);
            return Ok(Action::requeue(ctx.settings.resync * 10));
        }
    };
    let action = cx.reconcile_cluster(&gc).await?;
    ctx.reset_backoff(&ns, &name);
    Ok(action)
}

fn previous_status(obj: &DynamicObject) -> GimClusterStatus {
    obj.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

/// Per-reconcile state.
struct Cx<'a> {
    ctx: &'a Context,
    ns: &'a str,
    name: &'a str,
    generation: Option<i64>,
    prev: &'a GimClusterStatus,
    reference: ObjectReference,
}

fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Sets one condition, keeping its transition time when the status did not change.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status_s = if status { "True" } else { "False" };
    // The v1.20 API server reads an empty string in a custom resource as null, which the
    // schema then rejects: never send one.
    let message = if message.is_empty() { reason } else { message };
    let now = now_rfc3339();
    match conds.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_s {
                c.last_transition_time = now;
            }
            c.status = status_s.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conds.push(Condition {
            type_: type_.into(),
            status: status_s.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

fn is_true(conds: &[Condition], type_: &str) -> bool {
    conds.iter().any(|c| c.type_ == type_ && c.status == "True")
}

impl Cx<'_> {
    fn client(&self) -> Client {
        self.ctx.client.clone()
    }

    async fn event(&self, type_: EventType, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.ctx.recorder.publish(&ev, &self.reference).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    async fn patch_status(&self, status: &GimClusterStatus) -> Result<(), Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client(), self.ns, &gimcluster_resource());
        api.patch_status(
            self.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
        Ok(())
    }

    /// Reports a problem on the cluster's own status and applies nothing.
    async fn degrade(&mut self, inv: Invalid) -> Result<(), Error> {
        let mut status = self.prev.clone();
        let was = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| (c.status.clone(), c.message.clone()));
        let g = self.generation;
        set_condition(
            &mut status.conditions,
            "Degraded",
            true,
            inv.reason,
            &inv.message,
            g,
        );
        set_condition(
            &mut status.conditions,
            "Ready",
            false,
            inv.reason,
            &inv.message,
            g,
        );
        set_condition(
            &mut status.conditions,
            "Progressing",
            false,
            inv.reason,
            "reconciliation is stopped until the spec is fixed",
            g,
        );
        status.observed_generation = g;
        tracing::warn!(namespace = %self.ns, name = %self.name, reason = inv.reason, message = %inv.message, "degraded");
        self.patch_status(&status).await?;
        if was != Some(("True".into(), inv.message.clone())) {
            self.event(EventType::Warning, inv.reason, "Validate", inv.message)
                .await;
        }
        Ok(())
    }

    /// The trimmed value and the Secret's resourceVersion.
    async fn secret_value(
        &self,
        what: &str,
        r: &crate::crd::SecretKeyRef,
    ) -> Result<Result<(String, String), Invalid>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client(), self.ns);
        let Some(secret) = api.get_opt(&r.name).await? else {
            return Ok(Err(Invalid {
                reason: "SecretMissing",
                message: format!("Secret {}/{} (spec.{what}) not found", self.ns, r.name),
            }));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&r.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .cloned()
            });
        let version = secret.metadata.resource_version.clone().unwrap_or_default();
        Ok(match value {
            Some(v) if !v.trim().is_empty() => Ok((v.trim().to_string(), version)),
            _ => Err(Invalid {
                reason: "SecretMissing",
                message: format!(
                    "Secret {}/{} (spec.{what}) has no key {:?}",
                    self.ns, r.name, r.key
                ),
            }),
        })
    }

    /// Creates the cluster's internal secret once, with a random value. An existing one is
    /// never rewritten: running pods hold its value, and a new one would lock them out of each
    /// other until every pod restarted.
    async fn ensure_internal_secret(&self, t: &Target<'_>) -> Result<(), Error> {
        let api: Api<Secret> = Api::namespaced(self.client(), self.ns);
        let name = render::internal_secret_name(self.name);
        if api.get_opt(&name).await?.is_some() {
            return Ok(());
        }
        let bytes: [u8; 32] = rand::Rng::random(&mut rand::rng());
        let value = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match api
            .create(&PostParams::default(), &render::internal_secret(t, value))
            .await
        {
            Ok(_) => {
                self.event(
                    EventType::Normal,
                    "CreatedSecret",
                    "Create",
                    format!("Secret {name} holds the cluster's internal API secret"),
                )
                .await;
                Ok(())
            }
            // Another reconcile created it meanwhile: keep that one.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn reconcile_cluster(&mut self, gc: &GimCluster) -> Result<Action, Error> {
        let spec = &gc.spec;
        if let Err(inv) = validate::check(spec) {
            self.degrade(inv).await?;
            return Ok(Action::requeue(self.ctx.settings.resync * 10));
        }
        let mysql_version = match self.secret_value("mysql", &spec.mysql).await? {
            Ok((_, version)) => version,
            Err(inv) => {
                self.degrade(inv).await?;
                return Ok(Action::requeue(self.ctx.settings.resync));
            }
        };
        let redis_url = match self.secret_value("redis", &spec.redis).await? {
            Ok((u, _)) => u,
            Err(inv) => {
                self.degrade(inv).await?;
                return Ok(Action::requeue(self.ctx.settings.resync));
            }
        };
        let registry = match autoscale::read_registry(
            &redis_url,
            self.ctx.settings.registry_timeout,
        )
        .await
        {
            Ok(s) => Some(s),
            Err(e) => {
                // Status and autoscaling hold their last values; workloads are unaffected.
                tracing::warn!(namespace = %self.ns, name = %self.name, error = %e, "node registry unreadable");
                None
            }
        };

        let deployments: Api<Deployment> = Api::namespaced(self.client(), self.ns);
        let live_conn = deployments.get_opt(&render::conn_name(self.name)).await?;
        let mut status = self.prev.clone();
        let conn_replicas = match &spec.conn.autoscaling {
            None => spec.conn.replicas,
            Some(a) => match live_conn.as_ref().and_then(|d| d.spec.replicas) {
                // First rollout: size for the load there is, nothing to cool down from.
                None => match registry {
                    Some(r) => autoscale::wanted_replicas(a, r.connections),
                    None => spec.conn.replicas.clamp(a.min_replicas, a.max_replicas),
                },
                Some(current) => {
                    let since = status
                        .last_conn_scale_time
                        .as_deref()
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .map(|t| {
                            Duration::try_from(Timestamp::now().duration_since(t))
                                .unwrap_or_default()
                        });
                    let conns = registry.map(|r| r.connections);
                    let (n, changed) = autoscale::decide(a, current, conns, since);
                    if changed {
                        status.last_conn_scale_time = Some(now_rfc3339());
                        self.event(
                            EventType::Normal,
                            "ScaledConn",
                            "Scale",
                            format!(
                                "conn replicas {current} -> {n} for {} live connections",
                                conns.map_or("unknown".to_string(), |c| c.to_string())
                            ),
                        )
                        .await;
                    }
                    n
                }
            },
        };

        let target = Target::from_cluster(gc, conn_replicas);
        let rendered = match render::render(&target) {
            Ok(r) => r,
            Err(inv) => {
                self.degrade(inv).await?;
                return Ok(Action::requeue(self.ctx.settings.resync * 10));
            }
        };

        self.apply(&rendered.config_map).await?;
        self.ensure_internal_secret(&target).await?;

        let pods: Api<Pod> = Api::namespaced(self.client(), self.ns);
        let pods = pods
            .list(&ListParams::default().labels(&format!("{CLUSTER_LABEL}={}", self.name)))
            .await?
            .items;

        // Schema migration gates every pod template change: until the Job for the current logic
        // image has succeeded, Deployments keep running what they run.
        let jobs: Api<Job> = Api::namespaced(self.client(), self.ns);
        let job_name = rendered.migrate_job.name_any();
        let migration = match jobs.get_opt(&job_name).await? {
            None => {
                // Created once and never re-applied: a Job's pod template is immutable.
                let mut job = rendered.migrate_job.clone();
                job.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(MYSQL_SECRET_VERSION.into(), mysql_version.clone());
                jobs.create(&Default::default(), &job).await?;
                self.event(
                    EventType::Normal,
                    "MigrationStarted",
                    "Migrate",
                    format!(
                        "Job {job_name} runs gim-logic migrate for {}",
                        spec.images.logic
                    ),
                )
                .await;
                Migration::Pending(None)
            }
            Some(job) => {
                let m = diagnose::migration(&job, &pods);
                if let Migration::Failed { at, .. } = &m {
                    self.retry_failed_migration(&jobs, &job, *at, &mysql_version)
                        .await?;
                }
                m
            }
        };

        let g = self.generation;
        let (migrated, problem, failed) = match migration {
            Migration::Succeeded => (true, None, false),
            Migration::Pending(p) => (false, p, false),
            Migration::Failed { problem, .. } => (false, Some(problem), true),
        };
        if !migrated {
            match &problem {
                Some(p) => self.set_degraded(&mut status, Some(p)).await,
                None => set_condition(
                    &mut status.conditions,
                    "Degraded",
                    false,
                    "Reconciling",
                    "spec is valid",
                    g,
                ),
            }
            if failed {
                set_condition(
                    &mut status.conditions,
                    "Progressing",
                    false,
                    diagnose::MIGRATION_FAILED,
                    &format!(
                        "migration failed: running pods are unchanged; retried {}s after the \
                         Job gave up, or at once when the MySQL Secret changes",
                        self.ctx.settings.migration_retry.as_secs()
                    ),
                    g,
                );
            } else {
                set_condition(
                    &mut status.conditions,
                    "Progressing",
                    true,
                    "Migrating",
                    &format!("waiting for migration Job {job_name}"),
                    g,
                );
            }
            if !is_true(&status.conditions, "Ready") || live_conn.is_none() {
                set_condition(
                    &mut status.conditions,
                    "Ready",
                    false,
                    "Migrating",
                    "schema migration has not finished",
                    g,
                );
            }
            status.observed_generation = g;
            if let Some(r) = registry {
                status.connections = r.connections as i64;
            }
            if &status != self.prev {
                self.patch_status(&status).await?;
            }
            return Ok(Action::requeue(self.ctx.settings.migration_poll));
        }

        // Conn follows logic: a conn rollout drains every client, so it does not start onto a
        // logic tier whose pods are failing. The spec still reaches logic (it may be the fix).
        let now = Timestamp::now();
        let grace = self.ctx.settings.not_ready_grace;
        let logic_problem = diagnose::workload("logic", &pods, now, grace);
        let logic = self.apply(&rendered.logic).await?;
        let held = match (&logic_problem, &live_conn) {
            (Some(_), Some(live)) if template_changed(live, &rendered.conn) => Some(live.clone()),
            _ => None,
        };
        let conn = match held.clone() {
            Some(live) => {
                tracing::warn!(namespace = %self.ns, name = %self.name, "conn rollout held: logic is degraded");
                live
            }
            None => self.apply(&rendered.conn).await?,
        };
        for s in &rendered.services {
            self.apply(s).await?;
        }
        for p in &rendered.network_policies {
            self.apply(p).await?;
        }
        if let Some(ar) = &self.ctx.apis.pdb {
            for p in &rendered.pdbs {
                self.apply_as(p, ar).await?;
            }
        }
        let hpa_ar = self.ctx.apis.hpa.clone();
        match (&rendered.logic_hpa, &hpa_ar) {
            (Some(h), Some(ar)) => {
                self.apply_as(h, ar).await?;
            }
            (Some(_), None) => tracing::warn!(
                namespace = %self.ns, name = %self.name,
                "spec.logic.autoscaling is set but the server has no HPA v2 API: skipped"
            ),
            _ => {}
        }
        self.prune(&rendered).await?;

        status.conn = tier_status(&conn, self.name, "conn");
        status.logic = tier_status(&logic, self.name, "logic");
        if let Some(r) = registry {
            status.connections = r.connections as i64;
        }
        let ready = held.is_none() && rolled(&conn) && rolled(&logic);
        let problem = logic_problem.or_else(|| diagnose::workload("conn", &pods, now, grace));
        self.set_degraded(&mut status, problem.as_ref()).await;
        if ready {
            set_condition(
                &mut status.conditions,
                "Ready",
                true,
                "AllReplicasReady",
                "all replicas ready and up to date",
                g,
            );
            set_condition(
                &mut status.conditions,
                "Progressing",
                false,
                "Complete",
                "rollout complete",
                g,
            );
        } else {
            let mut msg = format!(
                "conn {}/{} ready, logic {}/{} ready",
                status.conn.ready_replicas,
                status.conn.replicas,
                status.logic.ready_replicas,
                status.logic.replicas
            );
            let reason = if held.is_some() {
                msg.push_str("; conn rollout held until logic recovers (see Degraded)");
                "RolloutHeld"
            } else {
                "RollingOut"
            };
            set_condition(&mut status.conditions, "Ready", false, reason, &msg, g);
            set_condition(&mut status.conditions, "Progressing", true, reason, &msg, g);
        }
        status.observed_generation = g;
        if &status != self.prev {
            self.patch_status(&status).await?;
        }
        if spec.conn.autoscaling.is_some() {
            // Connection counts change without any watch event: poll.
            return Ok(Action::requeue(
                self.ctx.settings.resync.min(Duration::from_secs(15)),
            ));
        }
        Ok(Action::requeue(self.ctx.settings.resync))
    }

    /// Sets Degraded from what the pods and Jobs say (False with reason `Reconciled` when
    /// nothing is wrong) and publishes a Warning event when the reason changes.
    async fn set_degraded(&self, status: &mut GimClusterStatus, problem: Option<&Problem>) {
        let g = self.generation;
        let Some(p) = problem else {
            set_condition(
                &mut status.conditions,
                "Degraded",
                false,
                "Reconciled",
                "all objects applied",
                g,
            );
            return;
        };
        let was_same = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == p.reason);
        set_condition(
            &mut status.conditions,
            "Degraded",
            true,
            p.reason,
            &p.message,
            g,
        );
        if !was_same {
            tracing::warn!(namespace = %self.ns, name = %self.name, reason = p.reason, message = %p.message, "degraded");
            self.event(EventType::Warning, p.reason, "Diagnose", p.message.clone())
                .await;
        }
    }

    /// Deletes a failed migration Job once the retry interval has passed since it gave up, or
    /// at once when the MySQL Secret changed since it ran; the next reconcile creates it anew.
    async fn retry_failed_migration(
        &self,
        jobs: &Api<Job>,
        job: &Job,
        failed_at: Option<Timestamp>,
        mysql_version: &str,
    ) -> Result<(), Error> {
        let ran_with = job
            .annotations()
            .get(MYSQL_SECRET_VERSION)
            .map(String::as_str);
        let secret_changed = ran_with.is_some_and(|v| v != mysql_version);
        let waited = failed_at.is_none_or(|t| {
            Duration::try_from(Timestamp::now().duration_since(t)).unwrap_or_default()
                >= self.ctx.settings.migration_retry
        });
        if !(secret_changed || waited) {
            return Ok(());
        }
        let name = job.name_any();
        match jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let why = if secret_changed {
            "the MySQL Secret changed"
        } else {
            "the retry interval passed"
        };
        self.event(
            EventType::Normal,
            "MigrationRetried",
            "Migrate",
            format!("deleted failed Job {name} to run the migration again: {why}"),
        )
        .await;
        Ok(())
    }

    /// Server-side apply with our field manager. `force` takes over fields another manager set
    /// (e.g. a `kubectl edit`), which is what a controller owning these objects wants.
    async fn apply<K>(&self, obj: &K) -> Result<K, Error>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client(), self.ns);
        Ok(api
            .patch(
                &obj.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await?)
    }

    /// Applies a typed object under another version of the same kind (PDB/HPA on old servers).
    async fn apply_as<K: Serialize + ResourceExt>(
        &self,
        obj: &K,
        ar: &ApiResource,
    ) -> Result<(), Error> {
        let mut v = serde_json::to_value(obj)?;
        v["apiVersion"] = ar.api_version.clone().into();
        let api: Api<DynamicObject> = Api::namespaced_with(self.client(), self.ns, ar);
        api.patch(
            &obj.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&v),
        )
        .await?;
        Ok(())
    }

    /// Deletes children this cluster no longer asks for (found by label, confirmed by owner).
    async fn prune(&self, r: &Rendered) -> Result<(), Error> {
        let names = |it: Vec<String>| it.into_iter().collect::<BTreeSet<_>>();
        let mut kinds: Vec<(ApiResource, BTreeSet<String>)> = vec![
            (
                ApiResource::erase::<ConfigMap>(&()),
                names(vec![r.config_map.name_any()]),
            ),
            (
                ApiResource::erase::<Service>(&()),
                names(r.services.iter().map(|s| s.name_any()).collect()),
            ),
            (
                ApiResource::erase::<Deployment>(&()),
                names(vec![r.conn.name_any(), r.logic.name_any()]),
            ),
            (
                ApiResource::erase::<Job>(&()),
                names(vec![r.migrate_job.name_any()]),
            ),
            (
                ApiResource::erase::<NetworkPolicy>(&()),
                names(r.network_policies.iter().map(|p| p.name_any()).collect()),
            ),
        ];
        if let Some(ar) = &self.ctx.apis.pdb {
            kinds.push((
                ar.clone(),
                names(r.pdbs.iter().map(|p| p.name_any()).collect()),
            ));
        }
        if let Some(ar) = &self.ctx.apis.hpa {
            kinds.push((
                ar.clone(),
                names(r.logic_hpa.iter().map(|h| h.name_any()).collect()),
            ));
        }
        let selector = format!("{CLUSTER_LABEL}={},{MANAGED_BY}={MANAGER}", self.name);
        let uid = r
            .config_map
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.first())
            .map(|o| o.uid.clone())
            .unwrap_or_default();
        for (ar, keep) in kinds {
            let api: Api<DynamicObject> = Api::namespaced_with(self.client(), self.ns, &ar);
            let list = api
                .list_metadata(&ListParams::default().labels(&selector))
                .await?;
            for item in list.items {
                let name = item.name_any();
                let ours = item.owner_references().iter().any(|o| o.uid == uid);
                if keep.contains(&name) || !ours {
                    continue;
                }
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {
                        self.event(
                            EventType::Normal,
                            "Pruned",
                            "Delete",
                            format!("deleted {} {name}: no longer part of the spec", ar.kind),
                        )
                        .await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

/// A Deployment done rolling: its controller has seen the current spec, every desired pod runs
/// the current template and is ready, and no pod of an older template is left. readyReplicas
/// alone is not enough: mid-rollout it counts the old pods still serving (with maxSurge 1 and one
/// replica: one old ready pod, one new unready one, readyReplicas 1).
fn rolled(d: &Deployment) -> bool {
    let desired = d.spec.replicas.unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) >= desired
        && st.replicas.unwrap_or(0) <= desired
        && st.ready_replicas.unwrap_or(0) >= desired
}

/// Whether applying `rendered` would change the live Deployment's pod template (and so roll it).
fn template_changed(live: &Deployment, rendered: &Deployment) -> bool {
    let hash = |d: &Deployment| d.annotations().get(render::TEMPLATE_HASH).cloned();
    hash(live) != hash(rendered)
}

fn tier_status(d: &Deployment, cluster: &str, component: &str) -> TierStatus {
    let replicas = d.spec.replicas.unwrap_or(1);
    let ready = d
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    TierStatus {
        replicas,
        ready_replicas: ready,
        summary: Some(format!("{ready}/{replicas}")),
        selector: Some(render::selector_string(cluster, component)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(desired: i32, status: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "d", "generation": 2},
            "spec": {"replicas": desired, "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn rolled_only_when_no_old_pod_is_left() {
        let done = serde_json::json!({"observedGeneration": 2, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1});
        assert!(rolled(&deployment(1, done)));
        // Surge pod up but not ready; the old pod still counts as ready.
        let mid = serde_json::json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 1, "readyReplicas": 1});
        assert!(!rolled(&deployment(1, mid)));
        let stale = serde_json::json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1});
        assert!(!rolled(&deployment(1, stale)));
        let unready = serde_json::json!({"observedGeneration": 2, "replicas": 2,
            "updatedReplicas": 2, "readyReplicas": 1});
        assert!(!rolled(&deployment(2, unready)));
        assert!(rolled(&deployment(
            0,
            serde_json::json!({"observedGeneration": 2})
        )));
    }
}
