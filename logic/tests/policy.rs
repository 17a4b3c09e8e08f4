//! Blocks and suspension (issue 19 item 5), on the test MariaDB and Redis: a block refuses the
//! blocked user's 1:1 sends with 1020 (client API and conn's LogicInt path), app and user
//! suspension refuse sign-ins, client calls and sends (1021, 1022) and close live connections on
//! every conn node, and a change reaches another logic process at once (not after the TTL).

mod common;

use common::*;
use gim_common::GimCode;
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;
use std::time::Duration;

/// [`eventually`] for a condition.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, || {
        let fut = f();
        async move { fut.await.then_some(()) }
    })
    .await
}

fn is_code<T>(r: &Result<T, tonic::Status>, c: GimCode) -> bool {
    matches!(r, Err(s) if gim_common::GimError::from_status(s).is_some_and(|e| e.code == c))
}

fn sign_in_req(ctx: &Ctx, user: i64, device: i64, node: &str) -> pb::SignInReq {
    pb::SignInReq {
        app_id: ctx.app.0,
        user_id: user,
        device_id: device,
        token: ctx.device_token(user, device),
        node_id: node.into(),
        conn_id: 1,
        client_addr: "127.0.0.1:1".into(),
    }
}

fn int_send(ctx: &Ctx, user: i64, device: i64, to: i64, text: &str) -> pb::IntSendMessageReq {
    pb::IntSendMessageReq {
        app_id: ctx.app.0,
        user_id: user,
        device_id: device,
        req: Some(send_req(ReceiverType::User, to, text, 0)),
    }
}

#[tokio::test]
async fn a_blocked_users_one_to_one_sends_get_1020() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    let mut c = ctx.client.clone();
    let mut g = c.clone();
    let gid = g
        .create_group(ctx.creq(
            pb::CreateGroupReq {
                group: Some(pb::Group {
                    name: "g".into(),
                    r#type: 1,
                    ..Default::default()
                }),
                member_ids: vec![1],
            },
            2,
            d2,
        ))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    // Before the block: 1 -> 2 is fine.
    ctx.send_text(1, d1, ReceiverType::User, 2, "before", 0)
        .await
        .unwrap();
    c.block_user(ctx.creq(pb::BlockUserReq { user_id: 1 }, 2, d2))
        .await
        .unwrap();
    // Idempotent.
    c.block_user(ctx.creq(pb::BlockUserReq { user_id: 1 }, 2, d2))
        .await
        .unwrap();
    let r = ctx
        .send_text(1, d1, ReceiverType::User, 2, "blocked", 0)
        .await;
    assert_eq!(code(r), GimCode::Blocked);
    // conn's path (LogicInt.SendMessage) too.
    let mut int = ctx.int.clone();
    let r = int.send_message(int_send(&ctx, 1, d1, 2, "blocked")).await;
    assert_eq!(code(r), GimCode::Blocked);
    // The other way, group messages and other users are not affected.
    ctx.send_text(2, d2, ReceiverType::User, 1, "the blocker may", 0)
        .await
        .unwrap();
    ctx.send_text(1, d1, ReceiverType::NormalGroup, gid, "group", 0)
        .await
        .unwrap();
    ctx.send_text(3, d1 + 1_000_000, ReceiverType::User, 2, "x", 0)
        .await
        .map(|_| ())
        .unwrap_or_else(|s| assert_ne!(code::<()>(Err(s)), GimCode::Blocked));
    let list = c
        .list_blocked_users(ctx.creq(pb::ListBlockedUsersReq {}, 2, d2))
        .await
        .unwrap()
        .into_inner()
        .user_ids;
    assert_eq!(list, vec![1]);
    // Bad input: itself (1006), a user the app does not have (1010), a bad id (1006).
    let r = c
        .block_user(ctx.creq(pb::BlockUserReq { user_id: 2 }, 2, d2))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
    let r = c
        .block_user(ctx.creq(pb::BlockUserReq { user_id: 999 }, 2, d2))
        .await;
    assert_eq!(code(r), GimCode::UserNotFound);
    let r = c
        .block_user(ctx.creq(pb::BlockUserReq { user_id: -1 }, 2, d2))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
    // Unblocked: sends again.
    c.unblock_user(ctx.creq(pb::UnblockUserReq { user_id: 1 }, 2, d2))
        .await
        .unwrap();
    ctx.send_text(1, d1, ReceiverType::User, 2, "after", 0)
        .await
        .unwrap();
    let list = c
        .list_blocked_users(ctx.creq(pb::ListBlockedUsersReq {}, 2, d2))
        .await
        .unwrap()
        .into_inner()
        .user_ids;
    assert!(list.is_empty());
}

