//! Delivery to conn nodes: batching per node, sender-device exclusion, large groups with one call
//! per node, supersede on sign-in, conditional offline, dead and failing nodes.

mod common;

use common::*;
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;

#[tokio::test]
async fn user_send_is_one_batch_per_node_without_the_sending_device() {
    let ctx = Ctx::start().await;
    let (n1, n2) = (
        FakeNode::start(&redis_url()).await,
        FakeNode::start(&redis_url()).await,
    );
    ctx.import_users(&[1, 2]).await;
    let (d1a, d1b, d2a, d2b) = (
        ctx.register_device().await,
        ctx.register_device().await,
        ctx.register_device().await,
        ctx.register_device().await,
    );
    ctx.sign_in(1, d1a, &n1.node_id, 11).await;
    ctx.sign_in(1, d1b, &n2.node_id, 12).await;
    ctx.sign_in(2, d2a, &n1.node_id, 21).await;
    ctx.sign_in(2, d2b, &n1.node_id, 22).await;
    let mut req = ctx.creq(send_req(ReceiverType::User, 2, "hi", 0), 1, d1a);
    req.metadata_mut()
        .insert(gim_common::TRACE_ID_HEADER, "trace-77".parse().unwrap());
    let mut c = ctx.client.clone();
    let r = c.send_message(req).await.unwrap().into_inner();
    let b1 = eventually("node 1 delivery", || async { n1.rec.delivers().pop() }).await;
    let b2 = eventually("node 2 delivery", || async { n2.rec.delivers().pop() }).await;
    // Node 1: both of user 2's devices with the receiver seq; not the sending device d1a.
    let mut t1: Vec<(i64, i64, i64)> = b1
        .targets
        .iter()
        .map(|t| (t.device_id, t.conn_id, t.seq))
        .collect();
    t1.sort();
    assert_eq!(t1, vec![(d2a, 21, 1), (d2b, 22, 1)]);
    assert_eq!(b1.messages.len(), 1);
    assert_eq!(b1.messages[0].message_id, r.message_id);
    assert_eq!(text_of(&b1.messages[0]), "hi");
    // Node 2: the sender's other device gets the sender's copy (its own seq).
    assert_eq!(b2.targets.len(), 1);
    assert_eq!((b2.targets[0].device_id, b2.targets[0].seq), (d1b, r.seq));
    assert_eq!(n1.rec.delivers().len(), 1, "one call per node");
    // The request's trace id travels on to conn, so logic's and conn's log lines join.
    assert_eq!(*n1.rec.traces.lock().unwrap(), vec!["trace-77".to_string()]);
}

