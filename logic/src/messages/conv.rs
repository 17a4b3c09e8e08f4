//! The conversation rows of a store: each message copy in a user list updates its owner's
//! conversation (`conversation`, one row per owner and peer) in the same transaction as the copy,
//! in one multi-row upsert per store script, so an unread count is never out of step with the
//! messages it counts. Large groups (read diffusion) write nothing per member: their unread count
//! is computed on read (see `crate::conversations`).

use super::store::StoreJob;
use crate::db::INSERT_CHUNK;
use gim_common::UserId;
use gim_proto::connect::v1::{MessageBody, MessageType, ReceiverType, SenderType, message_content};

/// Characters of a text message kept as its conversation's preview.
pub const PREVIEW_CHARS: usize = 32;

/// (message type, preview) of a message body: text messages keep their first
/// [`PREVIEW_CHARS`] characters, others only their type.
pub fn preview(body: Option<&MessageBody>) -> (i8, String) {
    let Some(b) = body else {
        return (MessageType::Unknown as i8, String::new());
    };
    let text = match b.message_content.as_ref().and_then(|c| c.content.as_ref()) {
        Some(message_content::Content::Text(t)) => t.text.chars().take(PREVIEW_CHARS).collect(),
        _ => String::new(),
    };
    (b.message_type as i8, text)
}

/// The conversation of `owner`'s copy of a message: (peer type, peer id, sent by the owner).
/// 1:1: the other user (a business sender's identity for business messages); a group: the group.
pub fn conversation_of(j: &StoreJob, owner: UserId) -> Option<(i8, i64, bool)> {
    let item = &j.item;
    let own = item.sender_type == SenderType::User as i32 && item.sender_id == owner.0;
    match ReceiverType::try_from(item.receiver_type).ok()? {
        ReceiverType::User => {
            let peer = if own {
                j.receiver(owner)
            } else {
                item.sender_id
            };
            Some((ReceiverType::User as i8, peer, own))
        }
        ReceiverType::NormalGroup => Some((ReceiverType::NormalGroup as i8, item.receiver_id, own)),
        _ => None,
    }
}

const UPSERT: &str = "INSERT INTO conversation (app_id, owner_id, peer_type, peer_id, last_seq, \
     last_message_id, last_sender_type, last_sender_id, last_send_time, last_type, preview, unread, \
     version) VALUES ";

/// Assignments in this order: MariaDB evaluates them left to right and a later one sees the
/// columns set before it, so `last_seq` (compared by the others) is set last. A copy committed
/// after a later one of the same conversation (its seq allocated first) counts as unread unless
/// the owner already read past it, and leaves the newer last message in place.
const ON_DUP: &str = " ON DUPLICATE KEY UPDATE \
     unread = unread + IF(VALUES(last_seq) > read_seq, VALUES(unread), 0), \
     last_message_id = IF(VALUES(last_seq) > last_seq, VALUES(last_message_id), last_message_id), \
     last_sender_type = IF(VALUES(last_seq) > last_seq, VALUES(last_sender_type), last_sender_type), \
     last_sender_id = IF(VALUES(last_seq) > last_seq, VALUES(last_sender_id), last_sender_id), \
     last_send_time = IF(VALUES(last_seq) > last_seq, VALUES(last_send_time), last_send_time), \
     last_type = IF(VALUES(last_seq) > last_seq, VALUES(last_type), last_type), \
     preview = IF(VALUES(last_seq) > last_seq, VALUES(preview), preview), \
     deleted = IF(VALUES(last_seq) > last_seq, 0, deleted), \
     version = GREATEST(version, VALUES(version)), \
     last_seq = GREATEST(last_seq, VALUES(last_seq));";

/// Appends the conversation upserts of `jobs`' copies to a store script: one statement per
/// [`INSERT_CHUNK`] copies, rows in key order so that concurrent scripts (and mark-reads) lock
/// conversation rows in one order and cannot deadlock. Values are integer and hex literals only.
/// Returns the number of statements appended.
pub fn push_upserts(s: &mut String, jobs: &[&StoreJob]) -> usize {
    use std::fmt::Write as _;
    // (app, owner, peer type, peer, seq, job, own)
    let mut rows: Vec<(i64, i64, i8, i64, i64, usize, bool)> = Vec::new();
    for (k, j) in jobs.iter().enumerate() {
        for (u, seq) in &j.rows {
            if let Some((t, peer, own)) = conversation_of(j, *u) {
                rows.push((j.app.0, u.0, t, peer, seq.get(), k, own));
            }
        }
    }
    rows.sort_unstable_by_key(|r| (r.0, r.1, r.2, r.3, r.4));
    let mut statements = 0;
    for chunk in rows.chunks(INSERT_CHUNK) {
        s.push_str(UPSERT);
        for (i, &(app, owner, t, peer, seq, k, own)) in chunk.iter().enumerate() {
            let j = jobs[k];
            let item = &j.item;
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "({app},{owner},{t},{peer},{seq},{},{},{},{},{},",
                item.message_id, item.sender_type, item.sender_id, item.send_time, j.msg_type
            );
            super::store::push_hex(s, j.preview.as_bytes());
            let _ = write!(s, ",{},{seq})", u8::from(!own));
        }
        s.push_str(ON_DUP);
        statements += 1;
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use gim_common::{AppId, Seq};
    use gim_proto::connect::v1::MessageItem;

    fn job(sender: i64, receiver_type: ReceiverType, receiver: i64, owners: &[i64]) -> StoreJob {
        StoreJob {
            app: AppId(1),
            item: MessageItem {
                sender_type: SenderType::User as i32,
                sender_id: sender,
                receiver_type: receiver_type as i32,
                receiver_id: receiver,
                message_id: 9,
                ..Default::default()
            },
            mentions: String::new(),
            body: vec![],
            rows: owners.iter().map(|&o| (UserId(o), Seq(o * 10))).collect(),
            req_key: None,
            sender_seq: Seq(0),
            receiver_is_owner: false,
            msg_type: 1,
            preview: "hi".into(),
        }
    }

    #[test]
    fn each_owner_sees_the_other_side_and_own_copies_are_not_unread() {
        let j = job(1, ReceiverType::User, 2, &[2, 1]);
        assert_eq!(conversation_of(&j, UserId(2)), Some((1, 1, false)));
        assert_eq!(conversation_of(&j, UserId(1)), Some((1, 2, true)));
        let g = job(1, ReceiverType::NormalGroup, 77, &[1, 2]);
        assert_eq!(conversation_of(&g, UserId(2)), Some((2, 77, false)));
        assert_eq!(conversation_of(&g, UserId(1)), Some((2, 77, true)));
    }

    #[test]
    fn upsert_rows_are_in_key_order() {
        let (a, b) = (
            job(5, ReceiverType::User, 3, &[3, 5]),
            job(1, ReceiverType::User, 2, &[2, 1]),
        );
        let mut s = String::new();
        assert_eq!(push_upserts(&mut s, &[&a, &b]), 1);
        let owners: Vec<usize> = ["(1,1,", "(1,2,", "(1,3,", "(1,5,"]
            .iter()
            .map(|p| s.find(p).expect(p))
            .collect();
        assert!(owners.windows(2).all(|w| w[0] < w[1]), "{s}");
        assert!(s.contains("(1,2,1,1,20,9,2,1,0,1,X'6869',1,20)"), "{s}");
        assert!(s.contains("(1,1,1,2,10,9,2,1,0,1,X'6869',0,10)"), "{s}");
    }
}
