//! What a process on the cluster network without the cluster secret can do: nothing. It calls
//! every internal API a probe used (read another app's messages, forge a send, push a phishing
//! text, broadcast, kick, join a large group, hide messages with a huge ACK) against a running
//! cluster; each call is UNAUTHENTICATED and counted, and the live victims see none of it.
//! Also: each gRPC listener's reflection lists only its own services, in v1 and v1alpha.

use futures::StreamExt;
use gim_client::{Notice, Session, SessionOptions};
use gim_e2e::app::{send_retrying, text_req};
use gim_e2e::{Cluster, WAIT, text_of};
use gim_proto::conn::v1 as cpb;
use gim_proto::conn::v1::conn_int_client::ConnIntClient;
use gim_proto::connect::v1::{MessageItem, PackageType, ReceiverType, SyncInput, SyncOutput};
use gim_proto::logic::v1 as pb;
use gim_proto::logic::v1::logic_int_client::LogicIntClient;
use prost::Message as _;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use tonic::transport::Channel;

fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

async fn metrics(addr: SocketAddr) -> String {
    gim_test_support::http_get(addr, "/metrics").await.1
}

/// The value of a counter line starting with `prefix`, 0 when absent.
fn counter(text: &str, prefix: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

fn unauthenticated<T: std::fmt::Debug>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) {
    match r {
        Err(s) if s.code() == tonic::Code::Unauthenticated => {}
        other => panic!("{what}: expected UNAUTHENTICATED, got {other:?}"),
    }
}

