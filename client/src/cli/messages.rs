//! `gim send`, `gim listen`, `gim sync`.

use super::{AppArgs, DeviceArgs, ServerUrl, endpoints};
use anyhow::{Result, bail};
use clap::{ArgGroup, Args};
use gim_client::{
    Client, ClientApi, ClientOptions, Event, Session, SessionOptions, body_text, text_body,
};
use gim_proto::connect::v1::{
    MessageItem, MessageStatus, PackageType, ReceiverType, SendMessageInput, SyncInput, SyncOutput,
};
use gim_proto::logic::v1::SendMessageReq;
use prost::Message as _;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("to").required(true).args(["to_user", "to_group", "to_large_group"])))]
pub struct SendArgs {
    #[command(flatten)]
    app: AppArgs,
    /// Send as this user (with --device); without it the app's business server sends
    #[arg(long, requires = "device")]
    user: Option<i64>,
    /// The sending user's device id
    #[arg(long, requires = "user")]
    device: Option<i64>,
    /// Device token; minted from --key when absent
    #[arg(long, allow_hyphen_values = true)]
    token: Option<String>,
    /// Receiver: a user id
    #[arg(long)]
    to_user: Option<i64>,
    /// Receiver: a normal group id (the sender must be a member)
    #[arg(long)]
    to_group: Option<i64>,
    /// Receiver: a large group id
    #[arg(long)]
    to_large_group: Option<i64>,
    /// Not stored, no seq, pushed to online devices only (like a typing notice)
    #[arg(long)]
    transient: bool,
    /// Idempotency key: resending with the same value stores nothing new
    #[arg(long, default_value_t = 0)]
    request_id: i64,
    /// Send over the long connection of this conn node instead of gRPC
    #[arg(long)]
    endpoint: Option<String>,
    /// LogicClientExt address (device sends over gRPC)
    #[arg(long, default_value = "http://127.0.0.1:50001")]
    client_url: String,
    #[command(flatten)]
    server: ServerUrl,
    /// The message text
    text: String,
}

pub async fn send(a: SendArgs) -> Result<()> {
    let (receiver_type, receiver_id) = match (a.to_user, a.to_group, a.to_large_group) {
        (Some(u), _, _) => (ReceiverType::User, u),
        (_, Some(g), _) => (ReceiverType::NormalGroup, g),
        (_, _, Some(g)) => (ReceiverType::LargeGroup, g),
        _ => bail!("one of --to-user, --to-group, --to-large-group is needed"),
    };
    let request_id = if a.request_id != 0 {
        a.request_id
    } else {
        gim_common::now_ms()
    };
    let (seq, message_id) = match (a.user, a.device) {
        (Some(user), Some(device)) => {
            let creds = DeviceArgs {
                app: a.app.clone(),
                user,
                device,
                token: a.token.clone(),
            }
            .credentials()?;
            if let Some(ep) = &a.endpoint {
                let ep = endpoints(std::slice::from_ref(ep))?.remove(0);
                let (session, _pushes) =
                    Session::connect(&ep, &creds, &SessionOptions::default()).await?;
                let input = SendMessageInput {
                    receiver_type: receiver_type as i32,
                    receiver_id,
                    message_body: Some(text_body(&a.text)),
                    is_persist: !a.transient,
                    client_request_id: request_id,
                    ..Default::default()
                };
                let data = session.request(PackageType::SendMessage, &input).await?;
                let out = gim_proto::connect::v1::SendMessageOutput::decode(data)?;
                session.close();
                (out.seq, out.message_id)
            } else {
                let mut api = ClientApi::connect(&a.client_url, &creds)?;
                let r = api
                    .send_message(req(receiver_type, receiver_id, &a, request_id))
                    .await?;
                (r.seq, r.message_id)
            }
        }
        _ => {
            let mut api = a.app.server_api(&a.server)?;
            let r = api
                .send_message(req(receiver_type, receiver_id, &a, request_id))
                .await?;
            (r.seq, r.message_id)
        }
    };
    println!("seq={seq} message_id={message_id}");
    Ok(())
}

fn req(rt: ReceiverType, id: i64, a: &SendArgs, request_id: i64) -> SendMessageReq {
    SendMessageReq {
        receiver_type: rt as i32,
        receiver_id: id,
        message_body: Some(text_body(&a.text)),
        is_persist: !a.transient,
        client_request_id: request_id,
        ..Default::default()
    }
}

