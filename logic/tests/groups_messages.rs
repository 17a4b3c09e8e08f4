//! Groups and members, sends of every kind, idempotent retry, sync pagination and acks.

mod common;

use common::*;
use gim_common::GimCode;
use gim_proto::connect::v1::{self as wire, ReceiverType};
use gim_proto::logic::v1 as pb;

async fn group(ctx: &Ctx, owner: i64, members: Vec<i64>, large: bool) -> i64 {
    let mut s = ctx.server.clone();
    s.create_group(ctx.sreq(pb::ServerCreateGroupReq {
        group: Some(pb::Group {
            name: "g".into(),
            r#type: if large { 2 } else { 1 },
            ..Default::default()
        }),
        owner_id: owner,
        member_ids: members,
    }))
    .await
    .unwrap()
    .into_inner()
    .group_id
}

#[tokio::test]
async fn group_lifecycle_over_the_client_api() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3, 4]).await;
    let d1 = ctx.register_device().await;
    let d4 = ctx.register_device().await;
    let mut c = ctx.client.clone();
    let gid = c
        .create_group(ctx.creq(
            pb::CreateGroupReq {
                group: Some(pb::Group {
                    name: "team".into(),
                    introduction: "hi".into(),
                    ..Default::default()
                }),
                member_ids: vec![2],
            },
            1,
            d1,
        ))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    let g = c
        .get_group(ctx.creq(pb::GetGroupReq { group_id: gid }, 1, d1))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!(
        (g.name.as_str(), g.user_num, g.owner_id, g.r#type),
        ("team", 2, 1, 1)
    );
    // Add 2 (already) and 3: returns the already-members.
    let already = c
        .add_group_member(ctx.creq(
            pb::AddGroupMemberReq {
                group_id: gid,
                user_ids: vec![2, 3],
            },
            1,
            d1,
        ))
        .await
        .unwrap()
        .into_inner()
        .user_ids;
    assert_eq!(already, vec![2]);
    c.update_group(ctx.creq(
        pb::UpdateGroupReq {
            group_id: gid,
            name: "team2".into(),
            ..Default::default()
        },
        1,
        d1,
    ))
    .await
    .unwrap();
    let g = c
        .get_group(ctx.creq(pb::GetGroupReq { group_id: gid }, 1, d1))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!((g.name.as_str(), g.user_num), ("team2", 3));
    c.update_group_member(ctx.creq(
        pb::UpdateGroupMemberReq {
            group_id: gid,
            user_id: 3,
            member_type: 1,
            remarks: "r".into(),
            extra: String::new(),
        },
        1,
        d1,
    ))
    .await
    .unwrap();
    let mut s = ctx.server.clone();
    let members = s
        .get_group_members(ctx.sreq(pb::GetGroupMembersReq { group_id: gid }))
        .await
        .unwrap()
        .into_inner()
        .members;
    let m3 = members.iter().find(|m| m.user_id == 3).unwrap();
    assert_eq!(
        (m3.member_type, m3.remarks.as_str(), m3.nickname.as_str()),
        (1, "r", "user3")
    );
    let groups = c
        .get_user_groups(ctx.creq(pb::GetUserGroupsReq {}, 1, d1))
        .await
        .unwrap()
        .into_inner()
        .groups;
    assert_eq!(
        groups.iter().map(|g| g.group_id).collect::<Vec<_>>(),
        vec![gid]
    );
    c.delete_group_member(ctx.creq(
        pb::DeleteGroupMemberReq {
            group_id: gid,
            user_id: 3,
        },
        1,
        d1,
    ))
    .await
    .unwrap();

    // Outsider 4: 1004 for member operations and sends.
    let r = c
        .add_group_member(ctx.creq(
            pb::AddGroupMemberReq {
                group_id: gid,
                user_ids: vec![4],
            },
            4,
            d4,
        ))
        .await;
    assert_eq!(code(r), GimCode::NotInGroup);
    let r = ctx
        .send_text(4, d4, ReceiverType::NormalGroup, gid, "x", 0)
        .await;
    assert_eq!(code(r), GimCode::NotInGroup);
    let r = c
        .delete_group_member(ctx.creq(
            pb::DeleteGroupMemberReq {
                group_id: gid,
                user_id: 3,
            },
            1,
            d1,
        ))
        .await;
    assert_eq!(code(r), GimCode::NotInGroup, "no longer a member");
    // Unknown group: 1009; unknown member: 1010 naming the user.
    let r = c
        .get_group(ctx.creq(pb::GetGroupReq { group_id: i64::MAX }, 1, d1))
        .await;
    assert_eq!(code(r), GimCode::GroupNotFound);
    let r = c
        .add_group_member(ctx.creq(
            pb::AddGroupMemberReq {
                group_id: gid,
                user_ids: vec![777],
            },
            1,
            d1,
        ))
        .await;
    assert!(gim_msg(r).contains("777"));
    // Bad input: 1006 and nothing written.
    let r = c
        .create_group(ctx.creq(
            pb::CreateGroupReq {
                group: Some(pb::Group {
                    name: "".into(),
                    ..Default::default()
                }),
                member_ids: vec![2],
            },
            1,
            d1,
        ))
        .await;
    assert!(gim_msg(r).contains("group.name"));
    let r = c
        .create_group(ctx.creq(
            pb::CreateGroupReq {
                group: Some(pb::Group {
                    name: "x".into(),
                    r#type: 9,
                    ..Default::default()
                }),
                member_ids: vec![],
            },
            1,
            d1,
        ))
        .await;
    assert!(gim_msg(r).contains("group.type"));
    let r = c
        .create_group(ctx.creq(
            pb::CreateGroupReq {
                group: Some(pb::Group {
                    name: "x".into(),
                    ..Default::default()
                }),
                member_ids: vec![2, 999],
            },
            1,
            d1,
        ))
        .await;
    assert_eq!(code(r), GimCode::UserNotFound);
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM im_group WHERE app_id = ?")
        .bind(ctx.app.0)
        .fetch_one(&ctx.pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "failed creates left nothing behind");
    let r = c
        .update_group_member(ctx.creq(
            pb::UpdateGroupMemberReq {
                group_id: gid,
                user_id: 2,
                member_type: 5,
                ..Default::default()
            },
            1,
            d1,
        ))
        .await;
    assert!(gim_msg(r).contains("member_type"));
    // Explicit id taken: 1008.
    let mut s = ctx.server.clone();
    let r = s
        .create_group(ctx.sreq(pb::ServerCreateGroupReq {
            group: Some(pb::Group {
                group_id: gid,
                name: "dup".into(),
                ..Default::default()
            }),
            owner_id: 1,
            member_ids: vec![],
        }))
        .await;
    assert_eq!(code(r), GimCode::GroupAlreadyExists);
    // Server API: update and remove without being a member.
    s.update_group(ctx.sreq(pb::UpdateGroupReq {
        group_id: gid,
        name: "srv".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    s.delete_group_member(ctx.sreq(pb::DeleteGroupMemberReq {
        group_id: gid,
        user_id: 2,
    }))
    .await
    .unwrap();
    let g = s
        .get_group(ctx.sreq(pb::GetGroupReq { group_id: gid }))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!((g.name.as_str(), g.user_num), ("srv", 1));
}

#[tokio::test]
async fn user_to_user_stores_two_copies_and_retry_is_idempotent() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    let d2 = ctx.register_device().await;
    let r1 = ctx
        .send_text(1, d1, ReceiverType::User, 2, "hello", 42)
        .await
        .unwrap();
    assert_eq!(r1.seq, 1, "sender's own list");
    assert!(r1.message_id > 0);
    let again = ctx
        .send_text(1, d1, ReceiverType::User, 2, "hello", 42)
        .await
        .unwrap();
    assert_eq!(again, r1, "retry returns the first result");
    let inbox = ctx.sync(2, d2, 0, 0).await;
    assert_eq!(inbox.messages.len(), 1, "retry stored nothing new");
    let m = &inbox.messages[0];
    assert_eq!(
        (
            m.seq,
            m.sender_id,
            m.sender_device_id,
            m.receiver_id,
            m.message_id,
            m.request_id
        ),
        (1, 1, d1, 2, r1.message_id, 42)
    );
    assert_eq!(text_of(m), "hello");
    let outbox = ctx.sync(1, d1, 0, 0).await;
    assert_eq!(outbox.messages.len(), 1);
    assert_eq!(outbox.messages[0].message_id, r1.message_id);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_message WHERE app_id = ?")
        .bind(ctx.app.0)
        .fetch_one(&ctx.pool)
        .await
        .unwrap();
    assert_eq!(rows, 2);
    // A different request id is a new message; seqs keep increasing per list.
    let r2 = ctx
        .send_text(1, d1, ReceiverType::User, 2, "again", 43)
        .await
        .unwrap();
    assert_eq!(r2.seq, 2);
    assert_ne!(r2.message_id, r1.message_id);
    // Concurrent retries of one request: exactly one message.
    let sends = (0..5).map(|_| ctx.send_text(1, d1, ReceiverType::User, 2, "c", 44));
    let results = futures::future::join_all(sends).await;
    let firsts: std::collections::HashSet<i64> =
        results.into_iter().map(|r| r.unwrap().message_id).collect();
    assert_eq!(firsts.len(), 1);
    assert_eq!(ctx.sync(2, d2, 0, 0).await.messages.len(), 3);
    // The same request id from another device of the sender is another message (keys are per
    // device: clients seed their counters from the clock).
    let d1b = ctx.register_device().await;
    let other = ctx
        .send_text(1, d1b, ReceiverType::User, 2, "other device", 44)
        .await
        .unwrap();
    assert!(!firsts.contains(&other.message_id));
    let again = ctx
        .send_text(1, d1b, ReceiverType::User, 2, "other device", 44)
        .await
        .unwrap();
    assert_eq!(again, other);
    assert_eq!(ctx.sync(2, d2, 0, 0).await.messages.len(), 4);
    // Unknown receiver: 1010; bad inputs: 1006 naming the field, nothing stored.
    let r = ctx.send_text(1, d1, ReceiverType::User, 99, "x", 0).await;
    assert_eq!(code(r), GimCode::UserNotFound);
    let mut c = ctx.client.clone();
    let mut bad = send_req(ReceiverType::User, 2, "x", 0);
    bad.receiver_type = 9;
    assert!(gim_msg(c.send_message(ctx.creq(bad, 1, d1)).await).contains("receiver_type"));
    let mut bad = send_req(ReceiverType::User, 2, "x", 0);
    bad.receiver_id = -5;
    assert!(gim_msg(c.send_message(ctx.creq(bad, 1, d1)).await).contains("receiver_id"));
    let bad = send_req(ReceiverType::User, 2, &"x".repeat(20_000), 0);
    assert!(gim_msg(c.send_message(ctx.creq(bad, 1, d1)).await).contains("message_body"));
    let mut bad = send_req(ReceiverType::User, 2, "x", 0);
    bad.to_user_ids = (1..=101).collect();
    assert!(gim_msg(c.send_message(ctx.creq(bad, 1, d1)).await).contains("to_user_ids"));
    let mut bad = send_req(ReceiverType::User, 2, "x", 0);
    bad.message_body = None;
    assert!(gim_msg(c.send_message(ctx.creq(bad, 1, d1)).await).contains("message_body"));
    let mut bad = send_req(ReceiverType::User, 2, "x", 0);
    bad.sender_id = 5;
    assert!(gim_msg(c.send_message(ctx.creq(bad, 1, d1)).await).contains("sender_id"));
    assert_eq!(ctx.sync(2, d2, 0, 0).await.messages.len(), 4);
}

/// Many concurrent sends share store batches (one transaction for many messages) and a retry
/// racing its first send in the same batch makes the batch fall back to one-by-one stores:
/// every send still gets its own result and each request is stored exactly once.
#[tokio::test]
async fn concurrent_sends_and_racing_retries_are_each_stored_exactly_once() {
    let ctx = Ctx::start().await;
    let senders: Vec<i64> = (1..=8).collect();
    let receivers: Vec<i64> = (101..=108).collect();
    ctx.import_users(&[senders.clone(), receivers.clone()].concat())
        .await;
    let mut devices = std::collections::HashMap::new();
    for u in senders.iter().chain(&receivers) {
        devices.insert(*u, ctx.register_device().await);
    }
    const PER_SENDER: i64 = 6;
    // Each request twice, all at once: duplicates land in the same batch or in concurrent ones.
    let sends = senders.iter().flat_map(|&s| {
        let d = devices[&s];
        (1..=PER_SENDER).flat_map(move |rid| [0, 1].map(move |_| (s, d, rid)))
    });
    let ctx = &ctx;
    let calls = sends.map(|(s, d, rid)| async move {
        let r = ctx
            .send_text(
                s,
                d,
                ReceiverType::User,
                s + 100,
                &format!("{s}-{rid}"),
                rid,
            )
            .await;
        (s, rid, r)
    });
    let results = futures::future::join_all(calls).await;
    let mut by_request: std::collections::HashMap<(i64, i64), Vec<pb::SendMessageResp>> =
        Default::default();
    for (s, rid, r) in results {
        by_request
            .entry((s, rid))
            .or_default()
            .push(r.unwrap_or_else(|e| panic!("send {s}/{rid} failed: {e}")));
    }
    for ((s, rid), rs) in &by_request {
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0], rs[1], "send {s}/{rid}: the retry got another result");
    }
    for &s in &senders {
        let r = s + 100;
        let inbox = ctx.sync(r, devices[&r], 0, 0).await;
        let mut texts: Vec<String> = inbox.messages.iter().map(text_of).collect();
        texts.sort();
        let mut want: Vec<String> = (1..=PER_SENDER).map(|rid| format!("{s}-{rid}")).collect();
        want.sort();
        assert_eq!(texts, want, "receiver {r}: each request exactly once");
        // Increasing; not necessarily dense: a retry racing its first send allocates a seq
        // before its claim fails, and that seq stays a gap (sync skips gaps).
        let seqs: Vec<i64> = inbox.messages.iter().map(|m| m.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "receiver {r}: {seqs:?}"
        );
        // The sender's own copies carry the seqs the sends answered with.
        let outbox = ctx.sync(s, devices[&s], 0, 0).await;
        let mut answered: Vec<i64> = (1..=PER_SENDER)
            .map(|rid| by_request[&(s, rid)][0].seq)
            .collect();
        answered.sort();
        assert_eq!(
            outbox.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            answered
        );
    }
}

