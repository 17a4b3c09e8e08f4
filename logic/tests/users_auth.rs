//! Users, devices, auth (every 1002 and 1005 path) and tenant isolation.

mod common;

use common::*;
use gim_common::GimCode;
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;

#[tokio::test]
async fn add_and_get_users_with_validation_and_codes() {
    let ctx = Ctx::start().await;
    let dev = ctx.register_device().await;
    let mut c = ctx.client.clone();
    let u = pb::User {
        user_id: 0,
        nickname: "alice".into(),
        sex: 1,
        ..Default::default()
    };
    c.add_user(ctx.creq(
        pb::AddUserReq {
            user: Some(u.clone()),
        },
        10,
        dev,
    ))
    .await
    .unwrap();
    let got = c
        .get_user(ctx.creq(pb::GetUserReq { user_id: 10 }, 10, dev))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        (got.user_id, got.nickname.as_str(), got.sex),
        (10, "alice", 1)
    );
    assert!(got.create_time > 0);
    // Again: 1007.
    let r = c
        .add_user(ctx.creq(
            pb::AddUserReq {
                user: Some(u.clone()),
            },
            10,
            dev,
        ))
        .await;
    assert_eq!(code(r), GimCode::UserAlreadyExists);
    // Unknown user: 1010.
    let r = c
        .get_user(ctx.creq(pb::GetUserReq { user_id: 999 }, 10, dev))
        .await;
    assert_eq!(code(r), GimCode::UserNotFound);
    // Bad input: 1006 naming the field.
    let dev2 = ctx.register_device().await;
    let bad = pb::User {
        nickname: "".into(),
        ..Default::default()
    };
    let r = c
        .add_user(ctx.creq(pb::AddUserReq { user: Some(bad) }, 11, dev2))
        .await;
    assert!(gim_msg(r).contains("user.nickname"));
    let bad = pb::User {
        nickname: "x".into(),
        sex: 7,
        ..Default::default()
    };
    let r = c
        .add_user(ctx.creq(pb::AddUserReq { user: Some(bad) }, 11, dev2))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
    let r = c
        .get_user(ctx.creq(pb::GetUserReq { user_id: -1 }, 11, dev2))
        .await;
    assert!(gim_msg(r).contains("user_id"));
    // A client may not add someone else.
    let other = pb::User {
        user_id: 12,
        nickname: "x".into(),
        ..Default::default()
    };
    let r = c
        .add_user(ctx.creq(pb::AddUserReq { user: Some(other) }, 11, dev2))
        .await;
    assert!(gim_msg(r).contains("user.user_id"));
}

