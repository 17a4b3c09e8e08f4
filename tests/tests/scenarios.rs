//! Functional end-to-end scenarios: logic and several conn nodes in-process, real MariaDB and Redis,
//! clients through the SDK (TCP and WebSocket) and the gRPC APIs.

use gim_client::Notice;
use gim_client::{ClientError, Session, SessionOptions, text_body};
use gim_e2e::app::{send_retrying, text_req};
use gim_e2e::{Cluster, WAIT, assert_exactly_once_in_order, text_of};
use gim_proto::connect::v1::{
    PackageType, ReceiverType, SendMessageInput, SendMessageOutput, SenderType, SyncInput,
    SyncOutput,
};
use prost::Message as _;

fn code(e: &ClientError) -> Option<i32> {
    e.gim_code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_across_nodes_and_transports() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    // A on node a over TCP, B on node b over WebSocket.
    let mut a = app.client(1, vec![cl.conns[0].tcp()]).await;
    let mut b = app.client(2, vec![cl.conns[1].ws()]).await;

    let out = a
        .send_text(ReceiverType::User, 2, "tcp to ws")
        .await
        .unwrap();
    assert!(out.seq > 0 && out.message_id > 0);
    let m = b.wait_text("tcp to ws").await;
    assert_eq!(
        (
            m.sender_type(),
            m.sender_id,
            m.sender_device_id,
            m.receiver_id
        ),
        (SenderType::User, 1, a.creds.device_id, 2)
    );
    assert_eq!(m.message_id, out.message_id);
    // The sender's own copy is in the sender's list, with the seq the send returned.
    let own = a.wait_text("tcp to ws").await;
    assert_eq!(own.seq, out.seq);

    // The other way, sent through LogicClientExt over gRPC.
    let mut api = app.api(&b.creds);
    let r = api.send_text_to_user(1, "ws to tcp", 4242).await.unwrap();
    let m = a.wait_text("ws to tcp").await;
    assert_eq!((m.message_id, m.sender_id), (r.message_id, 2));

    // Same node, mixed transports.
    let mut c = app.client(1, vec![cl.conns[1].tcp()]).await;
    b.send_text(ReceiverType::User, 1, "same node")
        .await
        .unwrap();
    c.wait_text("same node").await;
    a.wait_text("same node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_device_sender_gets_no_echo_others_do() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    // d1 is a raw session so every push it gets is visible (the SDK would sync its own copy).
    let d1 = app.device(1).await;
    let (s1, mut pushes1) = Session::connect(&cl.conns[0].tcp(), &d1, &SessionOptions::default())
        .await
        .unwrap();
    let mut d2 = app.client(1, vec![cl.conns[1].ws()]).await;
    let mut d3 = app.client(1, vec![cl.conns[0].tcp()]).await;
    let mut b = app.client(2, vec![cl.conns[1].tcp()]).await;

    let input = SendMessageInput {
        receiver_type: ReceiverType::User as i32,
        receiver_id: 2,
        message_body: Some(text_body("from d1")),
        is_persist: true,
        client_request_id: 1,
        ..Default::default()
    };
    let out =
        SendMessageOutput::decode(s1.request(PackageType::SendMessage, &input).await.unwrap())
            .unwrap();
    for d in [&mut d2, &mut d3] {
        let m = d.wait_text("from d1").await;
        assert_eq!((m.sender_device_id, m.seq), (d1.device_id, out.seq));
    }
    b.wait_text("from d1").await;

    // The next push d1 gets must be B's reply, not an echo of its own send.
    b.send_text(ReceiverType::User, 1, "reply").await.unwrap();
    let first = tokio::time::timeout(WAIT, pushes1.recv())
        .await
        .expect("a push within the deadline")
        .expect("session open");
    match first {
        Notice::Message(m) => assert_eq!(text_of(&m), "reply", "sending device got an echo"),
        other => panic!("unexpected notice {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_group_reaches_members_only_members_send() {
    let cl = Cluster::start(3).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3, 4]).await;
    let g = app.group(1, &[2, 3], false).await;
    let mut m1 = app.client(1, vec![cl.conns[0].tcp()]).await;
    let mut m2 = app.client(2, vec![cl.conns[1].tcp()]).await;
    let mut m3 = app.client(3, vec![cl.conns[2].ws()]).await;
    let mut outsider = app.client(4, vec![cl.conns[2].tcp()]).await;

    m1.send_text(ReceiverType::NormalGroup, g, "hello group")
        .await
        .unwrap();
    for c in [&mut m2, &mut m3, &mut m1] {
        let m = c.wait_text("hello group").await;
        assert_eq!(
            (m.receiver_type(), m.receiver_id, m.sender_id),
            (ReceiverType::NormalGroup, g, 1)
        );
    }
    // Each member's copy has that member's own seq.
    let mut api = app.api(&outsider.creds);
    let err = api
        .send_message(text_req(ReceiverType::NormalGroup, g, "let me in", 1))
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(1004), "{err}");
    assert!(err.to_string().contains("1004"), "{err}");
    let err = outsider
        .send_text(ReceiverType::NormalGroup, g, "let me in")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(1004), "{err}");
    // A later member message proves nothing from the outsider was delivered before it.
    m2.send_text(ReceiverType::NormalGroup, g, "after")
        .await
        .unwrap();
    m3.wait_text("after").await;
    assert!(m3.messages.iter().all(|m| text_of(m) != "let me in"));
    outsider.wait_until(|c| c.messages.is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_group_push_and_history() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3, 4, 5]).await;
    let g = app.group(1, &[2, 3, 4, 5], true).await;
    let mut m2 = app.client(2, vec![cl.conns[0].tcp()]).await;
    let mut m3 = app.client(3, vec![cl.conns[1].tcp()]).await;
    let mut m4 = app.client(4, vec![cl.conns[1].ws()]).await;
    let mut api = app.api(&app.device(1).await);
    let mut seqs = Vec::new();
    for i in 0..3 {
        let r = api
            .send_message(text_req(
                ReceiverType::LargeGroup,
                g,
                &format!("lg {i}"),
                100 + i,
            ))
            .await
            .unwrap();
        seqs.push(r.seq);
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "group seqs increase: {seqs:?}"
    );
    for c in [&mut m2, &mut m3, &mut m4] {
        for (i, seq) in seqs.iter().enumerate() {
            let m = c.wait_text(&format!("lg {i}")).await;
            assert_eq!(
                (m.receiver_type(), m.receiver_id, m.seq),
                (ReceiverType::LargeGroup, g, *seq)
            );
        }
    }
    // A member who was offline pulls the group's history by group seq.
    let mut m5 = app.client(5, vec![cl.conns[0].ws()]).await;
    m5.client.track_large_group(g, 0).await;
    let texts: Vec<String> = (0..3).map(|i| format!("lg {i}")).collect();
    m5.wait_all(&texts).await;
    let got: Vec<i64> = m5.messages.iter().map(|m| m.seq).collect();
    assert_eq!(got, seqs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_persistent_messages_are_pushed_not_stored() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let mut b = app.client(2, vec![cl.conns[1].tcp()]).await;
    let mut api = app.api(&app.device(1).await);
    let before = send_retrying(&mut api, text_req(ReceiverType::User, 2, "before", 1)).await;
    let mut typing = text_req(ReceiverType::User, 2, "typing...", 2);
    typing.is_persist = false;
    let r = api.send_message(typing).await.unwrap();
    assert_eq!(r.seq, 0);
    let after = send_retrying(&mut api, text_req(ReceiverType::User, 2, "after", 3)).await;
    let m = b.wait_text("typing...").await;
    assert_eq!(m.seq, 0);
    b.wait_text("after").await;
    assert!(after.seq > before.seq);

    // The stored list holds only the persistent ones.
    let (s, _p) = Session::connect(&cl.conns[0].tcp(), &b.creds, &SessionOptions::default())
        .await
        .unwrap();
    let b_before = b
        .messages
        .iter()
        .find(|m| text_of(m) == "before")
        .unwrap()
        .seq;
    let out = SyncOutput::decode(
        s.request(PackageType::Sync, &SyncInput { seq: b_before })
            .await
            .unwrap(),
    )
    .unwrap();
    let texts: Vec<String> = out.messages.iter().map(text_of).collect();
    assert_eq!(texts, vec!["after".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_user_syncs_everything_on_return() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let mut api = app.api(&app.device(1).await);
    // More than two sync pages (the test config uses 20 per page).
    let texts: Vec<String> = (0..45).map(|i| format!("offline {i}")).collect();
    for (i, t) in texts.iter().enumerate() {
        send_retrying(&mut api, text_req(ReceiverType::User, 2, t, i as i64 + 1)).await;
    }
    let mut b = app.client(2, vec![cl.conns[1].ws()]).await;
    b.wait_all(&texts).await;
    assert_exactly_once_in_order("user 2", &b.messages, &texts);
    let order: Vec<String> = b.messages.iter().map(text_of).collect();
    assert_eq!(order, texts, "delivered in send order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sign_in_of_a_device_supersedes_the_first() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let d = app.device(1).await;
    let opts = SessionOptions::default();
    let (old, mut old_pushes) = Session::connect(&cl.conns[0].tcp(), &d, &opts)
        .await
        .unwrap();
    let (_new, mut new_pushes) = Session::connect(&cl.conns[1].ws(), &d, &opts)
        .await
        .unwrap();
    let kicked = tokio::time::timeout(WAIT, async {
        loop {
            match old_pushes.recv().await {
                Some(Notice::Kicked(k)) => return Some(k),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("old connection told within the deadline");
    assert!(kicked.is_some(), "old connection got a KICKED notice");
    tokio::time::timeout(WAIT, old.closed())
        .await
        .expect("old connection closed");

    // Messages now reach the new connection.
    let mut api = app.api(&app.device(2).await);
    api.send_text_to_user(1, "to the new one", 9).await.unwrap();
    let got = tokio::time::timeout(WAIT, new_pushes.recv())
        .await
        .unwrap()
        .unwrap();
    match got {
        Notice::Message(m) => assert_eq!(text_of(&m), "to the new one"),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resending_with_the_same_request_id_stores_once() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let mut b = app.client(2, vec![cl.conns[1].tcp()]).await;
    let a = app.client(1, vec![cl.conns[0].ws()]).await;
    let mut api = app.api(&a.creds);
    let first = api
        .send_message(text_req(ReceiverType::User, 2, "once", 555))
        .await
        .unwrap();
    let again = api
        .send_message(text_req(ReceiverType::User, 2, "once", 555))
        .await
        .unwrap();
    assert_eq!((first.seq, first.message_id), (again.seq, again.message_id));

    // Over the socket too.
    let input = SendMessageInput {
        receiver_type: ReceiverType::User as i32,
        receiver_id: 2,
        message_body: Some(text_body("socket once")),
        is_persist: true,
        client_request_id: 777,
        ..Default::default()
    };
    let s1 = a.client.send(input.clone()).await.unwrap();
    let s2 = a.client.send(input).await.unwrap();
    assert_eq!((s1.seq, s1.message_id), (s2.seq, s2.message_id));

    api.send_message(text_req(ReceiverType::User, 2, "marker", 556))
        .await
        .unwrap();
    b.wait_text("marker").await;
    assert_exactly_once_in_order(
        "user 2",
        &b.messages,
        &["once".into(), "socket once".into(), "marker".into()],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_never_see_each_other() {
    let cl = Cluster::start(2).await;
    let app1 = cl.new_app().await;
    let app2 = cl.new_app().await;
    app1.users(&[1, 2]).await;
    app2.users(&[1, 2]).await;
    let mut b2 = app2.client(2, vec![cl.conns[0].tcp()]).await;
    let mut b1 = app1.client(2, vec![cl.conns[1].tcp()]).await;
    app1.api(&app1.device(1).await)
        .send_text_to_user(2, "app1 secret", 1)
        .await
        .unwrap();
    app2.api(&app2.device(1).await)
        .send_text_to_user(2, "app2 hello", 1)
        .await
        .unwrap();
    b1.wait_text("app1 secret").await;
    b2.wait_text("app2 hello").await;
    assert!(b2.messages.iter().all(|m| text_of(m) != "app1 secret"));
    assert!(b1.messages.iter().all(|m| text_of(m) != "app2 hello"));

    // A token of app2 does not open app1, and an app1 device is not usable in app2.
    let mut forged = app1.device(1).await;
    forged.token = app2.key.device_token(
        app1.app_id,
        1,
        forged.device_id,
        gim_common::token::now_secs(),
        60,
    );
    let err = Session::connect(&cl.conns[0].tcp(), &forged, &SessionOptions::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(1002), "{err}");
    let d1 = app1.device(1).await;
    let mut cross = d1.clone();
    cross.app_id = app2.app_id;
    cross.token = app2.key.device_token(
        app2.app_id,
        1,
        d1.device_id,
        gim_common::token::now_secs(),
        60,
    );
    let err = Session::connect(&cl.conns[1].ws(), &cross, &SessionOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(code(&err), Some(1005) | Some(1002)), "{err}");
    // And the business API of one app cannot read the other's users.
    let mut s2 = app2.server.clone();
    let err = s2
        .get_group(app1.group(1, &[2], false).await)
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(1009), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_moves_clients_to_another_node() {
    let mut cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2]).await;
    let endpoints = vec![cl.conns[0].tcp(), cl.conns[1].ws()];
    let mut b = app.client(2, endpoints).await;
    assert_eq!(b.client.endpoint(), Some(cl.conns[0].tcp()));
    let mut api = app.api(&app.device(1).await);
    send_retrying(&mut api, text_req(ReceiverType::User, 2, "before drain", 1)).await;
    b.wait_text("before drain").await;

    // Node a drains: it tells its clients to reconnect elsewhere, then closes them.
    cl.conns[0].stop().await;
    b.wait_until(|c| c.connects >= 2).await;
    assert_eq!(b.client.endpoint(), Some(cl.conns[1].ws()));
    send_retrying(&mut api, text_req(ReceiverType::User, 2, "after drain", 2)).await;
    b.wait_text("after drain").await;
    assert_exactly_once_in_order(
        "user 2",
        &b.messages,
        &["before drain".into(), "after drain".into()],
    );
}