/// A user's keyed send marks its request in Redis in the seq script: a resend is answered with
/// the first result before any seq is allocated (no gap), also once the mark is gone (expired, or
/// Redis lost it: the store's claim answers), and a mark left by an attempt that never stored
/// does not stop the request from being stored.
#[tokio::test]
async fn resends_get_their_first_result_with_or_without_the_request_mark() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    let mut r = redis_conn(&redis_url()).await;
    let mark = |rid: i64| gim_logic::rds::request_mark_key(ctx.app, gim_common::UserId(1), d1, rid);
    let first = ctx
        .send_text(1, d1, ReceiverType::User, 2, "a", 77)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(mark(77))
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(
        ttl > 0 && ttl <= gim_logic::messages::seq::MARK_TTL_SECS as i64,
        "the send set its request mark with a TTL: {ttl}"
    );
    let again = ctx
        .send_text(1, d1, ReceiverType::User, 2, "a", 77)
        .await
        .unwrap();
    assert_eq!(again, first);
    let next = ctx
        .send_text(1, d1, ReceiverType::User, 2, "b", 78)
        .await
        .unwrap();
    assert_eq!(
        next.seq,
        first.seq + 1,
        "the resend allocated no seq in the sender's list"
    );
    let inbox = ctx.sync(2, d2, 0, 0).await;
    let seqs: Vec<i64> = inbox.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs.len(), 2);
    assert_eq!(
        seqs[1],
        seqs[0] + 1,
        "no gap in the receiver's list: {seqs:?}"
    );

    // The mark is gone: the resend still gets the first result and stores nothing.
    let _: i64 = redis::cmd("DEL")
        .arg(mark(77))
        .query_async(&mut r)
        .await
        .unwrap();
    let late = ctx
        .send_text(1, d1, ReceiverType::User, 2, "a", 77)
        .await
        .unwrap();
    assert_eq!(late, first);
    assert_eq!(ctx.sync(2, d2, 0, 0).await.messages.len(), 2);

    // A mark without a stored message (the first attempt failed before its store): stored now.
    let _: () = redis::cmd("SET")
        .arg(mark(79))
        .arg("1")
        .query_async(&mut r)
        .await
        .unwrap();
    let stored = ctx
        .send_text(1, d1, ReceiverType::User, 2, "c", 79)
        .await
        .unwrap();
    assert!(stored.seq > next.seq);
    let texts: Vec<String> = ctx
        .sync(2, d2, 0, 0)
        .await
        .messages
        .iter()
        .map(text_of)
        .collect();
    assert_eq!(texts, ["a", "b", "c"]);
    // And its resend is answered from MySQL.
    let again = ctx
        .send_text(1, d1, ReceiverType::User, 2, "c", 79)
        .await
        .unwrap();
    assert_eq!(again, stored);
}

