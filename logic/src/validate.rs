//! Input validation shared by the three services: every failure is 1006 naming the field.

use crate::error::{Error, Result};
use gim_proto::connect::v1::{MessageBody, MessageType, message_content::Content};
use gim_proto::logic::v1::User;
use prost::Message as _;

/// Column sizes of the schema (characters).
pub const NAME_MAX: usize = 64;
pub const URL_MAX: usize = 512;
pub const EXTRA_MAX: usize = 2048;
pub const INTRO_MAX: usize = 1024;
/// Most user ids one call may name (members of a create/add, users of an import or push).
pub const IDS_MAX: usize = 1000;

pub fn text(field: &str, v: &str, max: usize, required: bool) -> Result<()> {
    if required && v.trim().is_empty() {
        return Err(Error::bad_request(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(Error::bad_request(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}

pub fn id(field: &str, v: i64) -> Result<()> {
    if v <= 0 {
        return Err(Error::bad_request(field, "must be a positive id"));
    }
    Ok(())
}

/// Positive, at most `max`, no duplicates (duplicates would collide on primary keys or double a
/// recipient's copy).
pub fn ids(field: &str, v: &[i64], max: usize) -> Result<()> {
    if v.len() > max {
        return Err(Error::bad_request(field, format!("more than {max} ids")));
    }
    let mut seen = std::collections::HashSet::with_capacity(v.len());
    for &x in v {
        if x <= 0 {
            return Err(Error::bad_request(
                field,
                format!("{x} is not a positive id"),
            ));
        }
        if !seen.insert(x) {
            return Err(Error::bad_request(field, format!("{x} appears twice")));
        }
    }
    Ok(())
}

pub fn user(prefix: &str, u: &User) -> Result<()> {
    text(&format!("{prefix}.nickname"), &u.nickname, NAME_MAX, true)?;
    if !(0..=2).contains(&u.sex) {
        return Err(Error::bad_request(
            &format!("{prefix}.sex"),
            "must be 0 (unknown), 1 or 2",
        ));
    }
    text(
        &format!("{prefix}.avatar_url"),
        &u.avatar_url,
        URL_MAX,
        false,
    )?;
    text(&format!("{prefix}.extra"), &u.extra, EXTRA_MAX, false)
}

/// A message body: known type, content present and of that type, encoded size within `max_bytes`.
/// `user_sender`: command codes below 1000 are reserved for gim itself.
pub fn body(b: Option<&MessageBody>, max_bytes: usize, user_sender: bool) -> Result<()> {
    let b = b.ok_or_else(|| Error::bad_request("message_body", "is required"))?;
    let ty = MessageType::try_from(b.message_type)
        .ok()
        .filter(|t| *t != MessageType::Unknown)
        .ok_or_else(|| {
            Error::bad_request(
                "message_body.message_type",
                format!("unknown value {}", b.message_type),
            )
        })?;
    let content = b
        .message_content
        .as_ref()
        .and_then(|c| c.content.as_ref())
        .ok_or_else(|| Error::bad_request("message_body.message_content", "is required"))?;
    let matches = matches!(
        (ty, content),
        (MessageType::Text, Content::Text(_))
            | (MessageType::Face, Content::Face(_))
            | (MessageType::Voice, Content::Voice(_))
            | (MessageType::Image, Content::Image(_))
            | (MessageType::File, Content::File(_))
            | (MessageType::Location, Content::Location(_))
            | (MessageType::Command, Content::Command(_))
            | (MessageType::Custom, Content::Custom(_))
    );
    if !matches {
        return Err(Error::bad_request(
            "message_body.message_content",
            format!("does not match message_type {}", ty.as_str_name()),
        ));
    }
    if let Content::Command(c) = content
        && user_sender
        && c.code < 1000
    {
        return Err(Error::bad_request(
            "message_body.message_content.command.code",
            "codes below 1000 are reserved for gim",
        ));
    }
    let len = b.encoded_len();
    if len > max_bytes {
        return Err(Error::bad_request(
            "message_body",
            format!("{len} bytes encoded, more than {max_bytes}"),
        ));
    }
    Ok(())
}

/// @-mentions as stored: comma-separated, within the column.
pub fn mentions(v: &[i64], max: usize) -> Result<String> {
    ids("to_user_ids", v, max)?;
    let s = v
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",");
    if s.len() > EXTRA_MAX {
        return Err(Error::bad_request("to_user_ids", "too long"));
    }
    Ok(s)
}

pub fn parse_mentions(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|x| x.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gim_common::GimCode;
    use gim_proto::connect::v1::{MessageContent, Text};

    fn msg(field: Result<()>) -> String {
        match field {
            Err(Error::Gim(e)) => {
                assert_eq!(e.code, GimCode::BadRequest);
                e.message
            }
            other => panic!("expected 1006, got {other:?}"),
        }
    }

    fn text_body(t: &str) -> MessageBody {
        MessageBody {
            message_type: MessageType::Text as i32,
            message_content: Some(MessageContent {
                content: Some(Content::Text(Text { text: t.into() })),
            }),
        }
    }

    #[test]
    fn bodies_are_checked_field_by_field() {
        body(Some(&text_body("hi")), 100, true).unwrap();
        assert!(msg(body(None, 100, true)).starts_with("message_body:"));
        let mut b = text_body("hi");
        b.message_type = 99;
        assert!(msg(body(Some(&b), 100, true)).contains("message_type"));
        b.message_type = MessageType::Image as i32;
        assert!(msg(body(Some(&b), 100, true)).contains("message_content"));
        assert!(msg(body(Some(&text_body(&"x".repeat(200))), 100, true)).contains("bytes"));
    }

    #[test]
    fn ids_and_mentions() {
        assert!(msg(ids("member_ids", &[1, -2], 10)).starts_with("member_ids"));
        assert!(msg(ids("member_ids", &[1, 1], 10)).contains("twice"));
        assert!(msg(ids("member_ids", &[1, 2, 3], 2)).contains("more than"));
        assert_eq!(mentions(&[3, 4], 5).unwrap(), "3,4");
        assert_eq!(parse_mentions("3,4"), vec![3, 4]);
        assert_eq!(parse_mentions(""), Vec::<i64>::new());
    }
}
