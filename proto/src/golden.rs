//! Golden bytes: each expected vector is written out by hand from the field numbers in SPEC §2, so a
//! renumbered field or enum value breaks wire compatibility with the original gim's clients here.

use crate::connect::v1::*;
use bytes::Bytes;
use prost::Message as _;

#[test]
fn sign_in_input_fields_1_to_4() {
    let m = SignInInput {
        app_id: 1,
        device_id: 2,
        user_id: 3,
        token: "t".into(),
    };
    // app_id=1 varint, device_id=2 varint, user_id=3 varint, token=4 length-delimited.
    assert_eq!(
        m.encode_to_vec(),
        [0x08, 1, 0x10, 2, 0x18, 3, 0x22, 1, b't']
    );
}

#[test]
fn file_uses_fields_12_to_15() {
    let m = File {
        id: 5,
        name: "a".into(),
        size: 7,
        url: "u".into(),
    };
    // (12<<3)|0 = 0x60, (13<<3)|2 = 0x6A, (14<<3)|0 = 0x70, (15<<3)|2 = 0x7A.
    assert_eq!(
        m.encode_to_vec(),
        [0x60, 5, 0x6A, 1, b'a', 0x70, 7, 0x7A, 1, b'u']
    );
}

#[test]
fn message_content_file_is_oneof_field_5() {
    let m = MessageContent {
        content: Some(message_content::Content::File(File {
            id: 1,
            ..Default::default()
        })),
    };
    assert_eq!(m.encode_to_vec(), [0x2A, 2, 0x60, 1]);
    let m = MessageContent {
        content: Some(message_content::Content::Custom(Custom {
            data: "c".into(),
        })),
    };
    assert_eq!(m.encode_to_vec(), [0x42, 3, 0x0A, 1, b'c']);
}

#[test]
fn sync_output_messages_is_field_3() {
    let m = SyncOutput {
        messages: vec![MessageItem {
            seq: 1,
            ..Default::default()
        }],
        has_more: true,
    };
    // messages=3 holding MessageItem{seq(9)=1}; has_more=4.
    assert_eq!(m.encode_to_vec(), [0x1A, 2, 0x48, 1, 0x20, 1]);
}

#[test]
fn output_envelope() {
    let m = Output {
        r#type: PackageType::Message as i32,
        request_id: 0,
        code: 1002,
        message: "x".into(),
        data: Bytes::from_static(&[1]),
        retry_after_ms: 0,
    };
    // 1002 = 0b111_1101010 -> varint 0xEA 0x07.
    assert_eq!(
        m.encode_to_vec(),
        [0x08, 4, 0x18, 0xEA, 0x07, 0x22, 1, b'x', 0x2A, 1, 1]
    );
}

#[test]
fn input_envelope_and_message_ack() {
    let ack = MessageAck {
        device_ack: 300,
        receive_time: 1,
    };
    // device_ack=2: 300 -> 0xAC 0x02; receive_time=3.
    assert_eq!(ack.encode_to_vec(), [0x10, 0xAC, 0x02, 0x18, 1]);
    let input = Input {
        r#type: PackageType::Heartbeat as i32,
        request_id: 9,
        data: Bytes::new(),
    };
    assert_eq!(input.encode_to_vec(), [0x08, 3, 0x10, 9]);
}

#[test]
fn message_item_enums_and_mentions() {
    let m = MessageItem {
        sender_type: SenderType::Business as i32,
        receiver_type: ReceiverType::LargeGroup as i32,
        to_user_ids: vec![1, 2],
        status: MessageStatus::Recall as i32,
        ..Default::default()
    };
    // sender_type=2 (3), receiver_type=5 (3), to_user_ids=7 packed [1,2], status=11 (2).
    assert_eq!(
        m.encode_to_vec(),
        [0x10, 3, 0x28, 3, 0x3A, 2, 1, 2, 0x58, 2]
    );
}

#[test]
fn decodes_what_an_original_client_sends() {
    // An original client's SIGN_IN envelope wrapping SignInInput{app_id 1, device_id 2, user_id 3, token "t"}.
    let wire = [
        0x08, 1, 0x10, 5, 0x1A, 9, 0x08, 1, 0x10, 2, 0x18, 3, 0x22, 1, b't',
    ];
    let input = Input::decode(&wire[..]).unwrap();
    assert_eq!(input.r#type(), PackageType::SignIn);
    assert_eq!(input.request_id, 5);
    let s = SignInInput::decode(input.data).unwrap();
    assert_eq!(
        (s.app_id, s.device_id, s.user_id, s.token.as_str()),
        (1, 2, 3, "t")
    );
}