/// Stores travel as SQL text with inlined values (one round trip per batch): bodies and mentions
/// full of bytes that mean something to SQL (quotes, backslashes, NUL, semicolons, comment
/// markers) are stored and read back byte for byte, alone and in batches, with and without
/// request ids, and nothing else is written.
#[tokio::test]
async fn bodies_with_sql_significant_bytes_round_trip_exactly() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3]).await;
    let d1 = ctx.register_device().await;
    let d2 = ctx.register_device().await;
    let nasty = [
        "it's",
        "\\'; DROP TABLE user_message; --",
        "\0nul\0",
        "X'41' 0x41 \\x41",
        "\"double\" `back` /* c */ # h",
        "日本語 🎉",
        "",
    ];
    let ctx = &ctx;
    let calls = nasty.iter().enumerate().map(|(i, text)| async move {
        let mut req = send_req(ReceiverType::User, 2, text, 0);
        // Every other send with a request id: keyed and unkeyed messages in one batch.
        if i % 2 == 0 {
            req.client_request_id = 1000 + i as i64;
        }
        req.to_user_ids = vec![3, 1];
        let mut c = ctx.client.clone();
        c.send_message(ctx.creq(req, 1, d1))
            .await
            .unwrap()
            .into_inner()
    });
    let sent = futures::future::join_all(calls).await;
    let inbox = ctx.sync(2, d2, 0, 0).await;
    assert_eq!(inbox.messages.len(), nasty.len());
    for (text, r) in nasty.iter().zip(&sent) {
        let m = inbox
            .messages
            .iter()
            .find(|m| m.message_id == r.message_id)
            .unwrap_or_else(|| panic!("{text:?} not stored"));
        assert_eq!(text_of(m), *text);
        assert_eq!(m.to_user_ids, vec![3, 1]);
    }
    // The sender's copies too, and the receiver of the mentions got none (1:1 messages).
    assert_eq!(ctx.sync(1, d1, 0, 0).await.messages.len(), nasty.len());
    let d3 = ctx.register_device().await;
    assert!(ctx.sync(3, d3, 0, 0).await.messages.is_empty());
    // A retry of a keyed send returns the first result and stores nothing more.
    let mut retry = send_req(ReceiverType::User, 2, nasty[0], 1000);
    retry.to_user_ids = vec![3, 1];
    let mut c = ctx.client.clone();
    let again = c
        .send_message(ctx.creq(retry, 1, d1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, sent[0]);
    assert_eq!(ctx.sync(2, d2, 0, 0).await.messages.len(), nasty.len());
}

