//! The admin API on the admin listener: `POST /apps` with the bearer token, and its refusals.

mod common;

use common::*;
use gim_common::token::AppKey;
use gim_proto::logic::v1 as pb;
use gim_test_support::http;
use std::net::SocketAddr;

const TOKEN: &str = "logic-admin-token-for-tests";

async fn post_apps(addr: SocketAddr, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    http(addr, "POST", "/apps", &headers, body.as_bytes()).await
}

fn new_app(name: &str, key: &AppKey) -> String {
    serde_json::json!({ "name": name, "public_key": key.public_b64() }).to_string()
}

fn error_of(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[tokio::test]
async fn creates_an_app_whose_key_the_caller_keeps() {
    let mut cfg = test_config();
    cfg.logic.admin_token = TOKEN.into();
    let ctx = Ctx::start_with(cfg).await;
    let addr = ctx.logic.admin_addr;
    let bearer = format!("Bearer {TOKEN}");
    let key = AppKey::generate();
    let name = format!("admin-{}", rand_u64());

    // Without the token, with another one, or with another scheme: 401, nothing stored.
    for auth in [
        None,
        Some("Bearer not-the-admin-token-at-all"),
        Some(&format!("Basic {TOKEN}")),
        Some(&format!("Bearer {TOKEN}x")),
    ] {
        let (status, body) = post_apps(addr, auth, &new_app(&name, &key)).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(error_of(&body).contains("admin token"), "{body}");
    }
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app WHERE name = ?")
        .bind(&name)
        .fetch_one(&ctx.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let (status, body) = post_apps(addr, Some(&bearer), &new_app(&name, &key)).await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let app = v["app_id"].as_i64().expect("app_id");
    // The stored public key verifies tokens minted with the caller's private key.
    let mut s = ctx.server.clone();
    let req = pb::ImportUsersReq {
        users: vec![pb::User {
            user_id: 1,
            nickname: "one".into(),
            ..Default::default()
        }],
    };
    let tok = key.server_token(app, Ctx::now(), 60);
    s.import_users(with_server_meta(req.clone(), app, &tok))
        .await
        .expect("server token of the new app");
    let other = AppKey::generate().server_token(app, Ctx::now(), 60);
    let r = s.import_users(with_server_meta(req, app, &other)).await;
    assert_eq!(code(r), gim_common::GimCode::Unauthorized);

    // The name is taken now: 409.
    let (status, body) = post_apps(addr, Some(&bearer), &new_app(&name, &key)).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_of(&body).contains("exists"), "{body}");

    // Bad input: 400 saying what is wrong.
    let long = "n".repeat(65);
    for (body, says) in [
        ("{not json".to_string(), "body"),
        (
            serde_json::json!({ "public_key": key.public_b64() }).to_string(),
            "missing field `name`",
        ),
        (
            serde_json::json!({ "name": "x" }).to_string(),
            "missing field `public_key`",
        ),
        (new_app(" ", &key), "name: must not be empty"),
        (new_app(&long, &key), "name: longer than 64"),
        (
            serde_json::json!({ "name": "x", "public_key": "c2hvcnQ" }).to_string(),
            "public_key",
        ),
        (
            serde_json::json!({ "name": "x", "public_key": key.public_b64(), "private_key": "y" })
                .to_string(),
            "unknown field",
        ),
    ] {
        let (status, answer) = post_apps(addr, Some(&bearer), &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(error_of(&answer).contains(says), "{body}: {answer}");
    }
    // Only POST.
    let (status, _) = http(addr, "GET", "/apps", &[("Authorization", &bearer)], b"").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn is_off_without_a_token() {
    let ctx = Ctx::start().await;
    let key = AppKey::generate();
    let name = format!("admin-{}", rand_u64());
    for auth in [None, Some("Bearer anything-at-all-0123456789")] {
        let (status, body) = post_apps(ctx.logic.admin_addr, auth, &new_app(&name, &key)).await;
        assert_eq!(status, 403, "{body}");
        assert!(error_of(&body).contains("logic.admin_token"), "{body}");
    }
    // The probes stay open.
    let (status, _) = gim_test_support::http_get(ctx.logic.admin_addr, "/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn token_from_a_file_and_a_bad_one_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("  {TOKEN}\n")).unwrap();
    let mut cfg = test_config();
    cfg.logic.admin_token_file = file.display().to_string();
    let ctx = Ctx::start_with(cfg).await;
    let key = AppKey::generate();
    let name = format!("admin-{}", rand_u64());
    let bearer = format!("Bearer {TOKEN}");
    let (status, body) =
        post_apps(ctx.logic.admin_addr, Some(&bearer), &new_app(&name, &key)).await;
    assert_eq!(status, 201, "{body}");

    // Too short (a config built in code skips `Validate`; start checks again).
    let mut cfg = test_config();
    cfg.logic.admin_token = "short".into();
    let err = gim_logic::start(cfg, gim_common::shutdown::Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("logic.admin_token"), "{err}");
    let mut cfg = test_config();
    cfg.logic.admin_token_file = dir.path().join("missing").display().to_string();
    let err = gim_logic::start(cfg, gim_common::shutdown::Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("logic.admin_token_file"), "{err}");
}