#[tokio::test]
async fn import_users_counts_created_and_updated() {
    let ctx = Ctx::start().await;
    let mut s = ctx.server.clone();
    let mk = |id: i64, n: &str| pb::User {
        user_id: id,
        nickname: n.into(),
        ..Default::default()
    };
    let r = s
        .import_users(ctx.sreq(pb::ImportUsersReq {
            users: vec![mk(1, "a"), mk(2, "b")],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.created, r.updated), (2, 0));
    let r = s
        .import_users(ctx.sreq(pb::ImportUsersReq {
            users: vec![mk(2, "b2"), mk(3, "c")],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.created, r.updated), (1, 1));
    let u = s
        .get_user(ctx.sreq(pb::GetUserReq { user_id: 2 }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(u.nickname, "b2", "update visible (cache invalidated)");
    let r = s
        .import_users(ctx.sreq(pb::ImportUsersReq {
            users: vec![mk(4, "d"), mk(4, "d")],
        }))
        .await;
    assert!(gim_msg(r).contains("users.user_id"));
    let r = s
        .import_users(ctx.sreq(pb::ImportUsersReq { users: vec![] }))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
}

#[tokio::test]
async fn register_device_validates() {
    let ctx = Ctx::start().await;
    let mut c = ctx.client.clone();
    let ok = pb::RegisterDeviceReq {
        app_id: ctx.app.0,
        r#type: 5,
        ..Default::default()
    };
    let a = c
        .register_device(ok.clone())
        .await
        .unwrap()
        .into_inner()
        .device_id;
    let b = c
        .register_device(ok.clone())
        .await
        .unwrap()
        .into_inner()
        .device_id;
    assert!(a > 0 && b > a);
    let r = c
        .register_device(pb::RegisterDeviceReq {
            r#type: 9,
            ..ok.clone()
        })
        .await;
    assert!(gim_msg(r).contains("type"));
    let r = c
        .register_device(pb::RegisterDeviceReq {
            app_id: i64::MAX,
            ..ok.clone()
        })
        .await;
    assert!(gim_msg(r).contains("app_id"));
    let r = c
        .register_device(pb::RegisterDeviceReq {
            brand: "x".repeat(65),
            ..ok
        })
        .await;
    assert!(gim_msg(r).contains("brand"));
}

#[tokio::test]
async fn bad_tokens_are_1002_and_foreign_devices_1005() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let dev = ctx.register_device().await;
    let mut c = ctx.client.clone();
    let get = || pb::GetUserReq { user_id: 1 };
    // Valid.
    c.get_user(ctx.creq(get(), 1, dev)).await.unwrap();
    // Expired.
    let t = ctx
        .key
        .device_token(ctx.app.0, 1, dev, Ctx::now() - 100, 10);
    let r = c
        .get_user(with_client_meta(get(), ctx.app.0, 1, dev, &t))
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);
    // Forged (another key).
    let other = gim_common::token::AppKey::generate();
    let t = other.device_token(ctx.app.0, 1, dev, Ctx::now(), 60);
    let r = c
        .get_user(with_client_meta(get(), ctx.app.0, 1, dev, &t))
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);
    // Device mismatch between metadata and token.
    let t = ctx.device_token(1, dev + 1000);
    let r = c
        .get_user(with_client_meta(get(), ctx.app.0, 1, dev, &t))
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);
    // A server token is not a device token; a device token is not a server credential.
    let t = ctx.key.server_token(ctx.app.0, Ctx::now(), 60);
    let r = c
        .get_user(with_client_meta(get(), ctx.app.0, 1, dev, &t))
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);
    let mut s = ctx.server.clone();
    let t = ctx.device_token(1, dev);
    let r = s.get_user(with_server_meta(get(), ctx.app.0, &t)).await;
    assert_eq!(code(r), GimCode::Unauthorized);
    // Missing metadata.
    let r = c.get_user(tonic::Request::new(get())).await;
    assert_eq!(code(r), GimCode::Unauthorized);
    let r = s.get_user(tonic::Request::new(get())).await;
    assert_eq!(code(r), GimCode::Unauthorized);
    // Unknown app.
    let r = c
        .get_user(with_client_meta(get(), i64::MAX, 1, dev, "x.y.z"))
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);

    // The device is now bound to user 1: user 2 cannot use it (1005), on gRPC or at sign-in.
    let r = c.get_user(ctx.creq(get(), 2, dev)).await;
    assert_eq!(code(r), GimCode::DeviceNotBound);
    let mut i = ctx.int.clone();
    let r = i
        .sign_in(pb::SignInReq {
            app_id: ctx.app.0,
            user_id: 2,
            device_id: dev,
            token: ctx.device_token(2, dev),
            node_id: "n".into(),
            conn_id: 1,
            client_addr: String::new(),
        })
        .await;
    assert_eq!(code(r), GimCode::DeviceNotBound);
    // An unregistered device: 1005.
    let r = c.get_user(ctx.creq(get(), 1, i64::MAX - 7)).await;
    assert_eq!(code(r), GimCode::DeviceNotBound);
    // A bad token at sign-in: 1002.
    let r = i
        .sign_in(pb::SignInReq {
            app_id: ctx.app.0,
            user_id: 1,
            device_id: dev,
            token: "nope".into(),
            node_id: "n".into(),
            conn_id: 1,
            client_addr: String::new(),
        })
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);
}

