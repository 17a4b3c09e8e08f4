//! Reconcile error paths against a mocked API (tower-test): what the operator sends when the
//! spec is malformed or invalid, when a Secret is missing, and how it backs off on API errors.
//! The happy paths run against a real API server in tests/k8s.rs.

use gim_operator::apis::ApiSupport;
use gim_operator::controller::{self, Context, Settings};
use http::{Method, Request, Response};
use kube::api::DynamicObject;
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    body: Value,
}

/// Answers every request with `respond` until the client is dropped; returns what it saw.
fn serve(
    mut handle: Handle,
    respond: impl Fn(&Seen) -> (u16, Value) + Send + 'static,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let s = Seen {
                method: parts.method,
                path: parts.uri.path().to_string(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (code, value) = respond(&s);
            seen.push(s);
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap(),
            );
        }
        seen
    })
}

fn not_found() -> (u16, Value) {
    (
        404,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": "not found", "reason": "NotFound", "code": 404}),
    )
}

/// Echoes writes back (what the API server does, near enough), 404s reads.
fn default_respond(s: &Seen) -> (u16, Value) {
    match s.method {
        Method::GET => not_found(),
        _ => (200, s.body.clone()),
    }
}

fn ctx(client: kube::Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        ApiSupport::latest(),
        Settings {
            registry_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        None,
    ))
}

fn object(spec: Value) -> Arc<DynamicObject> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "gim.io/v1alpha1", "kind": "GimCluster",
            "metadata": {"name": "chat", "namespace": "ns", "uid": "u-1", "generation": 3},
            "spec": spec
        }))
        .unwrap(),
    )
}

fn good_spec() -> Value {
    json!({
        "images": {"conn": "c:1", "logic": "l:1"},
        "mysql": {"name": "db", "key": "url"},
        "redis": {"name": "cache", "key": "url"}
    })
}

fn status_patch(seen: &[Seen]) -> &Seen {
    seen.iter()
        .find(|s| s.method == Method::PATCH && s.path.ends_with("/gimclusters/chat/status"))
        .unwrap_or_else(|| panic!("no status patch in {seen:#?}"))
}

fn degraded(patch: &Seen) -> (String, String, String) {
    let conds = patch.body["status"]["conditions"].as_array().unwrap();
    let c = conds.iter().find(|c| c["type"] == "Degraded").unwrap();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
        c["message"].as_str().unwrap().into(),
    )
}

#[tokio::test]
async fn malformed_spec_is_reported_on_its_own_status_only() {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = serve(handle, default_respond);
    let c = ctx(kube::Client::new(svc, "default"));
    // `images` missing: our types cannot read it.
    let obj = object(json!({"mysql": {"name": "db", "key": "url"}}));
    controller::reconcile(obj, c.clone()).await.unwrap();
    drop(c);
    let seen = server.await.unwrap();
    let patch = status_patch(&seen);
    let (status, reason, message) = degraded(patch);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "MalformedSpec")
    );
    assert!(message.contains("images"), "{message}");
    assert_eq!(patch.body["status"]["observedGeneration"], 3);
    // Nothing but its own status and an Event was written.
    for s in &seen {
        assert!(
            s.path.contains("/gimclusters/chat/status") || s.path.contains("/events"),
            "unexpected {} {}",
            s.method,
            s.path
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.method == Method::POST && s.path.contains("/events"))
    );
}

#[tokio::test]
async fn min_above_max_is_degraded_before_any_read_or_write() {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = serve(handle, default_respond);
    let c = ctx(kube::Client::new(svc, "default"));
    let mut spec = good_spec();
    spec["logic"] = json!({"autoscaling": {"minReplicas": 4, "maxReplicas": 3}});
    controller::reconcile(object(spec), c.clone())
        .await
        .unwrap();
    drop(c);
    let seen = server.await.unwrap();
    let (_, reason, message) = degraded(status_patch(&seen));
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("spec.logic.autoscaling.minReplicas (4) is above maxReplicas (3)"));
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("/secrets/") || s.path.contains("/deployments"))
    );
}

#[tokio::test]
async fn missing_secret_is_degraded_and_nothing_is_applied() {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = serve(handle, default_respond);
    let c = ctx(kube::Client::new(svc, "default"));
    controller::reconcile(object(good_spec()), c.clone())
        .await
        .unwrap();
    drop(c);
    let seen = server.await.unwrap();
    assert_eq!(seen[0].method, Method::GET);
    assert_eq!(seen[0].path, "/api/v1/namespaces/ns/secrets/db");
    let (_, reason, message) = degraded(status_patch(&seen));
    assert_eq!(reason, "SecretMissing");
    assert!(
        message.contains("ns/db") && message.contains("spec.mysql"),
        "{message}"
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.path.contains("/deployments") || s.path.contains("/configmaps"))
    );
}

#[tokio::test]
async fn api_errors_fail_the_reconcile_and_back_off_exponentially() {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = serve(handle, |_| {
        (
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "etcd unavailable", "reason": "InternalError", "code": 500}),
        )
    });
    let c = ctx(kube::Client::new(svc, "default"));
    let err = controller::reconcile(object(good_spec()), c.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("etcd unavailable"), "{err}");
    // Per-object state: this object's delays double, another object starts from the base.
    let d: Vec<Duration> = (0..4).map(|_| c.backoff("ns", "chat")).collect();
    assert_eq!(
        d,
        [1, 2, 4, 8].map(Duration::from_secs).to_vec(),
        "delays double per consecutive failure"
    );
    assert_eq!(c.backoff("ns", "other"), Duration::from_secs(1));
    drop(c);
    server.await.unwrap();
    let s = Settings::default();
    assert_eq!(controller::backoff_delay(&s, 30), s.backoff_max);
}