#[tokio::test]
async fn all_typed_bodies_and_mentions_round_trip() {
    use wire::message_content::Content;
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    let contents = vec![
        (
            wire::MessageType::Text,
            Content::Text(wire::Text { text: "t".into() }),
        ),
        (
            wire::MessageType::Face,
            Content::Face(wire::Face {
                face_id: 3,
                face_url: "u".into(),
            }),
        ),
        (
            wire::MessageType::Voice,
            Content::Voice(wire::Voice {
                id: "v".into(),
                size: 1,
                duration: 2,
                url: "u".into(),
            }),
        ),
        (
            wire::MessageType::Image,
            Content::Image(wire::Image {
                id: "i".into(),
                width: 1,
                height: 2,
                url: "u".into(),
                thumbnail_url: "t".into(),
            }),
        ),
        (
            wire::MessageType::File,
            Content::File(wire::File {
                id: 9,
                name: "n".into(),
                size: 10,
                url: "u".into(),
            }),
        ),
        (
            wire::MessageType::Location,
            Content::Location(wire::Location {
                desc: "d".into(),
                latitude: 1.5,
                longitude: 2.5,
            }),
        ),
        (
            wire::MessageType::Command,
            Content::Command(wire::Command {
                code: 1001,
                data: bytes::Bytes::from_static(b"x"),
            }),
        ),
        (
            wire::MessageType::Custom,
            Content::Custom(wire::Custom { data: "{}".into() }),
        ),
    ];
    let mut c = ctx.client.clone();
    for (t, content) in &contents {
        let mut req = send_req(ReceiverType::User, 2, "", 0);
        req.message_body = Some(wire::MessageBody {
            message_type: *t as i32,
            message_content: Some(wire::MessageContent {
                content: Some(content.clone()),
            }),
        });
        req.to_user_ids = vec![2];
        c.send_message(ctx.creq(req, 1, d1)).await.unwrap();
    }
    let got = ctx.sync(2, 0, 0, 0).await.messages;
    assert_eq!(got.len(), contents.len());
    for (m, (t, content)) in got.iter().zip(&contents) {
        let b = m.message_body.as_ref().unwrap();
        assert_eq!(b.message_type, *t as i32);
        assert_eq!(
            b.message_content.as_ref().unwrap().content.as_ref(),
            Some(content)
        );
        assert_eq!(m.to_user_ids, vec![2]);
    }
    // Reserved command codes are refused from users.
    let mut req = send_req(ReceiverType::User, 2, "", 0);
    req.message_body = Some(wire::MessageBody {
        message_type: wire::MessageType::Command as i32,
        message_content: Some(wire::MessageContent {
            content: Some(Content::Command(wire::Command {
                code: 5,
                data: Default::default(),
            })),
        }),
    });
    assert!(gim_msg(c.send_message(ctx.creq(req, 1, d1)).await).contains("command.code"));
}