async fn next_message(pushes: &mut tokio::sync::mpsc::Receiver<Notice>) -> MessageItem {
    match tokio::time::timeout(WAIT, pushes.recv()).await {
        Ok(Some(Notice::Message(m))) => m,
        other => panic!("expected a pushed message, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cluster_secret_nothing_is_read_pushed_or_kicked() {
    let cl = Cluster::start(1).await;
    let node = &cl.conns[0];
    let app = cl.new_app().await;
    app.users(&[1, 2, 3]).await;
    let large = app.group(2, &[1], true).await;
    // Raw sessions: every push they get is visible, and none is acked behind the test's back.
    let victim = app.device(1).await;
    let outsider = app.device(3).await;
    let opts = SessionOptions::default();
    let (vs, mut vpush) = Session::connect(&node.tcp(), &victim, &opts).await.unwrap();
    let (_os, mut opush) = Session::connect(&node.tcp(), &outsider, &opts)
        .await
        .unwrap();
    let mut api2 = app.api(&app.device(2).await);
    send_retrying(&mut api2, text_req(ReceiverType::User, 1, "private", 1)).await;
    send_retrying(
        &mut api2,
        text_req(ReceiverType::LargeGroup, large, "group secret", 2),
    )
    .await;
    for want in ["private", "group secret"] {
        assert_eq!(text_of(&next_message(&mut vpush).await), want);
    }

    let logic_before = metrics(cl.logic.admin_addr).await;
    let conn_before = metrics(node.admin_addr).await;

    // The attacker: network access to both internal listeners, no secret.
    let mut li = LogicIntClient::new(channel(cl.logic.int_addr));
    let (a, u, d) = (app.app_id, 1, victim.device_id);
    unauthenticated(
        "LogicInt.Sync",
        li.sync(pb::SyncReq {
            app_id: a,
            user_id: u,
            device_id: d,
            seq: 0,
            limit: 0,
        })
        .await,
    );
    unauthenticated(
        "LogicInt.GroupSync",
        li.group_sync(pb::GroupSyncReq {
            app_id: a,
            user_id: u,
            group_id: large,
            seq: 0,
            limit: 0,
        })
        .await,
    );
    unauthenticated(
        "LogicInt.SendMessage",
        li.send_message(pb::IntSendMessageReq {
            app_id: a,
            user_id: 2,
            device_id: 0,
            req: Some(text_req(ReceiverType::User, 1, "forged", 3)),
        })
        .await,
    );
    unauthenticated(
        "LogicInt.MessageACK",
        li.message_ack(pb::MessageAckReq {
            app_id: a,
            user_id: u,
            device_id: d,
            device_ack: 1 << 62,
            receive_time: 0,
        })
        .await,
    );
    let mut ci = ConnIntClient::new(channel(node.grpc_addr));
    let phishing = MessageItem {
        seq: 99,
        ..Default::default()
    };
    // Connection ids are small sequential numbers: try the first few, as a probe would.
    for conn_id in 0..8 {
        unauthenticated(
            "ConnInt.DeliverMessage",
            ci.deliver_message(cpb::DeliverMessageReq {
                app_id: a,
                device_id: d,
                conn_id,
                message: Some(phishing.clone()),
            })
            .await,
        );
        unauthenticated(
            "ConnInt.CloseConn",
            ci.close_conn(cpb::CloseConnReq {
                app_id: a,
                device_id: d,
                conn_id,
                reason: "forged".into(),
            })
            .await,
        );
    }
    unauthenticated(
        "ConnInt.BroadcastApp",
        ci.broadcast_app(cpb::BroadcastAppReq {
            app_id: a,
            message: Some(phishing.clone()),
        })
        .await,
    );
    unauthenticated(
        "ConnInt.UpdateLargeGroupMembers",
        ci.update_large_group_members(cpb::UpdateLargeGroupMembersReq {
            app_id: a,
            group_id: large,
            joined_user_ids: vec![3],
            left_user_ids: vec![],
            dissolved: false,
        })
        .await,
    );
    unauthenticated(
        "ConnInt.BroadcastLargeGroup",
        ci.broadcast_large_group(cpb::BroadcastLargeGroupReq {
            app_id: a,
            group_id: large,
            message: Some(phishing.clone()),
            exclude_device_id: 0,
        })
        .await,
    );

    // Every refusal was counted, per tier, with the service named.
    let logic_after = metrics(cl.logic.admin_addr).await;
    let conn_after = metrics(node.admin_addr).await;
    let lkey = "gim_logic_internal_unauthenticated_total{service=\"gim.logic.v1.LogicInt\"}";
    let ckey = "gim_conn_internal_unauthenticated_total{service=\"gim.conn.v1.ConnInt\"}";
    assert_eq!(
        counter(&logic_after, lkey) - counter(&logic_before, lkey),
        4
    );
    assert_eq!(counter(&conn_after, ckey) - counter(&conn_before, ckey), 19);

    // The victim is still connected and its next push is the next real message: no phishing
    // text, no broadcast, no kick came before it.
    send_retrying(&mut api2, text_req(ReceiverType::User, 1, "real", 4)).await;
    assert_eq!(text_of(&next_message(&mut vpush).await), "real");
    assert!(!vs.is_closed());
    // The forged send stored nothing and the huge ACK hid nothing: a seq-0 sync has exactly the
    // real messages.
    let out = SyncOutput::decode(
        vs.request(PackageType::Sync, &SyncInput { seq: 0 })
            .await
            .unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = out.messages.iter().map(text_of).collect();
    assert_eq!(texts, ["private", "real"]);
    // The outsider was not joined to the large group: its next push is a 1:1 sent after the
    // group's next message, not that message.
    send_retrying(
        &mut api2,
        text_req(ReceiverType::LargeGroup, large, "group later", 5),
    )
    .await;
    assert_eq!(text_of(&next_message(&mut vpush).await), "group later");
    send_retrying(&mut api2, text_req(ReceiverType::User, 3, "to outsider", 6)).await;
    assert_eq!(text_of(&next_message(&mut opush).await), "to outsider");
}

/// The services one listener lists through reflection, in v1 and in v1alpha.
async fn reflected(addr: SocketAddr) -> (BTreeSet<String>, BTreeSet<String>) {
    use tonic_reflection::pb::{v1, v1alpha};
    let req = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut c = v1::server_reflection_client::ServerReflectionClient::new(channel(addr));
    let mut stream = c
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let r = stream.next().await.unwrap().unwrap();
    let v1_names = match r.message_response {
        Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{addr}: {other:?}"),
    };
    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut c = v1alpha::server_reflection_client::ServerReflectionClient::new(channel(addr));
    let mut stream = c
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let r = stream.next().await.unwrap().unwrap();
    let v1alpha_names = match r.message_response {
        Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{addr}: {other:?}"),
    };
    (v1_names, v1alpha_names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_only_each_listeners_services_in_v1_and_v1alpha() {
    let cl = Cluster::start(1).await;
    let reflection = [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let want = |svcs: &[&str]| -> BTreeSet<String> {
        svcs.iter()
            .chain(reflection.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let health = "grpc.health.v1.Health";
    for (addr, svcs) in [
        (cl.logic.int_addr, want(&["gim.logic.v1.LogicInt", health])),
        (
            cl.logic.client_addr,
            want(&["gim.logic.v1.LogicClientExt", health]),
        ),
        (
            cl.logic.server_addr,
            want(&["gim.logic.v1.LogicServerExt", health]),
        ),
        (cl.conns[0].grpc_addr, want(&["gim.conn.v1.ConnInt"])),
    ] {
        let (v1, v1alpha) = reflected(addr).await;
        assert_eq!(v1, svcs, "{addr} v1");
        assert_eq!(v1alpha, svcs, "{addr} v1alpha");
    }
}

/// Issue 19 item 5 end to end: a business server suspends a user; its live connection on the
/// conn node is kicked (reason "user suspended") and closed, its sign-in gets 1022, another
/// user stays connected; lifted, it signs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_users_live_connection_is_closed_and_its_sign_in_refused() {
    let cl = Cluster::start(1).await;
    let node = &cl.conns[0];
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let (victim, other) = (app.device(1).await, app.device(2).await);
    let opts = SessionOptions::default();
    let (vs, mut vpush) = Session::connect(&node.tcp(), &victim, &opts).await.unwrap();
    let (os, _opush) = Session::connect(&node.tcp(), &other, &opts).await.unwrap();
    let mut server = app.server.clone();
    let closed = server.set_user_suspended(1, true).await.unwrap();
    assert_eq!(closed, 1);
    match tokio::time::timeout(WAIT, vpush.recv()).await {
        Ok(Some(Notice::Kicked(k))) => assert_eq!(k.reason, "user suspended"),
        other => panic!("expected a kick, got {other:?}"),
    }
    tokio::time::timeout(WAIT, vs.closed()).await.unwrap();
    assert!(!os.is_closed());
    match Session::connect(&node.tcp(), &victim, &opts).await {
        Err(e) => assert_eq!(e.gim_code(), Some(1022)),
        Ok(_) => panic!("a suspended user's sign-in is refused"),
    }
    server.set_user_suspended(1, false).await.unwrap();
    Session::connect(&node.tcp(), &victim, &opts).await.unwrap();
}

/// Issue 19 item 4 end to end: a business server force-logs-out one device; that device's live
/// connection on the conn node is kicked (reason "logged out") and closed, its old token is
/// refused at sign-in (1002), the user's other device stays connected, and a token issued after
/// the cut-off signs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_logged_out_devices_connection_is_closed_and_its_old_token_refused() {
    let cl = Cluster::start(1).await;
    let node = &cl.conns[0];
    let app = cl.new_app().await;
    app.users(&[1]).await;
    let (phone, laptop) = (app.device(1).await, app.device(1).await);
    let opts = SessionOptions::default();
    let (ps, mut ppush) = Session::connect(&node.tcp(), &phone, &opts).await.unwrap();
    let (ls, _lpush) = Session::connect(&node.tcp(), &laptop, &opts).await.unwrap();
    let mut server = app.server.clone();
    let r = server.force_logout(1, phone.device_id).await.unwrap();
    assert_eq!(r.closed, 1);
    match tokio::time::timeout(WAIT, ppush.recv()).await {
        Ok(Some(Notice::Kicked(k))) => assert_eq!(k.reason, "logged out"),
        other => panic!("expected a kick, got {other:?}"),
    }
    tokio::time::timeout(WAIT, ps.closed()).await.unwrap();
    assert!(!ls.is_closed());
    match Session::connect(&node.tcp(), &phone, &opts).await {
        Err(e) => assert_eq!(e.gim_code(), Some(1002)),
        Ok(_) => panic!("the old token is refused"),
    }
    let fresh = gim_client::Credentials {
        token: app.key.sign(&gim_common::token::Claims {
            app_id: app.app_id,
            user_id: 1,
            device_id: phone.device_id,
            exp: r.tokens_after + 3600,
            kind: gim_common::token::TokenKind::Device,
            iat: Some(r.tokens_after + 1),
            jti: Some(gim_common::token::new_jti()),
        }),
        ..phone.clone()
    };
    Session::connect(&node.tcp(), &fresh, &opts).await.unwrap();
}

/// Issue 19 item 3 end to end: with its app limited to one send per second, a client that keeps
/// sending through a conn node gets 1011 with a retry-after on the socket, and after the
/// node's 20 refusals within the window its connection is closed (`rate_limited`); another
/// user's connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_over_its_rate_gets_1011_and_is_closed_after_repeated_refusals() {
    use gim_proto::connect::v1::SendMessageInput;
    let cl = Cluster::start(1).await;
    let node = &cl.conns[0];
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let (abuser, other) = (app.device(1).await, app.device(2).await);
    let mut server = app.server.clone();
    let eff = server
        .set_app_limits(pb::AppLimits {
            send_per_sec: 1,
            send_burst: 1,
        })
        .await
        .unwrap();
    assert_eq!((eff.send_per_sec, eff.send_burst), (1, 1));
    let opts = SessionOptions::default();
    let (s, _push) = Session::connect(&node.tcp(), &abuser, &opts).await.unwrap();
    let (os, _opush) = Session::connect(&node.tcp(), &other, &opts).await.unwrap();
    let input = SendMessageInput {
        receiver_type: ReceiverType::User as i32,
        receiver_id: 2,
        message_body: Some(gim_client::api::text_body("spam")),
        is_persist: true,
        ..Default::default()
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..200 {
        match s.request(PackageType::SendMessage, &input).await {
            Ok(_) => ok += 1,
            Err(e) if e.gim_code() == Some(1011) => {
                let ms = e.retry_after_ms();
                assert!((1..=1000).contains(&ms), "retry after {ms} ms");
                refused += 1;
            }
            Err(gim_client::ClientError::Closed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    tokio::time::timeout(WAIT, s.closed()).await.unwrap();
    assert_eq!(refused, 20, "closed at the 20th refusal ({ok} passed)");
    assert!((1..=3).contains(&ok), "{ok} passed");
    assert!(!os.is_closed());
    let m = metrics(node.admin_addr).await;
    assert_eq!(
        counter(&m, "gim_conn_closes_total{reason=\"rate_limited\"}"),
        1
    );
}
