//! Building server envelopes: replies, pushes and notices, always within the 65 535-byte frame
//! limit (pages are cut short with `has_more` instead of producing an oversized frame).

use bytes::Bytes;
use gim_common::error::CODE_INTERNAL;
use gim_proto::connect::v1::{Message, MessageItem, Output, PackageType};
use gim_proto::frame::MAX_FRAME_LEN;
use prost::Message as _;

/// Room left in a frame for the envelope around a page: type, request id, code, data header.
const ENVELOPE_OVERHEAD: usize = 64;

pub fn output(ty: i32, request_id: i64, code: i32, message: String, data: Bytes) -> Output {
    Output {
        r#type: ty,
        request_id,
        code,
        message,
        data,
        retry_after_ms: 0,
    }
}

/// Encodes an envelope. Never returns more than [`MAX_FRAME_LEN`] bytes: an oversized reply
/// becomes an internal-error reply to the same request (and is logged), never a truncated frame.
pub fn encode(out: &Output) -> Bytes {
    let len = out.encoded_len();
    if len <= MAX_FRAME_LEN {
        return out.encode_to_vec().into();
    }
    tracing::error!(
        len,
        r#type = out.r#type,
        "reply exceeds the frame limit; replaced by an error"
    );
    output(
        out.r#type,
        out.request_id,
        CODE_INTERNAL,
        "reply too large for one frame".into(),
        Bytes::new(),
    )
    .encode_to_vec()
    .into()
}

/// A pushed message (type MESSAGE, request id 0). `Err(len)` when it cannot fit one frame.
pub fn push_frame(item: &MessageItem) -> Result<Bytes, usize> {
    let data: Bytes = Message {
        message: Some(item.clone()),
    }
    .encode_to_vec()
    .into();
    let out = output(PackageType::Message as i32, 0, 0, String::new(), data);
    let len = out.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(len);
    }
    Ok(out.encode_to_vec().into())
}

/// Cuts a page of messages so that its envelope fits one frame, setting `has_more` when
/// anything was cut. Returns false when not even the first message fits (the client could never
/// get past it by syncing again, so the caller reports an error instead).
pub fn fit_page(messages: &mut Vec<MessageItem>, has_more: &mut bool) -> bool {
    let budget = MAX_FRAME_LEN - ENVELOPE_OVERHEAD;
    let mut total = 2; // has_more
    for (i, m) in messages.iter().enumerate() {
        let len = m.encoded_len();
        total += 1 + prost::encoding::encoded_len_varint(len as u64) + len;
        if total > budget {
            if i == 0 {
                return false;
            }
            messages.truncate(i);
            *has_more = true;
            return true;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use gim_proto::connect::v1::{
        MessageBody, MessageContent, SyncOutput, Text, message_content::Content,
    };

    fn item(seq: i64, text_len: usize) -> MessageItem {
        MessageItem {
            seq,
            message_body: Some(MessageBody {
                message_type: 1,
                message_content: Some(MessageContent {
                    content: Some(Content::Text(Text {
                        text: "x".repeat(text_len),
                    })),
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pages_are_cut_to_fit_one_frame() {
        let mut msgs: Vec<_> = (1..=100).map(|s| item(s, 1000)).collect();
        let mut has_more = false;
        assert!(fit_page(&mut msgs, &mut has_more));
        assert!(has_more);
        assert!(msgs.len() < 100 && msgs.len() > 50, "{}", msgs.len());
        let page = SyncOutput {
            messages: msgs,
            has_more,
        };
        let out = output(
            PackageType::Sync as i32,
            i64::MAX,
            i32::MIN,
            String::new(),
            page.encode_to_vec().into(),
        );
        assert!(out.encoded_len() <= MAX_FRAME_LEN);
    }

    #[test]
    fn small_pages_are_untouched_and_a_giant_message_is_reported() {
        let mut msgs = vec![item(1, 10), item(2, 10)];
        let mut has_more = false;
        assert!(fit_page(&mut msgs, &mut has_more));
        assert_eq!((msgs.len(), has_more), (2, false));
        let mut giant = vec![item(1, 70_000)];
        assert!(!fit_page(&mut giant, &mut has_more));
        assert!(push_frame(&giant[0]).unwrap_err() > MAX_FRAME_LEN);
    }

    #[test]
    fn oversized_reply_becomes_an_error_reply() {
        let out = output(2, 9, 0, String::new(), vec![0u8; 70_000].into());
        let b = encode(&out);
        let back = Output::decode(b).unwrap();
        assert_eq!((back.request_id, back.code), (9, CODE_INTERNAL));
    }
}