/// Nothing of app A can be read or written with app B's credentials.
#[tokio::test]
async fn tenants_are_isolated() {
    let a = Ctx::start().await;
    let b = Ctx::start().await;
    a.import_users(&[1, 2]).await;
    let dev_a = a.register_device().await;
    let mut sa = a.server.clone();
    let gid = sa
        .create_group(a.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                name: "g".into(),
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: vec![2],
        }))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    a.send_text(1, dev_a, ReceiverType::User, 2, "secret", 0)
        .await
        .unwrap();

    // B's server token against A's app id: 1002.
    let tok_b = b.key.server_token(a.app.0, Ctx::now(), 60);
    let r = sa
        .get_user(with_server_meta(
            pb::GetUserReq { user_id: 1 },
            a.app.0,
            &tok_b,
        ))
        .await;
    assert_eq!(code(r), GimCode::Unauthorized);
    // B's own credentials see none of A's users or groups.
    let mut sb = b.server.clone();
    let r = sb.get_user(b.sreq(pb::GetUserReq { user_id: 1 })).await;
    assert_eq!(code(r), GimCode::UserNotFound);
    let r = sb
        .get_group(b.sreq(pb::GetGroupReq { group_id: gid }))
        .await;
    assert_eq!(code(r), GimCode::GroupNotFound);
    let r = sb
        .add_group_member(b.sreq(pb::AddGroupMemberReq {
            group_id: gid,
            user_ids: vec![1],
        }))
        .await;
    assert_eq!(code(r), GimCode::GroupNotFound);
    let r = sb
        .send_message(b.sreq(send_req(ReceiverType::User, 2, "x", 0)))
        .await;
    assert_eq!(code(r), GimCode::UserNotFound);
    let r = sb
        .send_message(b.sreq(send_req(ReceiverType::NormalGroup, gid, "x", 0)))
        .await;
    assert_eq!(code(r), GimCode::GroupNotFound);
    // A's device cannot be used in B (device ids are global, bindings per app).
    let mut cb = b.client.clone();
    let r = cb
        .get_user(b.creq(pb::GetUserReq { user_id: 1 }, 1, dev_a))
        .await;
    assert_eq!(code(r), GimCode::DeviceNotBound);
    // B's users have empty lists even with the same user ids.
    b.import_users(&[2]).await;
    let dev_b = b.register_device().await;
    assert!(b.sync(2, dev_b, 0, 0).await.messages.is_empty());
    assert_eq!(a.sync(2, dev_a, 0, 0).await.messages.len(), 1);
    // Routes are per app: B signing in user 2 does not touch A's route for user 2.
    a.sign_in(1, dev_a, "node-a", 1).await;
    b.sign_in(2, dev_b, "node-b", 1).await;
    let mut r = redis_conn(&redis_url()).await;
    let ra: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(gim_common::keys::route_key(a.app, gim_common::UserId(2)))
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(ra.is_empty(), "{ra:?}");
}