#[tokio::test]
async fn normal_group_fan_out_batches_per_node_and_a_broken_node_does_not_block_others() {
    let ctx = Ctx::start().await;
    let good = FakeNode::start(&redis_url()).await;
    let bad = FakeNode::start(&redis_url()).await;
    bad.rec
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let users: Vec<i64> = (1..=30).collect();
    ctx.import_users(&users).await;
    let mut s = ctx.server.clone();
    let gid = s
        .create_group(ctx.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                name: "g".into(),
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: users[1..].to_vec(),
        }))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    let mut devices = Vec::new();
    for u in &users {
        let d = ctx.register_device().await;
        let node = if u % 2 == 0 {
            &good.node_id
        } else {
            &bad.node_id
        };
        ctx.sign_in(*u, d, node, *u).await;
        devices.push(d);
    }
    ctx.send_text(1, devices[0], ReceiverType::NormalGroup, gid, "all", 0)
        .await
        .unwrap();
    let b = eventually("good node delivery", || async { good.rec.delivers().pop() }).await;
    assert_eq!(b.targets.len(), 15, "every even member in one call");
    let seqs: std::collections::HashSet<i64> = b.targets.iter().map(|t| t.seq).collect();
    assert_eq!(seqs, [1].into(), "each member's first message");
    eventually("bad node was tried", || async {
        (!bad.rec.delivers().is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        bad.rec.delivers()[0].targets.len(),
        14,
        "odd members minus the sender's device"
    );
    assert_eq!(good.rec.delivers().len(), 1);
    // The failure is counted.
    let metrics = metrics_text(&ctx).await;
    assert!(
        metrics.contains("gim_logic_pushes_total{call=\"deliver_batch\",outcome=\"error\"} 1"),
        "{metrics}"
    );
}

async fn metrics_text(ctx: &Ctx) -> String {
    http_get(ctx.logic.admin_addr, "/metrics").await.1
}

#[tokio::test]
async fn large_group_is_one_broadcast_per_live_node_and_membership_changes_reach_every_node() {
    let ctx = Ctx::start().await;
    let nodes = [
        FakeNode::start(&redis_url()).await,
        FakeNode::start(&redis_url()).await,
        FakeNode::start(&redis_url()).await,
    ];
    let users: Vec<i64> = (1..=50).collect();
    ctx.import_users(&users).await;
    let mut s = ctx.server.clone();
    let gid = s
        .create_group(ctx.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                name: "big".into(),
                r#type: 2,
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: users[1..40].to_vec(),
        }))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    for n in &nodes {
        let n = &n.rec;
        let up = eventually("membership update", || async {
            n.calls().into_iter().find_map(|c| match c {
                Call::Update(u) => Some(u),
                _ => None,
            })
        })
        .await;
        assert_eq!((up.group_id, up.joined_user_ids.len()), (gid, 40));
    }
    let d1 = ctx.register_device().await;
    for i in 0..3 {
        ctx.send_text(1, d1, ReceiverType::LargeGroup, gid, &format!("m{i}"), 0)
            .await
            .unwrap();
    }
    for n in &nodes {
        let got = eventually("three broadcasts", || async {
            let b = n.rec.broadcasts();
            (b.len() >= 3).then_some(b)
        })
        .await;
        assert_eq!(
            got.len(),
            3,
            "exactly one call per node per message, not per member"
        );
        assert!(
            got.iter()
                .all(|b| b.group_id == gid && b.exclude_device_id == d1)
        );
        assert_eq!(
            got.iter()
                .map(|b| b.message.as_ref().unwrap().seq)
                .collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(n.rec.delivers().is_empty(), "no per-member delivery");
    }
    // Leaving and joining notify every node.
    s.delete_group_member(ctx.sreq(pb::DeleteGroupMemberReq {
        group_id: gid,
        user_id: 5,
    }))
    .await
    .unwrap();
    s.add_group_member(ctx.sreq(pb::AddGroupMemberReq {
        group_id: gid,
        user_ids: vec![45],
    }))
    .await
    .unwrap();
    for n in &nodes {
        eventually("left + joined", || async {
            let ups: Vec<_> = n
                .rec
                .calls()
                .into_iter()
                .filter_map(|c| match c {
                    Call::Update(u) => Some(u),
                    _ => None,
                })
                .collect();
            (ups.iter().any(|u| u.left_user_ids == vec![5])
                && ups.iter().any(|u| u.joined_user_ids == vec![45]))
            .then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn sign_in_supersedes_the_older_connection_and_offline_is_conditional() {
    let ctx = Ctx::start().await;
    let (n1, n2) = (
        FakeNode::start(&redis_url()).await,
        FakeNode::start(&redis_url()).await,
    );
    ctx.import_users(&[1]).await;
    let d = ctx.register_device().await;
    ctx.sign_in(1, d, &n1.node_id, 100).await;
    ctx.sign_in(1, d, &n2.node_id, 200).await;
    let close = eventually("CloseConn on the old node", || async {
        n1.rec.calls().into_iter().find_map(|c| match c {
            Call::Close(c) => Some(c),
            _ => None,
        })
    })
    .await;
    assert_eq!(
        (close.device_id, close.conn_id, close.app_id),
        (d, 100, ctx.app.0)
    );
    assert!(
        n2.rec.calls().is_empty(),
        "the new connection is left alone"
    );
    // A stale offline from the old connection must not remove the new route.
    let mut i = ctx.int.clone();
    let off = |node: &str, conn: i64| pb::OfflineReq {
        app_id: ctx.app.0,
        user_id: 1,
        device_id: d,
        node_id: node.into(),
        conn_id: conn,
        client_addr: String::new(),
    };
    i.offline(off(&n1.node_id, 100)).await.unwrap();
    let routes = ctx
        .logic
        .state
        .nodes
        .routes(ctx.app, &[gim_common::UserId(1)])
        .await
        .unwrap();
    assert_eq!(routes[0].len(), 1);
    assert_eq!(
        (routes[0][0].node_id.as_str(), routes[0][0].conn_id),
        (n2.node_id.as_str(), 200)
    );
    i.offline(off(&n2.node_id, 200)).await.unwrap();
    let routes = ctx
        .logic
        .state
        .nodes
        .routes(ctx.app, &[gim_common::UserId(1)])
        .await
        .unwrap();
    assert!(routes[0].is_empty());
}

#[tokio::test]
async fn routes_on_dead_nodes_are_ignored() {
    let ctx = Ctx::start().await;
    let live = FakeNode::start(&redis_url()).await;
    let dead = FakeNode::start(&redis_url()).await;
    ctx.import_users(&[1, 2]).await;
    let (d1, d2a, d2b) = (
        ctx.register_device().await,
        ctx.register_device().await,
        ctx.register_device().await,
    );
    ctx.sign_in(2, d2a, &live.node_id, 1).await;
    ctx.sign_in(2, d2b, &dead.node_id, 2).await;
    dead.expire(&redis_url()).await;
    // Let the registry cache lapse so logic sees the expired lease.
    eventually("registry without the dead node", || async {
        let m = ctx.logic.state.nodes.live().await.unwrap();
        (!m.contains_key(&dead.node_id)).then_some(())
    })
    .await;
    ctx.send_text(1, d1, ReceiverType::User, 2, "x", 0)
        .await
        .unwrap();
    eventually("live delivery", || async { live.rec.delivers().pop() }).await;
    // Only this app's pushes count: tests in this binary share Redis, so another test's
    // BroadcastApp or UpdateLargeGroupMembers may reach the dead node before its lease expired.
    let ours: Vec<_> = dead
        .rec
        .delivers()
        .into_iter()
        .filter(|d| d.targets.iter().any(|t| t.app_id == ctx.app.0))
        .collect();
    assert!(ours.is_empty(), "pushed to a dead node: {ours:?}");
}

#[tokio::test]
async fn push_to_users_and_broadcast_from_the_business_server() {
    let ctx = Ctx::start().await;
    let node = FakeNode::start(&redis_url()).await;
    ctx.import_users(&[1, 2, 3]).await;
    for u in [1, 2, 3] {
        let d = ctx.register_device().await;
        ctx.sign_in(u, d, &node.node_id, u).await;
    }
    let mut s = ctx.server.clone();
    let req = pb::PushToUsersReq {
        user_ids: vec![1, 3],
        message_body: Some(text_body("notice")),
        is_persist: true,
        client_request_id: 9,
        sender_id: 77,
    };
    let r = s
        .push_to_users(ctx.sreq(req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seqs, vec![1, 1]);
    let again = s.push_to_users(ctx.sreq(req)).await.unwrap().into_inner();
    assert_eq!(again, r, "idempotent");
    assert_eq!(ctx.sync(1, 0, 0, 0).await.messages.len(), 1);
    assert!(ctx.sync(2, 0, 0, 0).await.messages.is_empty());
    let b = eventually("push", || async { node.rec.delivers().pop() }).await;
    assert_eq!(b.targets.len(), 2);
    assert_eq!(b.messages.len(), 2, "one item per receiver");
    for t in &b.targets {
        let m = &b.messages[t.message_index as usize];
        assert_eq!(m.sender_id, 77);
        assert!(m.receiver_id == 1 || m.receiver_id == 3);
    }
    let r = s
        .push_to_users(ctx.sreq(pb::PushToUsersReq {
            user_ids: vec![1, 404],
            message_body: Some(text_body("x")),
            ..Default::default()
        }))
        .await;
    assert_eq!(code(r), gim_common::GimCode::UserNotFound);
    let n = s
        .broadcast(ctx.sreq(pb::BroadcastReq {
            message_body: Some(text_body("to everyone")),
            sender_id: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(n >= 1);
    let app = eventually("broadcast_app", || async {
        node.rec.calls().into_iter().find_map(|c| match c {
            Call::App(a) => Some(a),
            _ => None,
        })
    })
    .await;
    assert_eq!(app.app_id, ctx.app.0);
}

/// Redis lost the routes (restart or flush) while devices stayed connected: the node restores
/// them; a route a newer sign-in wrote meanwhile is kept, and pushes reach the restored ones.
#[tokio::test]
async fn restore_routes_sets_only_missing_routes_and_pushes_resume() {
    let ctx = Ctx::start().await;
    let (n1, n2) = (
        FakeNode::start(&redis_url()).await,
        FakeNode::start(&redis_url()).await,
    );
    ctx.import_users(&[1, 2]).await;
    let (d1, d2a, d2b) = (
        ctx.register_device().await,
        ctx.register_device().await,
        ctx.register_device().await,
    );
    ctx.sign_in(1, d1, &n1.node_id, 11).await;
    ctx.sign_in(2, d2a, &n1.node_id, 21).await;
    ctx.sign_in(2, d2b, &n1.node_id, 22).await;
    // Redis loses this tenant's routes (only this app's keys: the shared Redis is never flushed).
    let route_key = |u| gim_common::keys::route_key(ctx.app, gim_common::UserId(u));
    let mut r = redis_conn(&redis_url()).await;
    let _: () = redis::cmd("DEL")
        .arg(route_key(1))
        .arg(route_key(2))
        .query_async(&mut r)
        .await
        .unwrap();
    // Meanwhile d2b signs in again on node 2: its newer route must survive the restore.
    ctx.sign_in(2, d2b, &n2.node_id, 99).await;
    let entry = |user, device_id, conn_id| pb::RouteEntry {
        app_id: ctx.app.0,
        user_id: user,
        device_id,
        conn_id,
    };
    let mut int = ctx.int.clone();
    let resp = int
        .restore_routes(pb::RestoreRoutesReq {
            node_id: n1.node_id.clone(),
            routes: vec![entry(1, d1, 11), entry(2, d2a, 21), entry(2, d2b, 22)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.restored, 2,
        "d1 and d2a; d2b already had a newer route"
    );
    let routes: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(route_key(2))
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(
        routes[&d2a.to_string()],
        gim_common::keys::route_value(&n1.node_id, 21)
    );
    assert_eq!(
        routes[&d2b.to_string()],
        gim_common::keys::route_value(&n2.node_id, 99)
    );
    // Restoring again is a no-op.
    let again = int
        .restore_routes(pb::RestoreRoutesReq {
            node_id: n1.node_id.clone(),
            routes: vec![entry(1, d1, 11), entry(2, d2a, 21)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.restored, 0);
    // Pushes reach the restored route again.
    ctx.send_text(1, d1, ReceiverType::User, 2, "back", 0)
        .await
        .unwrap();
    let b = eventually("node 1 delivery", || async { n1.rec.delivers().pop() }).await;
    assert_eq!(
        b.targets
            .iter()
            .map(|t| (t.device_id, t.conn_id))
            .collect::<Vec<_>>(),
        vec![(d2a, 21)]
    );
    let b2 = eventually("node 2 delivery", || async { n2.rec.delivers().pop() }).await;
    assert_eq!((b2.targets[0].device_id, b2.targets[0].conn_id), (d2b, 99));
    // An empty node id is refused.
    let bad = int
        .restore_routes(pb::RestoreRoutesReq {
            node_id: String::new(),
            routes: vec![entry(1, d1, 11)],
        })
        .await;
    assert!(bad.is_err());
}
