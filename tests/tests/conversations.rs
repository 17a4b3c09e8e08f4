//! Conversations (issue 20): the list with unread counts kept in the store transaction, pin /
//! mute / delete, MARK_READ with read sync and receipts, through conn nodes over TCP and
//! WebSocket and through LogicClientExt, on real MariaDB and Redis.

use gim_client::{ClientError, Notice, Session, SessionOptions};
use gim_e2e::app::{TestClient, send_retrying, text_req};
use gim_e2e::{Cluster, WAIT};
use gim_proto::connect::v1::{
    Conversation, ConversationCommand, GetConversationsInput, GetConversationsOutput,
    MarkReadInput, MessageItem, PackageType, ReadNotice, ReceiverType, SenderType,
    UpdateConversationInput, message_content,
};
use prost::Message as _;
use std::collections::HashMap;

fn conv(out: &GetConversationsOutput, t: ReceiverType, id: i64) -> &Conversation {
    out.conversations
        .iter()
        .chain(&out.large_groups)
        .find(|c| c.peer_type == t as i32 && c.peer_id == id)
        .unwrap_or_else(|| panic!("no conversation {t:?} {id} in {out:?}"))
}

/// The command code and ReadNotice of a conversation notice, if `m` is one.
fn notice(m: &MessageItem) -> Option<(i32, Vec<u8>)> {
    if m.sender_type() != SenderType::System {
        return None;
    }
    match m
        .message_body
        .as_ref()?
        .message_content
        .as_ref()?
        .content
        .as_ref()?
    {
        message_content::Content::Command(c) => Some((c.code, c.data.to_vec())),
        _ => None,
    }
}

fn read_notices(c: &TestClient, code: ConversationCommand) -> Vec<ReadNotice> {
    c.messages
        .iter()
        .filter_map(notice)
        .filter(|(k, _)| *k == code as i32)
        .map(|(_, d)| ReadNotice::decode(d.as_slice()).expect("ReadNotice"))
        .collect()
}

fn code(r: Result<Conversation, ClientError>) -> Option<i32> {
    r.err().and_then(|e| e.gim_code())
}

