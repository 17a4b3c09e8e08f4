//! History, recall, edit and delete-for-me (issue 20 items 3 and 4), through conn nodes over TCP
//! and WebSocket and through LogicClientExt / LogicServerExt, on real MariaDB and Redis: pages of
//! one conversation newest first, every stored copy changed with a notice at a new seq in every
//! affected list (pushed, and found by sync), unread counts kept exact, and refusals that leave
//! the stored rows untouched.

use gim_client::{ClientError, Session, SessionOptions, text_body};
use gim_e2e::app::{send_retrying, text_req};
use gim_e2e::{Cluster, text_of};
use gim_proto::connect::v1::{
    ConversationCommand, GetConversationsOutput, MessageChangeNotice, MessageItem, MessageStatus,
    PackageType, ReceiverType, SenderType, SyncInput, SyncOutput, message_content,
};
use prost::Message as _;

/// A conversation's unread count in a list reply.
fn unread(out: &GetConversationsOutput, t: ReceiverType, id: i64) -> i64 {
    out.conversations
        .iter()
        .chain(&out.large_groups)
        .find(|c| c.peer_type == t as i32 && c.peer_id == id)
        .map(|c| c.unread)
        .unwrap_or_else(|| panic!("no conversation {t:?} {id} in {out:?}"))
}

/// The change notices (code, data) among `ms`.
fn changes(ms: &[MessageItem], code: ConversationCommand) -> Vec<MessageChangeNotice> {
    ms.iter()
        .filter(|m| m.sender_type() == SenderType::System)
        .filter_map(|m| {
            match m
                .message_body
                .as_ref()?
                .message_content
                .as_ref()?
                .content
                .as_ref()?
            {
                message_content::Content::Command(c) if c.code == code as i32 => {
                    Some(MessageChangeNotice::decode(c.data.as_ref()).expect("notice"))
                }
                _ => None,
            }
        })
        .collect()
}

fn gim_code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> Option<i32> {
    r.expect_err("refused").gim_code()
}

type MessageRows = Vec<(i64, i64, i64, i8, Vec<u8>, i64)>;
type ConversationRows = Vec<(i64, i8, i64, i64, i32, i64, i64, String)>;

/// Every stored copy and conversation row of the app.
async fn stored(pool: &sqlx::MySqlPool, app: i64) -> (MessageRows, ConversationRows) {
    let m = sqlx::query_as(
        "SELECT user_id, seq, message_id, status, body, edit_version FROM user_message \
         WHERE app_id = ? ORDER BY user_id, seq",
    )
    .bind(app)
    .fetch_all(pool)
    .await
    .unwrap();
    let c = sqlx::query_as(
        "SELECT owner_id, peer_type, peer_id, last_seq, unread, read_seq, version, preview \
         FROM conversation WHERE app_id = ? ORDER BY owner_id, peer_type, peer_id",
    )
    .bind(app)
    .fetch_all(pool)
    .await
    .unwrap();
    (m, c)
}