#[tokio::test]
async fn normal_group_write_diffusion_and_large_group_read_diffusion() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3, 4]).await;
    let d1 = ctx.register_device().await;
    let d4 = ctx.register_device().await;
    let normal = group(&ctx, 1, vec![2, 3], false).await;
    let r = ctx
        .send_text(1, d1, ReceiverType::NormalGroup, normal, "to all", 7)
        .await
        .unwrap();
    assert_eq!(r.seq, 1);
    for u in [1, 2, 3] {
        let msgs = ctx.sync(u, 0, 0, 0).await.messages;
        assert_eq!(msgs.len(), 1, "user {u}");
        assert_eq!(msgs[0].message_id, r.message_id);
        assert_eq!(msgs[0].receiver_id, normal);
        assert_eq!(msgs[0].receiver_type, ReceiverType::NormalGroup as i32);
    }
    assert!(ctx.sync(4, d4, 0, 0).await.messages.is_empty());
    let again = ctx
        .send_text(1, d1, ReceiverType::NormalGroup, normal, "to all", 7)
        .await
        .unwrap();
    assert_eq!(again, r);
    assert_eq!(ctx.sync(2, 0, 0, 0).await.messages.len(), 1);
    // Wrong receiver type for the group: 1006.
    let r = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, normal, "x", 0)
        .await;
    assert!(gim_msg(r).contains("receiver_type"));

    let large = group(&ctx, 1, vec![2], true).await;
    let a = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, large, "big 1", 0)
        .await
        .unwrap();
    let b = ctx
        .send_text(
            2,
            ctx.register_device().await,
            ReceiverType::LargeGroup,
            large,
            "big 2",
            0,
        )
        .await
        .unwrap();
    assert_eq!((a.seq, b.seq), (1, 2), "group seqs");
    // Stored once, in the group's list, not in the members' lists.
    assert_eq!(
        ctx.sync(2, 0, 0, 0).await.messages.len(),
        1,
        "only the normal-group copy"
    );
    let mut i = ctx.int.clone();
    let hist = i
        .group_sync(pb::GroupSyncReq {
            app_id: ctx.app.0,
            user_id: 1,
            group_id: large,
            seq: 0,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hist.messages.len(), 1);
    assert!(hist.has_more);
    assert_eq!(text_of(&hist.messages[0]), "big 1");
    assert_eq!(
        hist.messages[0].receiver_type,
        ReceiverType::LargeGroup as i32
    );
    let hist = i
        .group_sync(pb::GroupSyncReq {
            app_id: ctx.app.0,
            user_id: 1,
            group_id: large,
            seq: 1,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        hist.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![2]
    );
    assert!(!hist.has_more);
    // Non-members: 1004 to send and to read history; normal groups have no group history.
    let r = ctx
        .send_text(4, d4, ReceiverType::LargeGroup, large, "x", 0)
        .await;
    assert_eq!(code(r), GimCode::NotInGroup);
    let r = i
        .group_sync(pb::GroupSyncReq {
            app_id: ctx.app.0,
            user_id: 4,
            group_id: large,
            seq: 0,
            limit: 0,
        })
        .await;
    assert_eq!(code(r), GimCode::NotInGroup);
    let r = i
        .group_sync(pb::GroupSyncReq {
            app_id: ctx.app.0,
            user_id: 1,
            group_id: normal,
            seq: 0,
            limit: 0,
        })
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
    // Sign-in reports the user's large groups (conn indexes them).
    let si = ctx.sign_in(2, ctx.register_device().await, "n", 1).await;
    assert_eq!(si.large_group_ids, vec![large]);
    // Business sends: BUSINESS sender, seq 0 for user lists, group seq for large groups.
    let mut s = ctx.server.clone();
    let mut req = send_req(ReceiverType::User, 4, "from the shop", 0);
    req.sender_id = 5000;
    let r = s.send_message(ctx.sreq(req)).await.unwrap().into_inner();
    assert_eq!(r.seq, 0);
    let m = &ctx.sync(4, d4, 0, 0).await.messages[0];
    assert_eq!(
        (m.sender_type, m.sender_id),
        (wire::SenderType::Business as i32, 5000)
    );
    let r = s
        .send_message(ctx.sreq(send_req(ReceiverType::LargeGroup, large, "announce", 0)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seq, 3);
}

#[tokio::test]
async fn non_persistent_messages_are_not_stored() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    let mut req = send_req(ReceiverType::User, 2, "typing", 0);
    req.is_persist = false;
    let mut c = ctx.client.clone();
    let r = c
        .send_message(ctx.creq(req, 1, d1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seq, 0);
    assert!(ctx.sync(2, 0, 0, 0).await.messages.is_empty());
    assert!(ctx.sync(1, 0, 0, 0).await.messages.is_empty());
}

#[tokio::test]
async fn sync_paginates_by_count_and_bytes_and_seq_zero_starts_at_the_highest_ack() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    let d2 = ctx.register_device().await;
    let d2b = ctx.register_device().await;
    let big = "x".repeat(15_000);
    for i in 0..10 {
        let text = if i < 6 { big.clone() } else { format!("m{i}") };
        ctx.send_text(1, d1, ReceiverType::User, 2, &text, 0)
            .await
            .unwrap();
    }
    // Count pages.
    let p1 = ctx.sync(2, d2, 0, 4).await;
    assert_eq!(
        p1.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(p1.has_more, "cut by bytes: 4 x 15 KB would pass one frame");
    let mut all = Vec::new();
    let mut from = 0;
    loop {
        let p = ctx.sync(2, d2, from, 0).await;
        let size: usize = p
            .messages
            .iter()
            .map(|m| prost::Message::encoded_len(m) + 4)
            .sum();
        assert!(size <= 60_000, "page of {size} bytes");
        all.extend(p.messages.iter().map(|m| m.seq));
        from = *all.last().unwrap();
        if !p.has_more {
            break;
        }
    }
    assert_eq!(
        all,
        (1..=10).collect::<Vec<_>>(),
        "ascending, no gaps, no duplicates"
    );
    let p = ctx.sync(2, d2, 8, 1).await;
    assert_eq!(
        p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![9]
    );
    assert!(p.has_more);
    // Acks move forward only; seq 0 = the highest ack of any of the user's devices.
    let mut i = ctx.int.clone();
    let ack = |dev: i64, a: i64| pb::MessageAckReq {
        app_id: ctx.app.0,
        user_id: 2,
        device_id: dev,
        device_ack: a,
        receive_time: 0,
    };
    i.message_ack(ack(d2, 7)).await.unwrap();
    i.message_ack(ack(d2, 3)).await.unwrap();
    i.message_ack(ack(d2b, 5)).await.unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT ack FROM device_ack WHERE app_id = ? AND user_id = 2 AND device_id = ?",
    )
    .bind(ctx.app.0)
    .bind(d2)
    .fetch_one(&ctx.pool)
    .await
    .unwrap();
    assert_eq!(stored, 7, "ack did not move back");
    let p = ctx.sync(2, d2b, 0, 0).await;
    assert_eq!(
        p.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    // Bad input.
    let r = i
        .sync(pb::SyncReq {
            app_id: ctx.app.0,
            user_id: 2,
            device_id: d2,
            seq: -1,
            limit: 0,
        })
        .await;
    assert!(gim_msg(r).contains("seq"));
    let r = i
        .sync(pb::SyncReq {
            app_id: ctx.app.0,
            user_id: 2,
            device_id: d2,
            seq: 0,
            limit: -1,
        })
        .await;
    assert!(gim_msg(r).contains("limit"));
    let r = i.message_ack(ack(d2, -1)).await;
    assert!(gim_msg(r).contains("device_ack"));
}

/// Syncs and acks made at the same moment (a reconnect storm) share MySQL round trips, and
/// each caller still gets exactly its own page and its own ack stored.
#[tokio::test]
async fn concurrent_syncs_and_acks_share_batches_and_each_gets_its_own_result() {
    let ctx = Ctx::start().await;
    let users: Vec<i64> = (1..=30).collect();
    ctx.import_users(&[&users[..], &[1000]].concat()).await;
    let sender = ctx.register_device().await;
    let count = |u: i64| (u % 5 + 1) as usize;
    for &u in &users {
        for i in 0..count(u) {
            ctx.send_text(1000, sender, ReceiverType::User, u, &format!("{u}:{i}"), 0)
                .await
                .unwrap();
        }
    }
    let batches = |ctx: &Ctx, name: &str| -> u64 {
        let want = format!("gim_logic_batch_items_count{{batcher=\"{name}\"}} ");
        ctx.logic
            .state
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(want.as_str()).map(|v| v.parse().unwrap()))
            .unwrap_or(0)
    };
    // (user, from, limit): every user from the start; every third again from seq 1 with a page
    // of 2 (the same user twice in one batch).
    let mut asks: Vec<(i64, i64, i32)> = users.iter().map(|&u| (u, 0, 0)).collect();
    asks.extend(users.iter().filter(|u| *u % 3 == 0).map(|&u| (u, 1, 2)));
    let before = batches(&ctx, "sync_pages");
    let state = &ctx.logic.state;
    let pages = futures::future::join_all(asks.iter().map(|&(u, from, limit)| {
        state.sessions.sync(pb::SyncReq {
            app_id: ctx.app.0,
            user_id: u,
            device_id: 0,
            seq: from,
            limit,
        })
    }))
    .await;
    for (&(u, from, limit), page) in asks.iter().zip(pages) {
        let page = page.unwrap();
        let all: Vec<String> = (0..count(u)).map(|i| format!("{u}:{i}")).collect();
        let rest = &all[from as usize..];
        let want = if limit == 0 {
            rest
        } else {
            &rest[..rest.len().min(limit as usize)]
        };
        let got: Vec<String> = page.messages.iter().map(text_of).collect();
        assert_eq!(got, want, "user {u} from {from} limit {limit}");
        let seqs: Vec<i64> = page.messages.iter().map(|m| m.seq).collect();
        let want_seqs: Vec<i64> = (from + 1..=from + want.len() as i64).collect();
        assert_eq!(seqs, want_seqs, "user {u}: own seqs, ascending");
        assert_eq!(page.has_more, want.len() < rest.len(), "user {u} has_more");
    }
    let used = batches(&ctx, "sync_pages") - before;
    assert!(
        used > 0 && used < asks.len() as u64 / 2,
        "{} concurrent syncs took {used} batches",
        asks.len()
    );

    // Acks (of user 1000, whose list holds a copy of each of the 90 sends): each device its own
    // row; two acks of one device in one batch keep the higher; one above the list is capped.
    let devices: Vec<i64> = (0..20).map(|i| 7_000 + i).collect();
    let mut acks: Vec<(i64, i64)> = devices.iter().map(|&d| (d, d - 6_990)).collect();
    acks.push((devices[0], 3)); // lower than 10, in the same batch
    acks.push((devices[1], 50)); // higher than 11
    acks.push((devices[2], 1 << 62)); // above the list's highest seq, 90
    let before = batches(&ctx, "acks");
    let results = futures::future::join_all(acks.iter().map(|&(d, a)| {
        state.sessions.ack(pb::MessageAckReq {
            app_id: ctx.app.0,
            user_id: 1000,
            device_id: d,
            device_ack: a,
            receive_time: 0,
        })
    }))
    .await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let used = batches(&ctx, "acks") - before;
    assert!(
        used > 0 && used < acks.len() as u64 / 2,
        "{} acks took {used} batches",
        acks.len()
    );
    let stored: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT device_id, ack FROM device_ack WHERE app_id = ? AND user_id = 1000 ORDER BY device_id",
    )
    .bind(ctx.app.0)
    .fetch_all(&ctx.pool)
    .await
    .unwrap();
    let mut want: Vec<(i64, i64)> = devices.iter().map(|&d| (d, d - 6_990)).collect();
    want[1].1 = 50;
    want[2].1 = 90;
    assert_eq!(stored, want);
}