#[derive(Debug, Args)]
pub struct ListenArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Conn node to connect to (tcp://host:port or ws://host:port/ws); repeat for failover
    #[arg(long = "endpoint", required = true)]
    endpoints: Vec<String>,
    /// Last seq already seen; 0 = from the highest ack of the user's devices
    #[arg(long, default_value_t = 0)]
    from_seq: i64,
    /// Large groups to follow from their beginning (comma-separated ids)
    #[arg(long, value_delimiter = ',')]
    large_groups: Vec<i64>,
    /// One JSON object per line instead of text
    #[arg(long)]
    json: bool,
}

pub async fn listen(a: ListenArgs) -> Result<()> {
    let mut opts = ClientOptions::new(endpoints(&a.endpoints)?, a.device.credentials()?);
    opts.start_seq = a.from_seq;
    let (client, mut events) = Client::start(opts);
    for g in &a.large_groups {
        client.track_large_group(*g, 0).await;
    }
    loop {
        let ev = tokio::select! {
            _ = gim_common::shutdown::signal() => break,
            ev = events.recv() => ev,
        };
        match ev {
            Some(Event::Connected { endpoint }) => eprintln!("connected to {endpoint}"),
            Some(Event::Disconnected { reason }) => {
                eprintln!("disconnected: {reason}; reconnecting")
            }
            Some(Event::Message(m)) => print_message(&m, a.json),
            Some(Event::Kicked { reason }) => {
                bail!("signed out: the device signed in elsewhere ({reason})")
            }
            Some(Event::Failed(e)) => bail!("sign-in failed: {e}"),
            None => break,
        }
    }
    client.close().await;
    Ok(())
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Conn node to connect to (tcp://host:port or ws://host:port/ws)
    #[arg(long)]
    endpoint: String,
    /// Print messages after this seq; 0 = from the highest ack of the user's devices
    #[arg(long, default_value_t = 0)]
    from_seq: i64,
    #[arg(long)]
    json: bool,
}

pub async fn sync(a: SyncArgs) -> Result<()> {
    let ep = endpoints(std::slice::from_ref(&a.endpoint))?.remove(0);
    let (session, _pushes) =
        Session::connect(&ep, &a.device.credentials()?, &SessionOptions::default()).await?;
    let mut seq = a.from_seq;
    let mut count = 0;
    loop {
        let data = session
            .request(PackageType::Sync, &SyncInput { seq })
            .await?;
        let out = SyncOutput::decode(data)?;
        let last = out.messages.last().map(|m| m.seq);
        for m in &out.messages {
            print_message(m, a.json);
            count += 1;
        }
        match last {
            Some(l) if out.has_more && l > seq => seq = l,
            _ => break,
        }
    }
    session.close();
    eprintln!("{count} message(s)");
    Ok(())
}

pub(super) fn print_message(m: &MessageItem, json: bool) {
    let text = body_text(m.message_body.as_ref());
    let to = match m.receiver_type() {
        ReceiverType::User => format!("user {}", m.receiver_id),
        ReceiverType::NormalGroup => format!("group {}", m.receiver_id),
        ReceiverType::LargeGroup => format!("large group {}", m.receiver_id),
        ReceiverType::Unknown => format!("? {}", m.receiver_id),
    };
    if json {
        let v = serde_json::json!({
            "seq": m.seq,
            "message_id": m.message_id,
            "sender_type": m.sender_type().as_str_name(),
            "sender_id": m.sender_id,
            "sender_device_id": m.sender_device_id,
            "receiver_type": m.receiver_type().as_str_name(),
            "receiver_id": m.receiver_id,
            "send_time": m.send_time,
            "status": m.status().as_str_name(),
            "edit_version": m.edit_version,
            "text": text,
        });
        println!("{v}");
    } else {
        let body = text.map(|t| t.to_string()).unwrap_or_else(|| {
            format!(
                "<{} message>",
                m.message_body
                    .as_ref()
                    .map(|b| b.message_type().as_str_name())
                    .unwrap_or("empty")
            )
        });
        let mark = match (m.status(), m.edit_version) {
            (MessageStatus::Recall, _) => " (recalled)".to_string(),
            (MessageStatus::Deleted, _) => " (deleted)".to_string(),
            (_, 0) => String::new(),
            (_, v) => format!(" (edited {v})"),
        };
        println!("[seq {}] {} -> {}: {}{mark}", m.seq, m.sender_id, to, body);
    }
}