/// (status, body bytes, edit version) of every copy of a message.
async fn copies(pool: &sqlx::MySqlPool, app: i64, mid: i64) -> Vec<(i64, i8, usize, i64)> {
    let rows: Vec<(i64, i8, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT user_id, status, body, edit_version FROM user_message WHERE app_id = ? \
         AND message_id = ? ORDER BY user_id",
    )
    .bind(app)
    .bind(mid)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(u, s, b, e)| (u, s, b.len(), e))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_one_conversation_newest_first_through_tcp_ws_and_grpc() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3, 4]).await;
    let g = app.group(2, &[1, 3], false).await;
    let lg = app.group(2, &[1], true).await;
    let two = app.client(2, vec![cl.conns[0].tcp()]).await;
    let three = app.client(3, vec![cl.conns[1].ws()]).await;
    let mut one = app.client(1, vec![cl.conns[1].tcp()]).await;
    // Interleaved conversations in user 1's list.
    let mut with_two = Vec::new();
    for i in 0..5 {
        with_two.push(format!("two {i}"));
        two.send_text(ReceiverType::User, 1, &with_two[i])
            .await
            .unwrap();
        three
            .send_text(ReceiverType::User, 1, &format!("three {i}"))
            .await
            .unwrap();
        two.send_text(ReceiverType::NormalGroup, g, &format!("group {i}"))
            .await
            .unwrap();
    }
    with_two.push("own".into());
    one.send_text(ReceiverType::User, 2, "own").await.unwrap();
    for i in 0..3 {
        two.send_text(ReceiverType::LargeGroup, lg, &format!("large {i}"))
            .await
            .unwrap();
    }
    one.wait_text("group 4").await;

    // A new device over WebSocket reads the last messages of one conversation, page by page.
    let fresh = app.client(1, vec![cl.conns[0].ws()]).await;
    let want: Vec<String> = with_two.iter().rev().cloned().collect();
    for c in [&one, &fresh] {
        let p1 = c
            .client
            .get_history(ReceiverType::User, 2, 0, 4)
            .await
            .unwrap();
        assert!(p1.has_more);
        let before = p1.messages.last().unwrap().seq;
        let p2 = c
            .client
            .get_history(ReceiverType::User, 2, before, 4)
            .await
            .unwrap();
        assert!(!p2.has_more);
        let all: Vec<MessageItem> = p1.messages.into_iter().chain(p2.messages).collect();
        assert_eq!(all.iter().map(text_of).collect::<Vec<_>>(), want);
        assert!(all.windows(2).all(|w| w[0].seq > w[1].seq));
    }
    // Groups over gRPC: the normal group's copies in the caller's list, the large group's list.
    let mut api = app.api(&fresh.creds);
    let gh = api
        .get_history(ReceiverType::NormalGroup, g, 0, 0)
        .await
        .unwrap();
    assert_eq!(
        gh.messages.iter().map(text_of).collect::<Vec<_>>(),
        (0..5)
            .rev()
            .map(|i| format!("group {i}"))
            .collect::<Vec<_>>()
    );
    let lh = fresh
        .client
        .get_history(ReceiverType::LargeGroup, lg, 0, 2)
        .await
        .unwrap();
    assert_eq!(
        lh.messages.iter().map(text_of).collect::<Vec<_>>(),
        ["large 2", "large 1"]
    );
    assert!(lh.has_more);
    // The read is an index range on (owner, conversation, seq).
    let plan = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN SELECT * FROM user_message FORCE INDEX (idx_user_message_peer) \
         WHERE app_id = {} AND user_id = 1 AND peer_type = 1 \
         AND peer_id = 2 AND seq < 1000000 ORDER BY seq DESC LIMIT 5",
        app.app_id
    )))
    .fetch_all(&cl.pool)
    .await
    .unwrap();
    use sqlx::Row as _;
    let key: Option<String> = plan[0].try_get("key").unwrap();
    let extra: Option<String> = plan[0].try_get("Extra").unwrap();
    assert_eq!(key.as_deref(), Some("idx_user_message_peer"));
    assert!(
        !extra.unwrap_or_default().contains("filesort"),
        "read in index order"
    );

    // Not a member (1004), no such group (1009), bad paging (1006): nothing stored changes.
    let before = stored(&cl.pool, app.app_id).await;
    let outsider = app.client(4, vec![cl.conns[1].ws()]).await;
    let tcp4 = app.client(4, vec![cl.conns[0].tcp()]).await;
    for c in [&outsider, &tcp4] {
        let r = c
            .client
            .get_history(ReceiverType::NormalGroup, g, 0, 0)
            .await;
        assert_eq!(gim_code(r), Some(1004));
        let r = c
            .client
            .get_history(ReceiverType::LargeGroup, lg, 0, 0)
            .await;
        assert_eq!(gim_code(r), Some(1004));
        let r = c
            .client
            .get_history(ReceiverType::NormalGroup, 999_999_999, 0, 0)
            .await;
        assert_eq!(gim_code(r), Some(1009));
        let r = c.client.get_history(ReceiverType::User, 2, -1, 0).await;
        assert_eq!(gim_code(r), Some(1006));
    }
    assert_eq!(stored(&cl.pool, app.app_id).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_edit_and_delete_change_every_copy_keep_unread_exact_and_reach_offline_devices() {
    let cl = Cluster::start(2).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3, 4]).await;
    // Sender 1 on TCP and WebSocket; receiver 2 on WebSocket, plus a raw session for sync.
    let s_tcp = app.client(1, vec![cl.conns[0].tcp()]).await;
    let mut s_ws = app.client(1, vec![cl.conns[1].ws()]).await;
    let mut r_ws = app.client(2, vec![cl.conns[1].ws()]).await;
    let r_creds = app.device(2).await;
    let (raw, _pushes) = Session::connect(&cl.conns[0].tcp(), &r_creds, &SessionOptions::default())
        .await
        .unwrap();
    // A first message, so the ones below sit above seq 1 (sync from 0 means "from the acks").
    s_tcp
        .send_text(ReceiverType::User, 2, "hello")
        .await
        .unwrap();
    let secret = s_tcp
        .send_text(ReceiverType::User, 2, "secret")
        .await
        .unwrap();
    let keep = s_tcp
        .send_text(ReceiverType::User, 2, "keep")
        .await
        .unwrap();
    r_ws.wait_text("keep").await;
    let list = r_ws.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(unread(&list, ReceiverType::User, 1), 3);
    let mark = list.version;

    // Recall over TCP: both copies lose their body; the receiver's unread drops to 1 (the notice
    // does not count); the receiver's device and the sender's other device get notices.
    let out = s_tcp
        .client
        .recall_message(secret.message_id)
        .await
        .unwrap();
    assert_eq!(out.lists, 2);
    assert_eq!(
        copies(&cl.pool, app.app_id, secret.message_id).await,
        [(1, 2, 0, 0), (2, 2, 0, 0)]
    );
    r_ws.wait_until(|c| !changes(&c.messages, ConversationCommand::Recalled).is_empty())
        .await;
    let n = &changes(&r_ws.messages, ConversationCommand::Recalled)[0];
    assert_eq!(
        (n.message_id, n.peer_type, n.peer_id),
        (secret.message_id, 1, 1)
    );
    assert_eq!((n.operator_type(), n.operator_id), (SenderType::User, 1));
    s_ws.wait_until(|c| !changes(&c.messages, ConversationCommand::Recalled).is_empty())
        .await;
    let list = r_ws.client.get_conversations(mark, 0).await.unwrap();
    assert_eq!(unread(&list, ReceiverType::User, 1), 2, "{list:?}");
    assert!(list.version > mark);
    // A device that was offline syncs the recalled copy (no body) and the notice.
    let sync = |seq| {
        let raw = &raw;
        async move {
            let d = raw
                .request(PackageType::Sync, &SyncInput { seq })
                .await
                .unwrap();
            SyncOutput::decode(d).unwrap().messages
        }
    };
    let synced = sync(n.seq - 1).await;
    let copy = synced
        .iter()
        .find(|m| m.message_id == secret.message_id)
        .unwrap();
    assert_eq!(
        (copy.status(), copy.message_body.is_none()),
        (MessageStatus::Recall, true)
    );
    assert_eq!(changes(&synced, ConversationCommand::Recalled).len(), 1);
    // History shows it recalled too; recalling again changes nothing.
    let h = r_ws
        .client
        .get_history(ReceiverType::User, 1, 0, 0)
        .await
        .unwrap();
    assert_eq!(h.messages[1].status(), MessageStatus::Recall);
    let again = s_ws.client.recall_message(secret.message_id).await.unwrap();
    assert_eq!(again.lists, 0);

    // Edit over WebSocket: new body and version in every copy, unread unchanged, preview follows.
    let out = s_ws
        .client
        .edit_message(keep.message_id, text_body("kept"))
        .await
        .unwrap();
    assert_eq!((out.lists, out.edit_version), (2, 1));
    let got = copies(&cl.pool, app.app_id, keep.message_id).await;
    assert!(got.iter().all(|c| c.1 == 1 && c.3 == 1), "{got:?}");
    r_ws.wait_until(|c| !changes(&c.messages, ConversationCommand::Edited).is_empty())
        .await;
    let e = &changes(&r_ws.messages, ConversationCommand::Edited)[0];
    assert_eq!(e.edit_version, 1);
    assert_eq!(gim_client::body_text(e.message_body.as_ref()), Some("kept"));
    let h = r_ws
        .client
        .get_history(ReceiverType::User, 1, 0, 0)
        .await
        .unwrap();
    assert_eq!(
        (text_of(&h.messages[0]), h.messages[0].edit_version),
        ("kept".into(), 1)
    );
    let list = r_ws.client.get_conversations(0, 0).await.unwrap();
    let c = list.conversations.iter().find(|c| c.peer_id == 1).unwrap();
    assert_eq!((c.unread, c.preview.as_str()), (2, "kept"));

    // Delete-for-me over the raw TCP session: the receiver's copy only becomes a tombstone
    // (status DELETED, no body) at its seq, the unread count drops, the sender's copy is intact.
    let d = raw
        .request(
            PackageType::DeleteMessage,
            &gim_proto::connect::v1::MessageChangeInput {
                message_id: keep.message_id,
                message_body: None,
            },
        )
        .await
        .unwrap();
    let d = gim_proto::connect::v1::MessageChangeOutput::decode(d).unwrap();
    assert_eq!(d.lists, 1);
    let got = copies(&cl.pool, app.app_id, keep.message_id).await;
    assert_eq!(
        got.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
        [(1, 1), (2, 3)]
    );
    assert_eq!(got[1].2, 0);
    r_ws.wait_until(|c| !changes(&c.messages, ConversationCommand::Deleted).is_empty())
        .await;
    let keep_seq = h.messages[0].seq;
    let synced = sync(keep_seq - 1).await;
    assert_eq!(
        synced[0].seq, keep_seq,
        "the hidden message keeps its seq as a tombstone"
    );
    assert_eq!(
        (synced[0].status(), synced[0].message_body.is_none()),
        (MessageStatus::Deleted, true)
    );
    let list = r_ws.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(unread(&list, ReceiverType::User, 1), 1);
    assert_eq!(list.unread_total, 1);
    // Every count equals what the rows say: normal copies of others after the read seq.
    let exact: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_message WHERE app_id = ? AND user_id = 2 AND status = 1 \
         AND sender_type = 2 AND sender_id = 1",
    )
    .bind(app.app_id)
    .fetch_one(&cl.pool)
    .await
    .unwrap();
    assert_eq!(exact, 1, "only the first message");

    // A business server recalls any message, with no window.
    let mut sapi = app.server.clone();
    sapi.set_recall_window(0).await.unwrap();
    let late = s_tcp
        .send_text(ReceiverType::User, 2, "late")
        .await
        .unwrap();
    r_ws.wait_text("late").await;
    let list = r_ws.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(unread(&list, ReceiverType::User, 1), 2);
    let out = sapi.recall_message(late.message_id).await.unwrap();
    assert_eq!(out.lists, 2);
    let list = r_ws.client.get_conversations(0, 0).await.unwrap();
    assert_eq!(unread(&list, ReceiverType::User, 1), 1);
    // Mark-read recounts leave recalled messages out.
    let last = list
        .conversations
        .iter()
        .find(|c| c.peer_id == 1)
        .unwrap()
        .last_seq;
    let more = s_tcp
        .send_text(ReceiverType::User, 2, "more")
        .await
        .unwrap();
    let more_two = s_tcp
        .send_text(ReceiverType::User, 2, "more two")
        .await
        .unwrap();
    r_ws.wait_text("more two").await;
    sapi.recall_message(more_two.message_id).await.unwrap();
    let _ = more;
    let r = r_ws
        .client
        .mark_read(ReceiverType::User, 1, last)
        .await
        .unwrap();
    assert_eq!(r.unread, 1, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_changes_leave_stored_data_untouched_and_admins_recall_in_their_groups() {
    let cl = Cluster::start(1).await;
    let app = cl.new_app().await;
    app.users(&[1, 2, 3, 4]).await;
    // Group owned (administered) by 1, with members 2 and 3.
    let g = app.group(1, &[2, 3], false).await;
    let one = app.client(1, vec![cl.conns[0].tcp()]).await;
    let two = app.client(2, vec![cl.conns[0].ws()]).await;
    let mut three = app.client(3, vec![cl.conns[0].tcp()]).await;
    let four = app.client(4, vec![cl.conns[0].ws()]).await;
    let direct = one
        .send_text(ReceiverType::User, 2, "direct")
        .await
        .unwrap();
    let in_group = three
        .send_text(ReceiverType::NormalGroup, g, "in group")
        .await
        .unwrap();
    let mut api2 = app.api(&two.creds);
    let seed = send_retrying(&mut api2, text_req(ReceiverType::User, 1, "two to one", 1)).await;
    three.wait_text("in group").await;

    let before = stored(&cl.pool, app.app_id).await;
    // Someone else's message, not an admin (1013), over TCP, WebSocket and gRPC.
    assert_eq!(
        gim_code(two.client.recall_message(direct.message_id).await),
        Some(1013)
    );
    assert_eq!(
        gim_code(api2.recall_message(in_group.message_id).await),
        Some(1013)
    );
    assert_eq!(
        gim_code(
            two.client
                .edit_message(in_group.message_id, text_body("x"))
                .await
        ),
        Some(1013)
    );
    // Not in the caller's list, or no such id (1012).
    assert_eq!(
        gim_code(four.client.recall_message(direct.message_id).await),
        Some(1012)
    );
    assert_eq!(
        gim_code(one.client.recall_message(987_654_321).await),
        Some(1012)
    );
    assert_eq!(
        gim_code(four.client.delete_message(direct.message_id).await),
        Some(1012)
    );
    // Bad ids and bodies (1006).
    assert_eq!(gim_code(one.client.recall_message(0).await), Some(1006));
    assert_eq!(
        gim_code(
            one.client
                .edit_message(direct.message_id, Default::default())
                .await
        ),
        Some(1006)
    );
    // Past the window (1014): the app allows none now.
    app.server.clone().set_recall_window(0).await.unwrap();
    assert_eq!(
        gim_code(one.client.recall_message(direct.message_id).await),
        Some(1014)
    );
    assert_eq!(
        gim_code(
            one.client
                .edit_message(direct.message_id, text_body("y"))
                .await
        ),
        Some(1014)
    );
    assert_eq!(
        gim_code(three.client.recall_message(in_group.message_id).await),
        Some(1014)
    );
    // MARK_READ beyond the last seq or backwards (1006).
    let list = one.client.get_conversations(0, 0).await.unwrap();
    let c = list
        .conversations
        .iter()
        .find(|c| c.peer_id == 2)
        .unwrap()
        .clone();
    let _ = seed;
    let mut api1 = app.api(&one.creds);
    let beyond = api1.mark_read(ReceiverType::User, 2, c.last_seq + 10).await;
    assert_eq!(gim_code(beyond), Some(1006));
    assert_eq!(stored(&cl.pool, app.app_id).await, before);
    one.client
        .mark_read(ReceiverType::User, 2, c.last_seq)
        .await
        .unwrap();
    let before_read = stored(&cl.pool, app.app_id).await;
    let back = one
        .client
        .mark_read(ReceiverType::User, 2, c.last_seq - 1)
        .await;
    assert_eq!(gim_code(back), Some(1006));
    let e = two
        .client
        .mark_read(ReceiverType::User, 1, c.last_seq + 10)
        .await;
    assert_eq!(gim_code(e), Some(1006));
    assert_eq!(stored(&cl.pool, app.app_id).await, before_read);

    // The group's admin recalls a member's message at any time; every member's copy changes.
    let out = one
        .client
        .recall_message(in_group.message_id)
        .await
        .unwrap();
    assert_eq!(out.lists, 3);
    let got = copies(&cl.pool, app.app_id, in_group.message_id).await;
    assert!(got.iter().all(|c| c.1 == 2 && c.2 == 0), "{got:?}");
    three
        .wait_until(|c| !changes(&c.messages, ConversationCommand::Recalled).is_empty())
        .await;
}

/// Sends, recalls, deletes-for-me and mark-reads racing on one owner's conversations, then sends,
/// recalls and deletes with no read after them (a mark-read recount would hide a wrong count):
/// every unread count ends equal to what the stored rows say, and no change fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_counts_stay_exact_under_racing_sends_recalls_deletes_and_reads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    const SENDERS: i64 = 10;
    const EACH: i64 = 9;
    let cl = Cluster::start(1).await;
    let app = cl.new_app().await;
    let ids: Vec<i64> = (1..=SENDERS + 1).collect();
    app.users(&ids).await;
    let g = app.group(2, &ids, false).await;
    let owner = app.device(1).await;
    let sent: Arc<Mutex<Vec<i64>>> = Arc::default();
    let mut apis = Vec::new();
    for s in 2..=SENDERS + 1 {
        apis.push((s, app.api(&app.device(s).await)));
    }
    // Each sender sends messages `range`, taking back every third within the window.
    let phase = |range: std::ops::Range<i64>| {
        let mut tasks = Vec::new();
        for (s, api) in &apis {
            let (s, mut api, sent, range) = (*s, api.clone(), sent.clone(), range.clone());
            tasks.push(tokio::spawn(async move {
                for i in range {
                    let (t, to) = if (i + s) % 3 == 0 {
                        (ReceiverType::User, 1)
                    } else {
                        (ReceiverType::NormalGroup, g)
                    };
                    let req = text_req(t, to, &format!("{s}/{i}"), i + 1);
                    let r = send_retrying(&mut api, req).await;
                    if i % 3 == 1 {
                        api.recall_message(r.message_id).await.unwrap();
                    } else {
                        sent.lock().unwrap().push(r.message_id);
                    }
                }
            }));
        }
        tasks
    };
    // The owner deletes some of them as they come and, when `read`, marks read.
    let owner_task = |read: bool, done: Arc<AtomicBool>| {
        let mut api = app.api(&owner);
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut n = 0i64;
            while !done.load(Ordering::Acquire) {
                n += 1;
                if read {
                    let out = api.get_conversations(0, 100).await.unwrap();
                    for c in &out.conversations {
                        let to = if n % 2 == 0 {
                            c.last_seq
                        } else {
                            c.read_seq + (c.last_seq - c.read_seq) / 2
                        };
                        let peer = ReceiverType::try_from(c.peer_type).unwrap();
                        if let Err(e) = api.mark_read(peer, c.peer_id, to).await {
                            assert_eq!(e.gim_code(), Some(1006), "{e}");
                        }
                    }
                } else {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                let victim = {
                    let sent = sent.lock().unwrap();
                    sent.len().checked_sub(1).map(|i| sent[i])
                };
                if let Some(mid) = victim {
                    api.delete_message(mid).await.unwrap();
                }
            }
        })
    };
    for (range, read) in [(0..EACH - 3, true), (EACH - 3..EACH, false)] {
        let done = Arc::new(AtomicBool::new(false));
        let o = owner_task(read, done.clone());
        for t in phase(range) {
            t.await.unwrap();
        }
        done.store(true, Ordering::Release);
        o.await.unwrap();
    }

    let counts: Vec<(i8, i64, i32, i64)> = sqlx::query_as(
        "SELECT c.peer_type, c.peer_id, c.unread, CAST((SELECT COUNT(*) FROM user_message m \
         WHERE m.app_id = c.app_id AND m.user_id = c.owner_id AND m.peer_type = c.peer_type \
         AND m.peer_id = c.peer_id AND m.seq > c.read_seq AND m.status = 1 \
         AND NOT (m.sender_type = 2 AND m.sender_id = c.owner_id)) AS SIGNED) \
         FROM conversation c WHERE c.app_id = ? AND c.owner_id = 1",
    )
    .bind(app.app_id)
    .fetch_all(&cl.pool)
    .await
    .unwrap();
    assert!(counts.len() > 1, "{counts:?}");
    for (t, p, unread, rows) in &counts {
        assert_eq!(
            i64::from(*unread),
            *rows,
            "conversation {t}/{p}: {counts:?}"
        );
    }
    let recalled: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_message WHERE app_id = ? AND user_id = 1 AND status = 2",
    )
    .bind(app.app_id)
    .fetch_one(&cl.pool)
    .await
    .unwrap();
    assert_eq!(recalled, SENDERS * (EACH / 3));
    let deleted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_message WHERE app_id = ? AND user_id = 1 AND status = 3",
    )
    .bind(app.app_id)
    .fetch_one(&cl.pool)
    .await
    .unwrap();
    assert!(deleted > 0, "the reader deleted some while they were sent");
}