/// An ack above the highest seq of the user's list (2^62, as a probe sent) is stored as that
/// highest seq: later messages still reach every device's seq-0 sync.
#[tokio::test]
async fn an_ack_above_the_list_is_capped_and_hides_no_later_message() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let (d1, d2, d2b) = (
        ctx.register_device().await,
        ctx.register_device().await,
        ctx.register_device().await,
    );
    for t in ["a", "b"] {
        ctx.send_text(1, d1, ReceiverType::User, 2, t, 0)
            .await
            .unwrap();
    }
    let mut i = ctx.int.clone();
    i.message_ack(pb::MessageAckReq {
        app_id: ctx.app.0,
        user_id: 2,
        device_id: d2,
        device_ack: 1 << 62,
        receive_time: 0,
    })
    .await
    .unwrap();
    let stored: i64 = sqlx::query_scalar(
        "SELECT ack FROM device_ack WHERE app_id = ? AND user_id = 2 AND device_id = ?",
    )
    .bind(ctx.app.0)
    .bind(d2)
    .fetch_one(&ctx.pool)
    .await
    .unwrap();
    assert_eq!(stored, 2, "capped at the list's highest seq");
    ctx.send_text(1, d1, ReceiverType::User, 2, "later", 0)
        .await
        .unwrap();
    let p = ctx.sync(2, d2b, 0, 0).await;
    assert_eq!(
        p.messages.iter().map(text_of).collect::<Vec<_>>(),
        vec!["later".to_string()],
        "the seq-0 sync of another device still sees the later message"
    );
    // A user with an empty list: any ack is stored as 0.
    i.message_ack(pb::MessageAckReq {
        app_id: ctx.app.0,
        user_id: 1000,
        device_id: d2b,
        device_ack: 5,
        receive_time: 0,
    })
    .await
    .unwrap();
    let p = ctx.sync(1000, d2b, 0, 0).await;
    assert!(p.messages.is_empty());
    let stored: i64 = sqlx::query_scalar(
        "SELECT ack FROM device_ack WHERE app_id = ? AND user_id = 1000 AND device_id = ?",
    )
    .bind(ctx.app.0)
    .bind(d2b)
    .fetch_one(&ctx.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

/// A send whose seq was allocated first but whose insert commits later must not be skipped by a
/// sync that runs in between (the client would ack past it and never see it).
#[tokio::test]
async fn sync_waits_for_an_in_flight_send_that_holds_an_earlier_seq() {
    use gim_logic::messages::seq::ListId;
    use prost::Message as _;
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    ctx.send_text(1, d1, ReceiverType::User, 2, "first", 0)
        .await
        .unwrap();
    // An "in-flight" send: seq 2 allocated, not stored yet.
    let list = ListId::User(ctx.app, gim_common::UserId(2));
    let held = ctx
        .logic
        .state
        .messages
        .seqs
        .alloc(&[(list, 1)])
        .await
        .unwrap()[0]
        .get();
    assert_eq!(held, 2);
    ctx.send_text(1, d1, ReceiverType::User, 2, "third", 0)
        .await
        .unwrap();
    let sync = {
        let c = &ctx;
        async move { c.sync(2, 0, 1, 0).await }
    };
    let late_insert = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sqlx::query(
            "INSERT INTO user_message (app_id, user_id, seq, message_id, sender_type, sender_id, \
             receiver_type, receiver_id, body, send_time) VALUES (?, 2, ?, 1, 2, 1, 1, 2, ?, 0)",
        )
        .bind(ctx.app.0)
        .bind(held)
        .bind(text_body("second").encode_to_vec())
        .execute(&ctx.pool)
        .await
        .unwrap();
    };
    let (page, ()) = tokio::join!(sync, late_insert);
    let texts: Vec<String> = page.messages.iter().map(text_of).collect();
    assert_eq!(texts, vec!["second", "third"]);
}