#[tokio::test]
async fn a_suspended_user_cannot_sign_in_call_or_send_and_is_closed_everywhere() {
    let ctx = Ctx::start().await;
    let node = FakeNode::start(&redis_url()).await;
    ctx.import_users(&[1, 2]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    ctx.sign_in(1, d1, &node.node_id, 1).await;
    let mut s = ctx.server.clone();
    s.set_user_suspended(ctx.sreq(pb::SetUserSuspendedReq {
        user_id: 1,
        suspended: true,
    }))
    .await
    .unwrap();
    // Every live node was told to close user 1's connections.
    until("CloseConns for user 1", || async {
        node.rec
            .close_alls(ctx.app.0)
            .iter()
            .any(|c| c.user_id == 1 && c.device_id == 0 && c.reason == "user suspended")
    })
    .await;
    let mut int = ctx.int.clone();
    let r = int.sign_in(sign_in_req(&ctx, 1, d1, &node.node_id)).await;
    assert_eq!(code(r), GimCode::UserSuspended);
    let r = ctx.send_text(1, d1, ReceiverType::User, 2, "x", 0).await;
    assert_eq!(code(r), GimCode::UserSuspended);
    let r = int.send_message(int_send(&ctx, 1, d1, 2, "x")).await;
    assert_eq!(code(r), GimCode::UserSuspended);
    let mut c = ctx.client.clone();
    let r = c
        .get_user(ctx.creq(pb::GetUserReq { user_id: 2 }, 1, d1))
        .await;
    assert_eq!(code(r), GimCode::UserSuspended);
    // Others are not affected; messages to the suspended user are still stored.
    ctx.send_text(2, d2, ReceiverType::User, 1, "to 1", 0)
        .await
        .unwrap();
    // Lifted: back.
    s.set_user_suspended(ctx.sreq(pb::SetUserSuspendedReq {
        user_id: 1,
        suspended: false,
    }))
    .await
    .unwrap();
    int.sign_in(sign_in_req(&ctx, 1, d1, &node.node_id))
        .await
        .unwrap();
    ctx.send_text(1, d1, ReceiverType::User, 2, "back", 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_suspended_app_refuses_its_clients_and_sends_but_not_its_business_server() {
    let ctx = Ctx::start().await;
    let node = FakeNode::start(&redis_url()).await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    ctx.sign_in(1, d1, &node.node_id, 1).await;
    let mut s = ctx.server.clone();
    s.set_app_suspended(ctx.sreq(pb::SetAppSuspendedReq { suspended: true }))
        .await
        .unwrap();
    until("CloseConns for the app", || async {
        node.rec
            .close_alls(ctx.app.0)
            .iter()
            .any(|c| c.user_id == 0 && c.reason == "app suspended")
    })
    .await;
    let mut int = ctx.int.clone();
    let r = int.sign_in(sign_in_req(&ctx, 1, d1, &node.node_id)).await;
    assert_eq!(code(r), GimCode::AppSuspended);
    let r = ctx.send_text(1, d1, ReceiverType::User, 2, "x", 0).await;
    assert_eq!(code(r), GimCode::AppSuspended);
    let r = int.send_message(int_send(&ctx, 1, d1, 2, "x")).await;
    assert_eq!(code(r), GimCode::AppSuspended);
    // Every send of the business server too.
    let r = s
        .send_message(ctx.sreq(send_req(ReceiverType::User, 1, "biz", 0)))
        .await;
    assert_eq!(code(r), GimCode::AppSuspended);
    let r = s
        .push_to_users(ctx.sreq(pb::PushToUsersReq {
            user_ids: vec![1],
            message_body: Some(text_body("p")),
            is_persist: true,
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), GimCode::AppSuspended);
    let r = s
        .broadcast(ctx.sreq(pb::BroadcastReq {
            message_body: Some(text_body("b")),
            sender_id: 0,
        }))
        .await;
    assert_eq!(code(r), GimCode::AppSuspended);
    // New devices neither.
    let mut c = ctx.client.clone();
    let r = c
        .register_device(tonic::Request::new(pb::RegisterDeviceReq {
            app_id: ctx.app.0,
            r#type: 1,
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), GimCode::AppSuspended);
    // The business server's other calls work, and it lifts the suspension.
    s.get_user(ctx.sreq(pb::GetUserReq { user_id: 1 }))
        .await
        .unwrap();
    s.set_app_suspended(ctx.sreq(pb::SetAppSuspendedReq { suspended: false }))
        .await
        .unwrap();
    int.sign_in(sign_in_req(&ctx, 1, d1, &node.node_id))
        .await
        .unwrap();
    ctx.send_text(1, d1, ReceiverType::User, 2, "back", 0)
        .await
        .unwrap();
}

/// The rules are cached for a minute; a change made through one logic process reaches another
/// at once through the invalidation channel.
#[tokio::test]
async fn a_change_reaches_another_logic_process_at_once() {
    let ctx = Ctx::start().await;
    let other = gim_logic::start(ctx.cfg.clone(), ctx.shutdown.clone())
        .await
        .unwrap();
    let other_client = gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient::new(
        channel(other.client_addr).await,
    );
    ctx.import_users(&[1, 2]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    let send = |text: &str| {
        let mut c = other_client.clone();
        let req = ctx.creq(send_req(ReceiverType::User, 2, text, 0), 1, d1);
        async move { c.send_message(req).await }
    };
    // The other process caches user 1's and user 2's rules (and the app's).
    send("warm").await.unwrap();
    // A block and a suspension through this process...
    let mut c = ctx.client.clone();
    c.block_user(ctx.creq(pb::BlockUserReq { user_id: 1 }, 2, d2))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    until("the other process sees the block", || async {
        is_code(&send("x").await, GimCode::Blocked)
    })
    .await;
    c.unblock_user(ctx.creq(pb::UnblockUserReq { user_id: 1 }, 2, d2))
        .await
        .unwrap();
    let mut s = ctx.server.clone();
    s.set_app_suspended(ctx.sreq(pb::SetAppSuspendedReq { suspended: true }))
        .await
        .unwrap();
    until("the other process sees the suspension", || async {
        is_code(&send("x").await, GimCode::AppSuspended)
    })
    .await;
    s.set_app_suspended(ctx.sreq(pb::SetAppSuspendedReq { suspended: false }))
        .await
        .unwrap();
    until("the other process sees the lift", || async {
        send("y").await.is_ok()
    })
    .await;
    // Far within the caches' minute.
    assert!(started.elapsed() < Duration::from_secs(20));
}