/// What the stored rows say a conversation's unread count must be: the owner's copies in it,
/// after its read seq, not sent by the owner.
async fn unread_by_rows(pool: &sqlx::MySqlPool, app: i64, owner: i64) -> HashMap<(i8, i64), i64> {
    let rows: Vec<(i8, i64, i64)> = sqlx::query_as(
        "SELECT c.peer_type, c.peer_id, CAST((SELECT COUNT(*) FROM user_message m \
         WHERE m.app_id = c.app_id AND m.user_id = c.owner_id AND m.seq > c.read_seq \
         AND m.sender_type IN (2, 3) AND NOT (m.sender_type = 2 AND m.sender_id = c.owner_id) \
         AND ((c.peer_type = 1 AND m.receiver_type = 1 AND m.sender_id = c.peer_id) \
           OR (c.peer_type = 2 AND m.receiver_type = 2 AND m.receiver_id = c.peer_id))) AS SIGNED) \
         FROM conversation c WHERE c.app_id = ? AND c.owner_id = ? AND c.peer_type IN (1, 2)",
    )
    .bind(app)
    .bind(owner)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter().map(|(t, p, n)| ((t, p), n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_list_counts_unread_and_follows_pin_mute_delete() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3]).await;
    let g = app.group(2, &[1, 3], false).await;
    // The owner, user 1: one device over TCP, one over WebSocket.
    let mut tcp = app.client(1, vec![cl.conns[0].tcp()]).await;
    let mut ws = app.client(1, vec![cl.conns[1].ws()]).await;
    let two = app.client(2, vec![cl.conns[1].tcp()]).await;
    let three = app.client(3, vec![cl.conns[0].ws()]).await;

    for i in 0..3 {
        two.send_text(ReceiverType::User, 1, &format!("two {i}"))
            .await
            .unwrap();
    }
    three
        .send_text(ReceiverType::User, 1, "three")
        .await
        .unwrap();
    // The owner's own message is the last of its conversation and never unread.
    let own = tcp
        .send_text(ReceiverType::User, 2, "own reply")
        .await
        .unwrap();
    let gm = two
        .send_text(
            ReceiverType::NormalGroup,
            g,
            "to the group with a long text that is cut",
        )
        .await
        .unwrap();
    tcp.wait_text("to the group with a long text that is cut")
        .await;

    for out in [
        tcp.client.get_conversations(0, 0).await.unwrap(),
        ws.client.get_conversations(0, 0).await.unwrap(),
        app.api(&tcp.creds).get_conversations(0, 0).await.unwrap(),
    ] {
        assert_eq!(out.conversations.len(), 3, "{out:?}");
        let c2 = conv(&out, ReceiverType::User, 2);
        assert_eq!(
            (c2.unread, c2.last_seq, c2.preview.as_str()),
            (3, own.seq, "own reply")
        );
        assert_eq!(
            (c2.last_sender_type(), c2.last_sender_id),
            (SenderType::User, 1)
        );
        assert_eq!(conv(&out, ReceiverType::User, 3).unread, 1);
        let cg = conv(&out, ReceiverType::NormalGroup, g);
        assert_eq!((cg.unread, cg.last_message_id), (1, gm.message_id));
        assert_eq!(cg.preview.chars().count(), 32);
        assert_eq!(out.unread_total, 5);
        // Versions are distinct seqs of the owner's list, the page in version order.
        let v: Vec<i64> = out.conversations.iter().map(|c| c.version).collect();
        assert!(v.windows(2).all(|w| w[0] < w[1]), "{v:?}");
        assert_eq!(out.version, *v.last().unwrap());
        assert!(!out.has_more);
    }

    // Paging and since_version: only what changed after the version asked from.
    let first = tcp.client.get_conversations(0, 1).await.unwrap();
    assert!(first.has_more && first.conversations.len() == 1);
    let rest = tcp
        .client
        .get_conversations(first.version, 0)
        .await
        .unwrap();
    assert_eq!(rest.conversations.len(), 2);
    let now = rest.version;
    three
        .send_text(ReceiverType::User, 1, "again")
        .await
        .unwrap();
    ws.wait_text("again").await;
    let changed = ws.client.get_conversations(now, 0).await.unwrap();
    assert_eq!(changed.conversations.len(), 1);
    assert_eq!(changed.conversations[0].peer_id, 3);
    assert_eq!(changed.conversations[0].unread, 2);

    // Mute: left out of the total. Pin. The other device learns both from UPDATED notices.
    let muted = ws
        .client
        .update_conversation(UpdateConversationInput {
            peer_type: ReceiverType::User as i32,
            peer_id: 3,
            set_muted: true,
            muted: true,
            set_pinned: true,
            pinned: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(muted.muted && muted.pinned && muted.unread == 2);
    let out = tcp.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(out.unread_total, 4);
    tcp.wait_until(|c| {
        c.messages
            .iter()
            .filter_map(notice)
            .any(|(k, _)| k == ConversationCommand::Updated as i32)
    })
    .await;
    // Delete: out of the list (flagged), read; the next message brings it back.
    let deleted = tcp
        .client
        .update_conversation(UpdateConversationInput {
            peer_type: ReceiverType::User as i32,
            peer_id: 2,
            delete: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(deleted.deleted && deleted.unread == 0 && deleted.read_seq == deleted.last_seq);
    two.send_text(ReceiverType::User, 1, "back").await.unwrap();
    tcp.wait_text("back").await;
    let out = tcp.client.get_conversations(0, 0).await.unwrap();
    let c2 = conv(&out, ReceiverType::User, 2);
    assert!(!c2.deleted && c2.unread == 1 && c2.preview == "back");
    // Bad input changes nothing.
    let bad = tcp
        .client
        .update_conversation(UpdateConversationInput {
            peer_type: ReceiverType::User as i32,
            peer_id: 2,
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad), Some(1006));
    let rows = unread_by_rows(&cl.pool, app.app_id, 1).await;
    for c in &out.conversations {
        assert_eq!(rows[&(c.peer_type as i8, c.peer_id)], c.unread, "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_group_unread_is_computed_on_read_without_member_writes() {
    let cl = Cluster::start(1).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3]).await;
    let g = app.group(1, &[2, 3], true).await;
    let mut api = app.api(&app.device(1).await);
    let mut last = 0;
    for i in 0..4 {
        last = send_retrying(
            &mut api,
            text_req(ReceiverType::LargeGroup, g, &format!("lg {i}"), i + 1),
        )
        .await
        .seq;
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversation WHERE app_id = ?")
        .bind(app.app_id)
        .fetch_one(&cl.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a large-group send writes no conversation row");
    let member = app.client(2, vec![cl.conns[0].ws()]).await;
    let out = member.client.get_conversations(0, 0).await.unwrap();
    assert!(out.conversations.is_empty());
    let c = conv(&out, ReceiverType::LargeGroup, g);
    assert_eq!(
        (c.last_seq, c.unread, c.preview.as_str()),
        (last, 4, "lg 3")
    );
    assert_eq!(out.unread_total, 4);
    let r = member
        .client
        .mark_read(ReceiverType::LargeGroup, g, last - 1)
        .await
        .unwrap();
    assert_eq!((r.read_seq, r.unread), (last - 1, 1));
    let out = member.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(conv(&out, ReceiverType::LargeGroup, g).unread, 1);
    // Beyond the group's last seq; not a member (1004).
    assert_eq!(
        code(
            member
                .client
                .mark_read(ReceiverType::LargeGroup, g, last + 1)
                .await
        ),
        Some(1006)
    );
    app.users(&[4]).await;
    let outsider = app.client(4, vec![cl.conns[0].tcp()]).await;
    assert_eq!(
        code(
            outsider
                .client
                .mark_read(ReceiverType::LargeGroup, g, 1)
                .await
        ),
        Some(1004)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mark_read_syncs_devices_and_sends_receipts_stored_for_offline_senders() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3]).await;
    // Reader 2: d1 a raw TCP session (to see its pushes), d2 an SDK client over WebSocket.
    let d1 = app.device(2).await;
    let (s1, mut pushes1) = Session::connect(&cl.conns[0].tcp(), &d1, &SessionOptions::default())
        .await
        .unwrap();
    let mut d2 = app.client(2, vec![cl.conns[1].ws()]).await;
    // Sender 1 sends while offline from the long connection (gRPC), then comes online later.
    let sender_creds = app.device(1).await;
    let mut api = app.api(&sender_creds);
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            send_retrying(
                &mut api,
                text_req(ReceiverType::User, 2, &format!("m{i}"), i + 1),
            )
            .await,
        );
    }
    d2.wait_text("m2").await;
    let out = d2.client.get_conversations(0, 0).await.unwrap();
    let c = conv(&out, ReceiverType::User, 1).clone();
    assert_eq!(c.unread, 3);
    // The reader's seqs of m0..m2 (its own list).
    let seq_of = |t: &str| {
        d2.messages
            .iter()
            .find(|m| gim_e2e::text_of(m) == t)
            .unwrap()
            .seq
    };
    let (r0, r1, r2) = (seq_of("m0"), seq_of("m1"), seq_of("m2"));

    // Read up to m1 on d1 (TCP, raw): unread 1.
    let input = MarkReadInput {
        peer_type: ReceiverType::User as i32,
        peer_id: 1,
        read_seq: r1,
    };
    let r = Conversation::decode(s1.request(PackageType::MarkRead, &input).await.unwrap()).unwrap();
    assert_eq!((r.read_seq, r.unread), (r1, 1));
    assert!(r.version > c.version);
    // d2 gets the READ notice; d1 (the reading device) does not.
    d2.wait_until(|c| !read_notices(c, ConversationCommand::Read).is_empty())
        .await;
    let n = &read_notices(&d2, ConversationCommand::Read)[0];
    assert_eq!(
        (n.peer_type, n.peer_id, n.reader_id, n.read_seq),
        (1, 1, 2, r1)
    );
    // Backwards, equal, beyond the last seq: 1006, and nothing changes.
    for bad in [r0, r1, r2 + 1000] {
        let input = MarkReadInput {
            read_seq: bad,
            ..input
        };
        let e = s1.request(PackageType::MarkRead, &input).await.unwrap_err();
        assert_eq!(e.gim_code(), Some(1006), "read_seq {bad}");
    }
    let mut grpc_reader = app.api(&d2.creds);
    assert_eq!(
        code(grpc_reader.mark_read(ReceiverType::User, 1, r0).await),
        Some(1006)
    );
    assert_eq!(
        code(grpc_reader.mark_read(ReceiverType::User, 3, 1).await),
        Some(1006)
    );
    let after = d2.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(conv(&after, ReceiverType::User, 1), &r);

    // The sender comes online: the receipt was stored in its list, with the message read.
    let mut sender = TestClient::start(sender_creds.clone(), vec![cl.conns[1].tcp()]).await;
    sender
        .wait_until(|c| !read_notices(c, ConversationCommand::Receipt).is_empty())
        .await;
    let rc = &read_notices(&sender, ConversationCommand::Receipt)[0];
    assert_eq!(
        (rc.peer_type, rc.peer_id, rc.reader_id, rc.message_id),
        (1, 2, 2, sent[1].message_id)
    );
    // Online now: the next receipt is pushed (over gRPC's MarkRead).
    let r = grpc_reader
        .mark_read(ReceiverType::User, 1, r2)
        .await
        .unwrap();
    assert_eq!(r.unread, 0);
    sender
        .wait_until(|c| read_notices(c, ConversationCommand::Receipt).len() == 2)
        .await;
    assert_eq!(
        read_notices(&sender, ConversationCommand::Receipt)[1].message_id,
        sent[2].message_id
    );
    // Nothing for the reading device's own session but the notice of the gRPC read.
    let mut codes = Vec::new();
    while let Ok(Some(p)) =
        tokio::time::timeout(std::time::Duration::from_millis(300), pushes1.recv()).await
    {
        if let Notice::Message(m) = p {
            codes.push(notice(&m).map(|n| n.0));
        }
    }
    assert_eq!(
        codes,
        vec![None, None, None, Some(ConversationCommand::Read as i32)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_follow_the_app_switch_and_the_group_size() {
    let cl = Cluster::start(1).await;
    let app = cl.new_app().await;
    sqlx::query("UPDATE app SET read_receipts = 0 WHERE app_id = ?")
        .bind(app.app_id)
        .execute(&cl.pool)
        .await
        .unwrap();
    app.users(&[1, 2]).await;
    let mut api = app.api(&app.device(1).await);
    let s = send_retrying(&mut api, text_req(ReceiverType::User, 2, "x", 1)).await;
    let mut reader = app.api(&app.device(2).await);
    let out = reader.get_conversations(0, 0).await.unwrap();
    let c = conv(&out, ReceiverType::User, 1);
    reader
        .mark_read(ReceiverType::User, 1, c.last_seq)
        .await
        .unwrap();
    let receipts: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_message WHERE app_id = ? AND user_id = 1 AND sender_type = 1",
    )
    .bind(app.app_id)
    .fetch_one(&cl.pool)
    .await
    .unwrap();
    assert_eq!(receipts, 0, "receipts are off for this app");
    let _ = s;
}

/// The concurrency check: 50 senders write into one owner's conversations while the
/// owner marks read on two devices (TCP and WebSocket); every final unread count equals the
/// owner's messages after the read seq, exactly. In rounds: in each, the devices stop reading
/// while the senders still send (a count a read got wrong is then not repaired by a later read,
/// and every send after the last read must count once), and the counts are checked once the
/// round's sends are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_stay_exact_under_concurrent_sends_and_reads() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    const SENDERS: i64 = 50;
    const ROUNDS: i64 = 6;
    const EACH: i64 = 4;
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    let ids: Vec<i64> = (1..=SENDERS + 1).collect();
    app.users(&ids).await;
    let g = app.group(2, &ids, false).await;
    // The owner's two devices: raw sessions (TCP, WebSocket), their pushes drained.
    let mut devices = Vec::new();
    for ep in [cl.conns[0].tcp(), cl.conns[1].ws()] {
        let creds = app.device(1).await;
        let (s, mut pushes) = Session::connect(&ep, &creds, &SessionOptions::default())
            .await
            .unwrap();
        tokio::spawn(async move { while pushes.recv().await.is_some() {} });
        devices.push(Arc::new(s));
    }
    let mut apis = Vec::new();
    for s in 2..=SENDERS + 1 {
        apis.push((s, app.api(&app.device(s).await)));
    }
    let mut reads = 0;
    for round in 0..ROUNDS {
        let sent = Arc::new(AtomicI64::new(0));
        let start = Arc::new(tokio::sync::Barrier::new(SENDERS as usize + 2));
        let mut senders = Vec::new();
        for (s, api) in &apis {
            let (s, mut api) = (*s, api.clone());
            let (sent, start) = (sent.clone(), start.clone());
            senders.push(tokio::spawn(async move {
                start.wait().await;
                for i in 0..EACH {
                    // Mostly into the group (one conversation, many writers), some 1:1.
                    let (t, to) = if (i + s) % 4 == 0 {
                        (ReceiverType::User, 1)
                    } else {
                        (ReceiverType::NormalGroup, g)
                    };
                    let text = format!("{round}/{s}/{i}");
                    let id = round * EACH + i + 1;
                    send_retrying(&mut api, text_req(t, to, &text, id)).await;
                    sent.fetch_add(1, Ordering::AcqRel);
                }
            }));
        }
        let mut readers = Vec::new();
        for (k, dev) in devices.iter().enumerate() {
            let (sent, start, dev) = (sent.clone(), start.clone(), dev.clone());
            readers.push(tokio::spawn(async move {
                start.wait().await;
                let mut reads = 0;
                let mut n = k as i64;
                while sent.load(Ordering::Acquire) < SENDERS * EACH * 2 / 3 {
                    let input = GetConversationsInput {
                        since_version: 0,
                        limit: 100,
                    };
                    let data = dev
                        .request(PackageType::GetConversations, &input)
                        .await
                        .unwrap();
                    let out = GetConversationsOutput::decode(data).unwrap();
                    // The group on every pass, a few 1:1 conversations each time.
                    let picked: Vec<&Conversation> = out
                        .conversations
                        .iter()
                        .filter(|c| {
                            n += 1;
                            c.peer_type == ReceiverType::NormalGroup as i32 || n % 8 == 0
                        })
                        .collect();
                    for c in picked {
                        // Up to the last seq, or part way, alternating; races give 1006.
                        let to = if (n + reads) % 2 == 0 {
                            c.last_seq
                        } else {
                            c.read_seq + (c.last_seq - c.read_seq) / 2
                        };
                        if to <= c.read_seq {
                            continue;
                        }
                        let input = MarkReadInput {
                            peer_type: c.peer_type,
                            peer_id: c.peer_id,
                            read_seq: to,
                        };
                        match dev.request(PackageType::MarkRead, &input).await {
                            Ok(_) => reads += 1,
                            Err(e) => assert_eq!(e.gim_code(), Some(1006), "{e}"),
                        }
                    }
                }
                reads
            }));
        }
        for r in readers {
            reads += r.await.unwrap();
        }
        for s in senders {
            tokio::time::timeout(WAIT * 4, s).await.unwrap().unwrap();
        }
        let rows = unread_by_rows(&cl.pool, app.app_id, 1).await;
        let stored: Vec<(i8, i64, i32, i64, i64)> = sqlx::query_as(
            "SELECT peer_type, peer_id, unread, read_seq, last_seq FROM conversation \
             WHERE app_id = ? AND owner_id = 1",
        )
        .bind(app.app_id)
        .fetch_all(&cl.pool)
        .await
        .unwrap();
        for (t, p, unread, read, last) in stored {
            assert_eq!(
                i64::from(unread),
                rows[&(t, p)],
                "round {round}: conversation {t}/{p}: unread {unread} (read {read} of {last})"
            );
        }
    }
    assert!(reads > 10, "the owner marked read only {reads} times");
    // And as the owner's API shows them.
    let rows = unread_by_rows(&cl.pool, app.app_id, 1).await;
    let mut api_owner = app.api(&app.device(1).await);
    let out = api_owner.get_conversations(0, 100).await.unwrap();
    assert!(!out.has_more);
    for c in &out.conversations {
        assert_eq!(c.unread, rows[&(c.peer_type as i8, c.peer_id)], "{c:?}");
    }
    assert_eq!(out.conversations.len() as i64, SENDERS + 1);
}
