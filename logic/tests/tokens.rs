//! Token revocation and rotation (issue 19 item 4), on the test MariaDB and Redis: forced logout
//! of a device or a user (tokens issued until then refused, connections closed on every node),
//! one revoked jti, the app's maximum token lifetime and its iat/jti requirement, and several
//! keys named by kid (added, listed, retired). Tokens of older minters (no iat, jti or kid) keep
//! working while the app's rules allow them.

mod common;

use common::*;
use gim_common::GimCode;
use gim_common::token::{AppKey, Claims, TokenKind};
use gim_proto::logic::v1 as pb;

/// A device token with exactly these claims, signed by `key`.
fn token(key: &AppKey, ctx: &Ctx, user: i64, device: i64, iat: Option<i64>, ttl: i64) -> String {
    let now = Ctx::now();
    key.sign(&Claims {
        app_id: ctx.app.0,
        user_id: user,
        device_id: device,
        exp: now + ttl,
        kind: TokenKind::Device,
        iat,
        jti: iat.map(|_| gim_common::token::new_jti()),
    })
}

/// A sign-in as conn makes it, with this token.
async fn sign_in(ctx: &Ctx, node: &str, user: i64, device: i64, tok: &str) -> Result<(), GimCode> {
    let mut c = ctx.int.clone();
    c.sign_in(pb::SignInReq {
        app_id: ctx.app.0,
        user_id: user,
        device_id: device,
        token: tok.into(),
        node_id: node.into(),
        conn_id: 1,
        client_addr: "127.0.0.1:1".into(),
    })
    .await
    .map(|_| ())
    .map_err(|s| code::<()>(Err(s)))
}

/// A client API call with this token.
async fn call(ctx: &Ctx, user: i64, device: i64, tok: &str) -> Result<(), GimCode> {
    let mut c = ctx.client.clone();
    let req = with_client_meta(pb::GetUserGroupsReq {}, ctx.app.0, user, device, tok);
    c.get_user_groups(req)
        .await
        .map(|_| ())
        .map_err(|s| code::<()>(Err(s)))
}