/// Logic is stateless: a membership change made through one process is seen by another at once
/// (cache invalidation over Redis), not only after its cache TTL.
#[tokio::test]
async fn membership_changes_reach_other_logic_processes_caches() {
    use gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient;
    let a = Ctx::start().await;
    let sd_b = gim_common::shutdown::Shutdown::new();
    let b = gim_logic::start(a.cfg.clone(), sd_b.clone()).await.unwrap();
    let mut client_b = LogicClientExtClient::new(channel(b.client_addr).await);
    a.import_users(&[1, 2, 3]).await;
    let (d1, d3) = (a.register_device().await, a.register_device().await);
    let gid = group(&a, 1, vec![2], false).await;
    let r = redis_conn(&redis_url()).await;
    eventually("both processes subscribed", || {
        let mut r = r.clone();
        async move {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(gim_logic::groups::inval::CHANNEL)
                .query_async(&mut r)
                .await
                .ok()?;
            (n >= 2).then_some(())
        }
    })
    .await;
    // B caches the member list [1, 2].
    client_b
        .send_message(a.creq(send_req(ReceiverType::NormalGroup, gid, "1", 0), 1, d1))
        .await
        .unwrap();
    let r3 = client_b
        .send_message(a.creq(send_req(ReceiverType::NormalGroup, gid, "x", 0), 3, d3))
        .await;
    assert_eq!(code(r3), GimCode::NotInGroup);
    // A adds 3; B must accept 3's send well before its 5 s cache TTL.
    let mut s = a.server.clone();
    s.add_group_member(a.sreq(pb::AddGroupMemberReq {
        group_id: gid,
        user_ids: vec![3],
    }))
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(2500);
    loop {
        let r = client_b
            .send_message(a.creq(send_req(ReceiverType::NormalGroup, gid, "3", 0), 3, d3))
            .await;
        if r.is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B still serves the old member list"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sd_b.trigger();
}

/// Sign-ins at the same moment (a connect storm) look up their large groups in shared batches,
/// and each user still gets exactly its own large groups: not another user's, not a normal one.
#[tokio::test]
async fn concurrent_sign_ins_share_large_group_lookups_and_each_gets_its_own() {
    let ctx = Ctx::start().await;
    let users: Vec<i64> = (1..=24).collect();
    ctx.import_users(&users).await;
    // Owners are members too: 1 of the first, 5 of the second, 20 of the third.
    let l1 = group(&ctx, 1, (2..=10).collect(), true).await;
    let l2 = group(&ctx, 5, (6..=15).collect(), true).await;
    let l3 = group(&ctx, 20, vec![], true).await;
    let _normal = group(&ctx, 1, users[1..].to_vec(), false).await;
    let want = |u: i64| -> Vec<i64> {
        let mut g = Vec::new();
        if (1..=10).contains(&u) {
            g.push(l1);
        }
        if (5..=15).contains(&u) {
            g.push(l2);
        }
        if u == 20 {
            g.push(l3);
        }
        g.sort_unstable();
        g
    };
    let mut devices = Vec::new();
    for _ in &users {
        devices.push(ctx.register_device().await);
    }
    let batches = || -> u64 {
        let want = "gim_logic_batch_items_count{batcher=\"large_of\"} ";
        ctx.logic
            .state
            .metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(want).map(|v| v.parse().unwrap()))
            .unwrap_or(0)
    };
    let before = batches();
    let replies = futures::future::join_all(
        users
            .iter()
            .zip(&devices)
            .map(|(&u, &d)| ctx.sign_in(u, d, "node-a", u)),
    )
    .await;
    for (&u, r) in users.iter().zip(replies) {
        assert_eq!(r.large_group_ids, want(u), "user {u}");
    }
    let used = batches() - before;
    assert!(
        used < users.len() as u64,
        "{} sign-ins took {used} large-group lookups: none was shared",
        users.len()
    );
}

/// Roles over the client API: a plain member cannot make itself an admin (the probe's first
/// step towards removing the owner) nor touch another member; an admin manages members but can
/// neither demote nor remove the owner; a business server still may do anything.
#[tokio::test]
async fn group_roles_need_an_admin_and_the_owner_stays() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3]).await;
    let (d1, d2) = (ctx.register_device().await, ctx.register_device().await);
    let gid = group(&ctx, 1, vec![2, 3], false).await;
    let mut c = ctx.client.clone();
    let upd = |user: i64, member_type: i32, remarks: &str| pb::UpdateGroupMemberReq {
        group_id: gid,
        user_id: user,
        member_type,
        remarks: remarks.into(),
        extra: String::new(),
    };
    let del = |user: i64| pb::DeleteGroupMemberReq {
        group_id: gid,
        user_id: user,
    };
    let role = |user: i64| {
        let pool = ctx.pool.clone();
        async move {
            sqlx::query_scalar::<_, i8>(
                "SELECT member_type FROM group_member WHERE app_id = ? AND group_id = ? AND user_id = ?",
            )
            .bind(ctx.app.0)
            .bind(gid)
            .bind(user)
            .fetch_optional(&pool)
            .await
            .unwrap()
        }
    };
    // A plain member: its own remarks yes, its own role no, another member not at all.
    c.update_group_member(ctx.creq(upd(2, 2, "me"), 2, d2))
        .await
        .unwrap();
    let r = c
        .update_group_member(ctx.creq(upd(2, 1, "me"), 2, d2))
        .await;
    assert_eq!(code(r), GimCode::NotInGroup, "a member promoted itself");
    assert_eq!(role(2).await, Some(2));
    let r = c.update_group_member(ctx.creq(upd(3, 2, "x"), 2, d2)).await;
    assert_eq!(code(r), GimCode::NotInGroup);
    let r = c.update_group_member(ctx.creq(upd(1, 2, ""), 2, d2)).await;
    assert_eq!(code(r), GimCode::NotInGroup, "a member demoted the owner");
    let r = c.delete_group_member(ctx.creq(del(1), 2, d2)).await;
    assert_eq!(code(r), GimCode::NotInGroup, "a member removed the owner");
    // The owner makes 2 an admin; the admin still cannot demote or remove the owner.
    c.update_group_member(ctx.creq(upd(2, 1, ""), 1, d1))
        .await
        .unwrap();
    assert_eq!(role(2).await, Some(1));
    let r = c.update_group_member(ctx.creq(upd(1, 2, ""), 2, d2)).await;
    assert_eq!(code(r), GimCode::NotInGroup, "an admin demoted the owner");
    let r = c.delete_group_member(ctx.creq(del(1), 2, d2)).await;
    assert_eq!(code(r), GimCode::NotInGroup, "an admin removed the owner");
    assert_eq!(role(1).await, Some(1));
    // ... nor can the owner demote itself (the group would have an owner without rights); it
    // may edit its own remarks.
    let r = c.update_group_member(ctx.creq(upd(1, 2, ""), 1, d1)).await;
    assert_eq!(code(r), GimCode::NotInGroup);
    c.update_group_member(ctx.creq(upd(1, 1, "owner"), 1, d1))
        .await
        .unwrap();
    // An admin manages plain members.
    c.update_group_member(ctx.creq(upd(3, 1, "promoted"), 2, d2))
        .await
        .unwrap();
    c.update_group_member(ctx.creq(upd(3, 2, ""), 2, d2))
        .await
        .unwrap();
    c.delete_group_member(ctx.creq(del(3), 2, d2))
        .await
        .unwrap();
    assert_eq!(role(3).await, None);
    // The owner demotes the admin; a business server may remove the owner.
    c.update_group_member(ctx.creq(upd(2, 2, ""), 1, d1))
        .await
        .unwrap();
    assert_eq!(role(2).await, Some(2));
    let mut s = ctx.server.clone();
    s.delete_group_member(ctx.sreq(del(1))).await.unwrap();
    assert_eq!(role(1).await, None);
}

