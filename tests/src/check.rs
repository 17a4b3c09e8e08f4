//! The strict no-loss check of the fault runs.

use gim_client::body_text;
use gim_proto::connect::v1::MessageItem;
use std::collections::HashMap;

/// The text of a text message ("" otherwise).
pub fn text_of(m: &MessageItem) -> String {
    body_text(m.message_body.as_ref()).unwrap_or("").to_string()
}

/// `received` (what one recipient's application saw of its user list) must contain every text in
/// `expected` exactly once, and the whole list must be in strictly increasing seq order.
pub fn assert_exactly_once_in_order(who: &str, received: &[MessageItem], expected: &[String]) {
    let mut last = 0;
    for m in received.iter().filter(|m| m.seq > 0) {
        assert!(
            m.seq > last,
            "{who}: seq {} after {last}: not strictly increasing",
            m.seq
        );
        last = m.seq;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for m in received {
        *counts.entry(text_of(m)).or_default() += 1;
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|t| !counts.contains_key(*t))
        .collect();
    let dup: Vec<(&String, usize)> = expected
        .iter()
        .filter_map(|t| counts.get(t).filter(|c| **c > 1).map(|c| (t, *c)))
        .collect();
    assert!(
        missing.is_empty() && dup.is_empty(),
        "{who}: {} of {} messages missing (first: {:?}), duplicated: {:?}",
        missing.len(),
        expected.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        dup.iter().take(5).collect::<Vec<_>>()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use gim_client::text_body;

    fn msg(seq: i64, text: &str) -> MessageItem {
        MessageItem {
            seq,
            message_body: Some(text_body(text)),
            ..Default::default()
        }
    }

    #[test]
    fn passes_when_complete_and_ordered() {
        let got = vec![msg(1, "a"), msg(2, "b"), msg(5, "c")];
        assert_exactly_once_in_order("x", &got, &["a".into(), "c".into()]);
    }

    #[test]
    #[should_panic(expected = "missing")]
    fn catches_a_loss() {
        assert_exactly_once_in_order("x", &[msg(1, "a")], &["a".into(), "b".into()]);
    }

    #[test]
    #[should_panic(expected = "duplicated")]
    fn catches_a_duplicate() {
        assert_exactly_once_in_order("x", &[msg(1, "a"), msg(2, "a")], &["a".into()]);
    }

    #[test]
    #[should_panic(expected = "not strictly increasing")]
    fn catches_disorder() {
        assert_exactly_once_in_order("x", &[msg(2, "a"), msg(1, "b")], &[]);
    }
}