#[tokio::test]
async fn force_logout_refuses_earlier_tokens_of_a_device_or_user_and_closes_them() {
    let ctx = Ctx::start().await;
    let node = FakeNode::start(&redis_url()).await;
    ctx.import_users(&[1]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    let now = Ctx::now();
    let t1 = token(&ctx.key, &ctx, 1, d1, Some(now), 3600);
    let t2 = token(&ctx.key, &ctx, 1, d2, Some(now), 3600);
    let legacy2 = token(&ctx.key, &ctx, 1, d2, None, 3600);
    sign_in(&ctx, &node.node_id, 1, d1, &t1).await.unwrap();
    call(&ctx, 1, d1, &t1).await.unwrap();
    // An older minter's token (no iat, jti, kid) works by default.
    call(&ctx, 1, d2, &legacy2).await.unwrap();

    let mut s = ctx.server.clone();
    let r = s
        .force_logout(ctx.sreq(pb::ForceLogoutReq {
            user_id: 1,
            device_id: d1,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(r.tokens_after >= now);
    assert!(
        node.rec
            .close_alls(ctx.app.0)
            .iter()
            .any(|c| c.user_id == 1 && c.device_id == d1 && c.reason == "logged out"),
        "every live node is told to close the device's connections before the call returns"
    );
    // The device's old token: refused at sign-in and on the API (also where it was cached).
    assert_eq!(
        sign_in(&ctx, &node.node_id, 1, d1, &t1).await,
        Err(GimCode::Unauthorized)
    );
    assert_eq!(call(&ctx, 1, d1, &t1).await, Err(GimCode::Unauthorized));
    // A token issued after the cut-off works.
    let fresh = token(&ctx.key, &ctx, 1, d1, Some(r.tokens_after + 1), 3600);
    sign_in(&ctx, &node.node_id, 1, d1, &fresh).await.unwrap();
    // The user's other device is not affected.
    call(&ctx, 1, d2, &t2).await.unwrap();
    call(&ctx, 1, d2, &legacy2).await.unwrap();

    // The whole user: every device's earlier tokens, and tokens without iat.
    let r = s
        .force_logout(ctx.sreq(pb::ForceLogoutReq {
            user_id: 1,
            device_id: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        node.rec
            .close_alls(ctx.app.0)
            .iter()
            .any(|c| c.user_id == 1 && c.device_id == 0)
    );
    assert_eq!(call(&ctx, 1, d2, &t2).await, Err(GimCode::Unauthorized));
    assert_eq!(
        call(&ctx, 1, d2, &legacy2).await,
        Err(GimCode::Unauthorized)
    );
    let fresh2 = token(&ctx.key, &ctx, 1, d2, Some(r.tokens_after + 1), 3600);
    call(&ctx, 1, d2, &fresh2).await.unwrap();
    // Bad input: 1006.
    let r = s
        .force_logout(ctx.sreq(pb::ForceLogoutReq {
            user_id: 0,
            device_id: 0,
        }))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
}

#[tokio::test]
async fn one_revoked_jti_is_refused_and_others_are_not() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1]).await;
    let d1 = ctx.register_device().await;
    let now = Ctx::now();
    let keep = token(&ctx.key, &ctx, 1, d1, Some(now), 3600);
    let revoked = ctx.key.device_token(ctx.app.0, 1, d1, now, 3600);
    let jti = gim_common::token::verify(&ctx.key.public_key(), &revoked, ctx.app.0, now)
        .unwrap()
        .jti
        .unwrap();
    call(&ctx, 1, d1, &revoked).await.unwrap();
    let mut s = ctx.server.clone();
    s.revoke_token(ctx.sreq(pb::RevokeTokenReq {
        user_id: 1,
        jti: jti.clone(),
        expires_at: now + 3600,
        device_id: 0,
    }))
    .await
    .unwrap();
    assert_eq!(
        call(&ctx, 1, d1, &revoked).await,
        Err(GimCode::Unauthorized)
    );
    call(&ctx, 1, d1, &keep).await.unwrap();
    // A server token's jti (user 0).
    let server_tok = ctx.key.server_token(ctx.app.0, now, 3600);
    let sjti = gim_common::token::verify(&ctx.key.public_key(), &server_tok, ctx.app.0, now)
        .unwrap()
        .jti
        .unwrap();
    let get = |tok: String| {
        let mut s = ctx.server.clone();
        async move {
            s.get_user(with_server_meta(
                pb::GetUserReq { user_id: 1 },
                ctx.app.0,
                &tok,
            ))
            .await
        }
    };
    get(server_tok.clone()).await.unwrap();
    s.revoke_token(ctx.sreq(pb::RevokeTokenReq {
        user_id: 0,
        jti: sjti,
        expires_at: 0,
        device_id: 0,
    }))
    .await
    .unwrap();
    assert_eq!(code(get(server_tok).await), GimCode::Unauthorized);
    let r = s
        .revoke_token(ctx.sreq(pb::RevokeTokenReq {
            user_id: 1,
            jti: String::new(),
            expires_at: 0,
            device_id: 0,
        }))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
}

#[tokio::test]
async fn the_apps_maximum_lifetime_and_id_requirement_apply() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1]).await;
    let d1 = ctx.register_device().await;
    let now = Ctx::now();
    let year_9999 = token(&ctx.key, &ctx, 1, d1, Some(now), 253_402_300_799 - now);
    let long = token(&ctx.key, &ctx, 1, d1, Some(now), 7200);
    let short = token(&ctx.key, &ctx, 1, d1, Some(now), 600);
    let legacy_long = token(&ctx.key, &ctx, 1, d1, None, 7200);
    let legacy_short = token(&ctx.key, &ctx, 1, d1, None, 600);
    // No limit by default: all accepted (and cached as verified).
    for t in [&year_9999, &long, &short, &legacy_long, &legacy_short] {
        call(&ctx, 1, d1, t).await.unwrap();
    }
    let mut s = ctx.server.clone();
    s.set_token_policy(ctx.sreq(pb::SetTokenPolicyReq {
        max_token_ttl_secs: 3600,
        require_token_ids: false,
    }))
    .await
    .unwrap();
    for t in [&year_9999, &long, &legacy_long] {
        assert_eq!(call(&ctx, 1, d1, t).await, Err(GimCode::Unauthorized));
    }
    assert_eq!(
        sign_in(&ctx, "n", 1, d1, &year_9999).await,
        Err(GimCode::Unauthorized)
    );
    call(&ctx, 1, d1, &short).await.unwrap();
    call(&ctx, 1, d1, &legacy_short).await.unwrap();
    // iat far in the future: refused.
    let future = token(&ctx.key, &ctx, 1, d1, Some(now + 600), 900);
    assert_eq!(call(&ctx, 1, d1, &future).await, Err(GimCode::Unauthorized));
    // Ids required: older minters' tokens refused.
    s.set_token_policy(ctx.sreq(pb::SetTokenPolicyReq {
        max_token_ttl_secs: 3600,
        require_token_ids: true,
    }))
    .await
    .unwrap();
    assert_eq!(
        call(&ctx, 1, d1, &legacy_short).await,
        Err(GimCode::Unauthorized)
    );
    call(&ctx, 1, d1, &short).await.unwrap();
    let r = s
        .set_token_policy(ctx.sreq(pb::SetTokenPolicyReq {
            max_token_ttl_secs: -1,
            require_token_ids: false,
        }))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
}

