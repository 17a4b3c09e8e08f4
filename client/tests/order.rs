//! The resilient client against a scripted conn node: seq order when two stores of one user's
//! list commit out of order (seq 3 pushed and synced while seq 2 is still being written).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gim_client::{Client, ClientOptions, Credentials, Endpoint, Event};
use gim_proto::connect::v1::{
    Input, Message as Push, MessageAck, MessageItem, Output, PackageType, SyncInput, SyncOutput,
};
use gim_proto::frame::FrameCodec;
use prost::Message as _;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);

/// What the client sent, as the fake node saw it.
#[derive(Debug)]
enum Seen {
    Sync(i64),
    Ack(i64),
}

/// One client connection to the fake node: replies to sign-in and heartbeats, answers syncs
/// from the messages `stored` so far, reports syncs and acks.
struct Node {
    io: Framed<TcpStream, FrameCodec>,
    stored: Vec<i64>,
    seen: mpsc::UnboundedSender<Seen>,
}

fn item(seq: i64) -> MessageItem {
    MessageItem {
        seq,
        message_id: seq * 100,
        ..Default::default()
    }
}

fn out(ty: PackageType, request_id: i64, data: Vec<u8>) -> Bytes {
    Output {
        r#type: ty as i32,
        request_id,
        code: 0,
        message: String::new(),
        data: data.into(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

impl Node {
    async fn push(&mut self, seq: i64) {
        let p = Push {
            message: Some(item(seq)),
        };
        let frame = out(PackageType::Message, 0, p.encode_to_vec());
        self.io.send(frame).await.unwrap();
    }

    /// Serves requests until `until` is done (the test's next step).
    async fn serve_one(&mut self) {
        let frame = self.io.next().await.expect("client connected").unwrap();
        let input = Input::decode(frame).unwrap();
        let ty = PackageType::try_from(input.r#type).unwrap();
        let reply = match ty {
            PackageType::SignIn | PackageType::Heartbeat => Vec::new(),
            PackageType::Sync => {
                let from = SyncInput::decode(input.data).unwrap().seq;
                let _ = self.seen.send(Seen::Sync(from));
                let mut messages: Vec<MessageItem> = self
                    .stored
                    .iter()
                    .filter(|s| **s > from)
                    .map(|s| item(*s))
                    .collect();
                messages.sort_by_key(|m| m.seq);
                SyncOutput {
                    messages,
                    has_more: false,
                }
                .encode_to_vec()
            }
            PackageType::Message => {
                let ack = MessageAck::decode(input.data).unwrap();
                let _ = self.seen.send(Seen::Ack(ack.device_ack));
                return;
            }
            other => panic!("unexpected {other:?}"),
        };
        let frame = out(ty, input.request_id, reply);
        self.io.send(frame).await.unwrap();
    }

    /// Serves until the client sends a sync; returns its `from`.
    async fn until_sync(&mut self, seen: &mut mpsc::UnboundedReceiver<Seen>) -> i64 {
        loop {
            tokio::time::timeout(WAIT, self.serve_one()).await.unwrap();
            while let Ok(s) = seen.try_recv() {
                if let Seen::Sync(from) = s {
                    return from;
                }
            }
        }
    }
}

async fn next_message(events: &mut mpsc::Receiver<Event>) -> i64 {
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await.unwrap() {
            Some(Event::Message(m)) => return m.seq,
            Some(Event::Connected { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn start(
    gap_wait: Duration,
) -> (
    Client,
    mpsc::Receiver<Event>,
    Node,
    mpsc::UnboundedReceiver<Seen>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let creds = Credentials {
        app_id: 1,
        user_id: 1,
        device_id: 1,
        token: "t".into(),
    };
    let mut opts = ClientOptions::new(vec![Endpoint::Tcp(addr.to_string())], creds);
    opts.start_seq = 1;
    opts.gap_wait = gap_wait;
    let (client, events) = Client::start(opts);
    let (stream, _) = listener.accept().await.unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let node = Node {
        io: Framed::new(stream, FrameCodec::default()),
        stored: vec![1],
        seen: tx,
    };
    (client, events, node, seen)
}

#[tokio::test]
async fn a_seq_committed_after_a_higher_one_is_delivered_in_order_and_never_acked_past() {
    let (client, mut events, mut node, mut seen) = start(Duration::from_secs(30)).await;
    assert_eq!(
        node.until_sync(&mut seen).await,
        1,
        "catch-up from start_seq"
    );
    // Seq 3 is stored and pushed while seq 2 is still being written.
    node.stored.push(3);
    node.push(3).await;
    assert_eq!(node.until_sync(&mut seen).await, 1, "the gap makes it sync");
    // The sync answered only 3: nothing may be delivered or acked past the gap yet.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, Event::Message(_)),
            "3 held while 2 is missing: {e:?}"
        );
    }
    while let Ok(s) = seen.try_recv() {
        assert!(
            !matches!(s, Seen::Ack(a) if a >= 2),
            "acked past the gap: {s:?}"
        );
    }
    // Seq 2 commits and is pushed: both arrive, in order, and the ack covers both.
    node.stored.push(2);
    node.push(2).await;
    let serve = async {
        loop {
            node.serve_one().await;
        }
    };
    let got = async {
        (
            next_message(&mut events).await,
            next_message(&mut events).await,
        )
    };
    let (a, b) = tokio::select! {
        _ = serve => unreachable!(),
        r = got => r,
    };
    assert_eq!((a, b), (2, 3));
    assert_eq!(client.last_seq(), 3);
}

#[tokio::test]
async fn a_seq_never_stored_is_skipped_after_the_gap_wait() {
    let (client, mut events, mut node, mut seen) = start(Duration::from_millis(600)).await;
    assert_eq!(node.until_sync(&mut seen).await, 1);
    node.stored.push(3);
    node.push(3).await;
    let serve = async {
        loop {
            node.serve_one().await;
        }
    };
    let got = async { next_message(&mut events).await };
    let seq = tokio::select! {
        _ = serve => unreachable!(),
        r = got => r,
    };
    assert_eq!(seq, 3, "delivered once the wait is over");
    assert_eq!(client.last_seq(), 3);
}