/// GetGroup over the client API answers members only (group ids are sequential: a non-member
/// would learn every group's name, owner and size); business servers read any group.
#[tokio::test]
async fn get_group_is_for_members_and_business_servers() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3]).await;
    let (d2, d3) = (ctx.register_device().await, ctx.register_device().await);
    let mut c = ctx.client.clone();
    for large in [false, true] {
        let gid = group(&ctx, 1, vec![2], large).await;
        let g = c
            .get_group(ctx.creq(pb::GetGroupReq { group_id: gid }, 2, d2))
            .await
            .unwrap()
            .into_inner()
            .group
            .unwrap();
        assert_eq!(g.owner_id, 1);
        let r = c
            .get_group(ctx.creq(pb::GetGroupReq { group_id: gid }, 3, d3))
            .await;
        assert_eq!(code(r), GimCode::NotInGroup, "a non-member read the group");
        let mut s = ctx.server.clone();
        let g = s
            .get_group(ctx.sreq(pb::GetGroupReq { group_id: gid }))
            .await
            .unwrap()
            .into_inner()
            .group
            .unwrap();
        assert_eq!(g.group_id, gid);
    }
}

/// A client request id reused for a different message (another receiver, receiver type or body)
/// is refused with 1006 naming `client_request_id`, instead of being answered with the first
/// result while nothing is stored; a true retry still gets its first result. For users (with and
/// without the request mark), large groups, and business servers' SendMessage and PushToUsers.
#[tokio::test]
async fn a_request_id_reused_for_another_message_is_refused() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3]).await;
    let (d1, d2, d3) = (
        ctx.register_device().await,
        ctx.register_device().await,
        ctx.register_device().await,
    );
    let reused = |r: Result<pb::SendMessageResp, tonic::Status>| {
        let m = gim_msg(r);
        assert!(m.starts_with("client_request_id"), "{m}");
    };
    let first = ctx
        .send_text(1, d1, ReceiverType::User, 2, "to 2", 500)
        .await
        .unwrap();
    // Another receiver, with the request mark set (Redis answers "seen") ...
    reused(
        ctx.send_text(1, d1, ReceiverType::User, 3, "to 2", 500)
            .await,
    );
    // ... another body, and once the mark is gone (MySQL answers).
    reused(
        ctx.send_text(1, d1, ReceiverType::User, 2, "changed", 500)
            .await,
    );
    let mut r = redis_conn(&redis_url()).await;
    let _: i64 = redis::cmd("DEL")
        .arg(gim_logic::rds::request_mark_key(
            ctx.app,
            gim_common::UserId(1),
            d1,
            500,
        ))
        .query_async(&mut r)
        .await
        .unwrap();
    reused(
        ctx.send_text(1, d1, ReceiverType::User, 3, "to 2", 500)
            .await,
    );
    // Another receiver type: a group.
    let gid = group(&ctx, 1, vec![2, 3], false).await;
    reused(
        ctx.send_text(1, d1, ReceiverType::NormalGroup, gid, "to 2", 500)
            .await,
    );
    assert!(
        ctx.sync(3, d3, 0, 0).await.messages.is_empty(),
        "nothing reached 3"
    );
    // The true retry still gets the first result.
    let again = ctx
        .send_text(1, d1, ReceiverType::User, 2, "to 2", 500)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(ctx.sync(2, d2, 0, 0).await.messages.len(), 1);

    // Large groups: another group, another body.
    let large = group(&ctx, 1, vec![2], true).await;
    let large2 = group(&ctx, 1, vec![2], true).await;
    let g1 = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, large, "big", 501)
        .await
        .unwrap();
    reused(
        ctx.send_text(1, d1, ReceiverType::LargeGroup, large2, "big", 501)
            .await,
    );
    reused(
        ctx.send_text(1, d1, ReceiverType::LargeGroup, large, "other", 501)
            .await,
    );
    let again = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, large, "big", 501)
        .await
        .unwrap();
    assert_eq!(again, g1);

    // A business server: SendMessage to another user, then PushToUsers to other users.
    let mut s = ctx.server.clone();
    let mut biz = send_req(ReceiverType::User, 2, "notice", 502);
    biz.sender_id = 9;
    let b1 = s
        .send_message(ctx.sreq(biz.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut other = biz.clone();
    other.receiver_id = 3;
    reused(
        s.send_message(ctx.sreq(other))
            .await
            .map(|r| r.into_inner()),
    );
    let again = s.send_message(ctx.sreq(biz)).await.unwrap().into_inner();
    assert_eq!(again, b1);
    let push = |users: Vec<i64>, text: &str| pb::PushToUsersReq {
        user_ids: users,
        message_body: Some(text_body(text)),
        is_persist: true,
        client_request_id: 503,
        sender_id: 9,
    };
    let p1 = s
        .push_to_users(ctx.sreq(push(vec![2], "p")))
        .await
        .unwrap()
        .into_inner();
    let r = s.push_to_users(ctx.sreq(push(vec![3], "p"))).await;
    assert!(gim_msg(r).starts_with("client_request_id"));
    let r = s.push_to_users(ctx.sreq(push(vec![2], "q"))).await;
    assert!(gim_msg(r).starts_with("client_request_id"));
    let again = s
        .push_to_users(ctx.sreq(push(vec![2], "p")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, p1);
    assert!(
        ctx.sync(3, d3, 0, 0).await.messages.is_empty(),
        "nothing reached 3"
    );
}