#[tokio::test]
async fn keys_are_added_listed_and_retired_by_kid() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1]).await;
    let d1 = ctx.register_device().await;
    let now = Ctx::now();
    let k2 = AppKey::generate();
    let mut s = ctx.server.clone();
    s.add_app_key(ctx.sreq(pb::AddAppKeyReq {
        kid: "k2".into(),
        public_key: k2.public_key().to_vec().into(),
    }))
    .await
    .unwrap();
    let k2 = k2.with_kid("k2");
    let by_k2 = k2.device_token(ctx.app.0, 1, d1, now, 3600);
    let by_original = ctx.key.device_token(ctx.app.0, 1, d1, now, 3600);
    call(&ctx, 1, d1, &by_k2).await.unwrap();
    call(&ctx, 1, d1, &by_original).await.unwrap();
    // The new key without its kid is checked against the original key: refused.
    let k2_no_kid = AppKey::from_private_b64(&k2.private_b64())
        .unwrap()
        .device_token(ctx.app.0, 1, d1, now, 3600);
    assert_eq!(
        call(&ctx, 1, d1, &k2_no_kid).await,
        Err(GimCode::Unauthorized)
    );
    // An unknown kid.
    let k3 = AppKey::generate().with_kid("k3");
    assert_eq!(
        call(&ctx, 1, d1, &k3.device_token(ctx.app.0, 1, d1, now, 3600)).await,
        Err(GimCode::Unauthorized)
    );
    // Duplicates and bad ids: 1006.
    for (kid, key) in [
        ("k2", AppKey::generate().public_key().to_vec()),
        ("bad kid", AppKey::generate().public_key().to_vec()),
        ("k4", vec![1, 2, 3]),
    ] {
        let r = s
            .add_app_key(ctx.sreq(pb::AddAppKeyReq {
                kid: kid.into(),
                public_key: key.into(),
            }))
            .await;
        assert_eq!(code(r), GimCode::BadRequest, "{kid}");
    }
    let keys = s
        .list_app_keys(ctx.sreq(pb::ListAppKeysReq {}))
        .await
        .unwrap()
        .into_inner()
        .keys;
    let listed: Vec<(&str, bool)> = keys.iter().map(|k| (k.kid.as_str(), k.retired)).collect();
    assert_eq!(listed, vec![("", false), ("k2", false)]);
    assert_eq!(keys[1].public_key.to_vec(), k2.public_key().to_vec());
    // Rotation: retire the original key; its tokens stop at once (also the cached ones), and
    // server calls go on with a token of the new key.
    let server_k2 = with_server_meta(
        pb::RetireAppKeyReq { kid: "".into() },
        ctx.app.0,
        &k2.server_token(ctx.app.0, now, 3600),
    );
    s.retire_app_key(server_k2).await.unwrap();
    assert_eq!(
        call(&ctx, 1, d1, &by_original).await,
        Err(GimCode::Unauthorized)
    );
    call(&ctx, 1, d1, &by_k2).await.unwrap();
    let r = s.list_app_keys(ctx.sreq(pb::ListAppKeysReq {})).await;
    assert_eq!(
        code(r),
        GimCode::Unauthorized,
        "the original key's server token too"
    );
    // The last active key stays.
    let r = s
        .retire_app_key(with_server_meta(
            pb::RetireAppKeyReq { kid: "k2".into() },
            ctx.app.0,
            &k2.server_token(ctx.app.0, now, 3600),
        ))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
}

/// A forced logout through one logic process is refused by another at once, although that one
/// had the token verified and the user's rules cached.
#[tokio::test]
async fn a_forced_logout_reaches_another_logic_process_at_once() {
    let ctx = Ctx::start().await;
    let other = gim_logic::start(ctx.cfg.clone(), ctx.shutdown.clone())
        .await
        .unwrap();
    let other_client = gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient::new(
        channel(other.client_addr).await,
    );
    ctx.import_users(&[1]).await;
    let d1 = ctx.register_device().await;
    let t = ctx.device_token(1, d1);
    let call_other = || {
        let mut c = other_client.clone();
        let req = with_client_meta(pb::GetUserGroupsReq {}, ctx.app.0, 1, d1, &t);
        async move { c.get_user_groups(req).await }
    };
    call_other().await.unwrap();
    let mut s = ctx.server.clone();
    s.force_logout(ctx.sreq(pb::ForceLogoutReq {
        user_id: 1,
        device_id: 0,
    }))
    .await
    .unwrap();
    eventually("the other process refuses the token", || async {
        call_other().await.is_err().then_some(())
    })
    .await;
    assert_eq!(code(call_other().await), GimCode::Unauthorized);
}
