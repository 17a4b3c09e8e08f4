//! gim's long-connection protocol from the client side: envelopes, sign-in, sync with paging, and
//! the run-tagged message bodies the scenarios use to find their own messages again.

use crate::wire::Wire;
use bytes::Bytes;
use gim_proto::connect::v1::{
    self as pb, Input, MessageItem, Output, PackageType, SignInInput, SyncInput, SyncOutput,
};
use prost::Message as _;

pub fn input(ty: PackageType, request_id: i64, data: impl prost::Message) -> Bytes {
    Input {
        r#type: ty as i32,
        request_id,
        data: data.encode_to_vec().into(),
    }
    .encode_to_vec()
    .into()
}

pub fn output(payload: &[u8]) -> anyhow::Result<Output> {
    Ok(Output::decode(payload)?)
}

/// The body of every message a scenario sends: `"<run tag>:<message index>:<scheduled unix µs>"`.
/// The tag lets the correctness check pick this run's messages out of lists that may hold older
/// ones; the time gives the latency at the receiver without any clock but the host's.
pub fn body(tag: u32, idx: u64, sched_us: u64) -> pb::MessageBody {
    pb::MessageBody {
        message_type: pb::MessageType::Text as i32,
        message_content: Some(pb::MessageContent {
            content: Some(pb::message_content::Content::Text(pb::Text {
                text: format!("{tag}:{idx}:{sched_us}"),
            })),
        }),
    }
}

/// `(message index, scheduled unix µs)` of a message of run `tag`; `None` for anything else.
pub fn parse_body(tag: u32, item: &MessageItem) -> Option<(u64, u64)> {
    let Some(pb::message_content::Content::Text(t)) = item
        .message_body
        .as_ref()?
        .message_content
        .as_ref()?
        .content
        .as_ref()
    else {
        return None;
    };
    parse_text(tag, &t.text)
}

/// `(message index, scheduled unix µs)` of a body text written by [`body`] for run `tag` (the
/// peers' scenarios send the same text); `None` for anything else.
pub fn parse_text(tag: u32, text: &str) -> Option<(u64, u64)> {
    let mut parts = text.splitn(3, ':');
    if parts.next()?.parse::<u32>().ok()? != tag {
        return None;
    }
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A fresh run tag: distinct across runs on one database, so checks never see older runs' messages.
pub fn run_tag() -> u32 {
    (crate::net::unix_us() / 1_000_000 % 1_000_000_000) as u32 ^ rand::random::<u16>() as u32
}

/// A client request id unique per (sender, run): the idempotency key must never repeat a previous
/// run's, or logic would answer with the old message.
pub fn client_request_id(tag: u32, idx: u64) -> i64 {
    (((tag as u64) << 32) | (idx & 0xffff_ffff)) as i64 & i64::MAX
}

#[derive(Debug, Clone)]
pub struct Identity {
    pub app_id: i64,
    pub user_id: i64,
    pub device_id: i64,
    pub token: String,
}

/// What a frame that is not the awaited reply turned out to be.
pub enum Other {
    Push(MessageItem),
    Reply(Output),
}

/// Sends `payload` (an Input with `request_id`) and reads frames until the Output echoing
/// `request_id` arrives; every other frame goes to `other` (pushes that race the reply).
pub async fn request(
    wire: &mut Wire,
    payload: Bytes,
    request_id: i64,
    mut other: impl FnMut(Other),
) -> anyhow::Result<Output> {
    wire.send(payload).await?;
    loop {
        let Some(frame) = wire.recv().await? else {
            anyhow::bail!("connection closed while waiting for reply {request_id}");
        };
        let out = output(&frame)?;
        if out.request_id == request_id && out.r#type != PackageType::Message as i32 {
            return Ok(out);
        }
        match classify(out) {
            Ok(o) => other(o),
            Err(e) => return Err(e),
        }
    }
}

/// Splits server frames into pushes and (unmatched) replies.
pub fn classify(out: Output) -> anyhow::Result<Other> {
    if out.r#type == PackageType::Message as i32 && out.request_id == 0 {
        let m = pb::Message::decode(out.data.as_ref())?;
        return m
            .message
            .map(Other::Push)
            .ok_or_else(|| anyhow::anyhow!("push without a message"));
    }
    if out.r#type == PackageType::Kicked as i32 || out.r#type == PackageType::Reconnect as i32 {
        anyhow::bail!("server closed the session (type {})", out.r#type);
    }
    Ok(Other::Reply(out))
}

pub fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.code == 0,
        "{what} failed: code {} ({})",
        out.code,
        out.message
    );
    Ok(())
}

pub async fn sign_in(
    wire: &mut Wire,
    id: &Identity,
    request_id: i64,
    other: impl FnMut(Other),
) -> anyhow::Result<()> {
    let payload = input(
        PackageType::SignIn,
        request_id,
        SignInInput {
            app_id: id.app_id,
            device_id: id.device_id,
            user_id: id.user_id,
            token: id.token.clone(),
        },
    );
    let out = request(wire, payload, request_id, other).await?;
    check(&out, "sign-in")
}

/// Syncs from `seq` until `has_more` is false; returns every item in order.
pub async fn sync_all(
    wire: &mut Wire,
    mut seq: i64,
    next_request_id: &mut i64,
    mut other: impl FnMut(Other),
) -> anyhow::Result<Vec<MessageItem>> {
    let mut items = Vec::new();
    loop {
        *next_request_id += 1;
        let rid = *next_request_id;
        let out = request(
            wire,
            input(PackageType::Sync, rid, SyncInput { seq }),
            rid,
            &mut other,
        )
        .await?;
        check(&out, "sync")?;
        let page = SyncOutput::decode(out.data.as_ref())?;
        let last = page.messages.last().map(|m| m.seq);
        items.extend(page.messages);
        match last {
            Some(s) if page.has_more => {
                anyhow::ensure!(s > seq, "sync did not advance past seq {seq}");
                seq = s;
            }
            _ => return Ok(items),
        }
    }
}

/// Acknowledges everything up to `seq` (so the next run's `sync(0)` starts after it).
pub fn ack(seq: i64) -> Bytes {
    input(
        PackageType::Message,
        0,
        pb::MessageAck {
            device_ack: seq,
            receive_time: gim_common::now_ms(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_and_filters_other_runs() {
        let item = MessageItem {
            message_body: Some(body(42, 7, 123_456)),
            ..Default::default()
        };
        assert_eq!(parse_body(42, &item), Some((7, 123_456)));
        assert_eq!(parse_body(43, &item), None);
    }

    #[test]
    fn request_ids_are_positive_and_distinct_per_run() {
        assert!(client_request_id(u32::MAX, 5) > 0);
        assert_ne!(client_request_id(1, 5), client_request_id(2, 5));
    }
}