/// First sign-ins racing for one device, from several users at once (one batch or several):
/// exactly one user gets it, every other gets 1005, and the stored binding is the winner's. Then
/// a storm of first sign-ins, one device each, binds every device to its own user.
#[tokio::test]
async fn racing_first_sign_ins_bind_a_device_to_exactly_one_user() {
    let ctx = Ctx::start().await;
    let users: Vec<i64> = (1..=8).collect();
    ctx.import_users(&users).await;
    let state = &ctx.logic.state;
    for round in 0..5 {
        let dev = ctx.register_device().await;
        let tokens: Vec<String> = users.iter().map(|&u| ctx.device_token(u, dev)).collect();
        let results = futures::future::join_all(users.iter().zip(&tokens).map(|(&u, t)| {
            state.apps.auth_device(
                gim_common::AppId(ctx.app.0),
                gim_common::UserId(u),
                gim_common::DeviceId(dev),
                t,
            )
        }))
        .await;
        let winners: Vec<i64> = users
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(&u, _)| u)
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        for r in results.iter().filter(|r| r.is_err()) {
            let e = r.as_ref().unwrap_err();
            assert_eq!(
                e.gim_code(),
                Some(GimCode::DeviceNotBound),
                "round {round}: {e}"
            );
        }
        let stored: i64 = sqlx::query_scalar("SELECT user_id FROM device WHERE device_id = ?")
            .bind(dev)
            .fetch_one(&ctx.pool)
            .await
            .unwrap();
        assert_eq!(stored, winners[0], "round {round}");
    }
    let mut devs = Vec::new();
    for _ in &users {
        devs.push(ctx.register_device().await);
    }
    let tokens: Vec<String> = users
        .iter()
        .zip(&devs)
        .map(|(&u, &d)| ctx.device_token(u, d))
        .collect();
    let results =
        futures::future::join_all(users.iter().zip(&devs).zip(&tokens).map(|((&u, &d), t)| {
            state.apps.auth_device(
                gim_common::AppId(ctx.app.0),
                gim_common::UserId(u),
                gim_common::DeviceId(d),
                t,
            )
        }))
        .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    for (&u, &d) in users.iter().zip(&devs) {
        let stored: i64 = sqlx::query_scalar("SELECT user_id FROM device WHERE device_id = ?")
            .bind(d)
            .fetch_one(&ctx.pool)
            .await
            .unwrap();
        assert_eq!(stored, u);
    }
}

/// LogicInt serves only conn nodes: a call without the cluster secret, or with another one, is
/// UNAUTHENTICATED and counted, while the client-facing listener needs none.
#[tokio::test]
async fn logic_int_refuses_calls_without_the_cluster_secret() {
    use gim_common::internal::{AddSecret, Secret};
    use gim_proto::logic::v1::logic_int_client::LogicIntClient;
    let ctx = Ctx::start().await;
    let dev = ctx.register_device().await;
    let sync = || pb::SyncReq {
        app_id: ctx.app.0,
        user_id: 10,
        device_id: dev,
        seq: 0,
        limit: 0,
    };
    let ch = channel(ctx.logic.int_addr).await;
    let mut none = LogicIntClient::new(ch.clone());
    let wrong = Secret::new("another-clusters-secret").unwrap();
    let mut wrong = LogicIntClient::with_interceptor(ch, AddSecret(Some(wrong)));
    let e = none.sync(sync()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = wrong.sync(sync()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = wrong
        .send_message(pb::IntSendMessageReq {
            app_id: ctx.app.0,
            user_id: 10,
            device_id: dev,
            req: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    ctx.int.clone().sync(sync()).await.expect("with the secret");
    let metrics = ctx.logic.state.metrics.encode();
    assert!(
        metrics.contains(
            "gim_logic_internal_unauthenticated_total{service=\"gim.logic.v1.LogicInt\"} 3"
        ),
        "{metrics}"
    );
}

/// Sign-in and the client API refuse user ids no other API accepts (0, negative, i64::MIN) with
/// 1006, even with a token the app's key signed for them: such a user could never be named by a
/// send, a group or a business server.
#[tokio::test]
async fn sign_in_refuses_non_positive_user_ids() {
    let ctx = Ctx::start().await;
    let mut i = ctx.int.clone();
    for user in [0, -1, i64::MIN] {
        let dev = ctx.register_device().await;
        let r = i
            .sign_in(pb::SignInReq {
                app_id: ctx.app.0,
                user_id: user,
                device_id: dev,
                token: ctx.device_token(user, dev),
                node_id: "n".into(),
                conn_id: 1,
                client_addr: String::new(),
            })
            .await;
        assert_eq!(code(r), GimCode::BadRequest, "sign-in as user {user}");
        let mut c = ctx.client.clone();
        let r = c
            .get_user(ctx.creq(pb::GetUserReq { user_id: 1 }, user, dev))
            .await;
        assert_eq!(code(r), GimCode::BadRequest, "client call as user {user}");
        // Nothing was bound: the device is still free for a real user.
        ctx.import_users(&[5]).await;
        ctx.sign_in(5, dev, "n", 2).await;
    }
}
