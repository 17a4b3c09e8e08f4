//! `gim conversations`, `gim read`: the conversation list and read positions (LogicClientExt).

use super::DeviceArgs;
use anyhow::{Result, bail};
use clap::{ArgGroup, Args};
use gim_client::ClientApi;
use gim_proto::connect::v1::{Conversation, ReceiverType};

#[derive(Debug, Args)]
pub struct ConversationsArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// Only conversations changed after this version (0: all)
    #[arg(long, default_value_t = 0)]
    since_version: i64,
    /// LogicClientExt address
    #[arg(long, default_value = "http://127.0.0.1:50001")]
    client_url: String,
    /// One JSON object per line instead of text
    #[arg(long)]
    json: bool,
}

pub async fn list(a: ConversationsArgs) -> Result<()> {
    let mut api = ClientApi::connect(&a.client_url, &a.device.credentials()?)?;
    let mut since = a.since_version;
    let mut first = true;
    loop {
        let out = api.get_conversations(since, 0).await?;
        if first {
            for c in &out.large_groups {
                print_conversation(c, a.json);
            }
            first = false;
        }
        for c in &out.conversations {
            print_conversation(c, a.json);
        }
        since = out.version;
        if !out.has_more {
            eprintln!("unread total {}, version {}", out.unread_total, out.version);
            return Ok(());
        }
    }
}

fn print_conversation(c: &Conversation, json: bool) {
    if json {
        let v = serde_json::json!({
            "peer_type": c.peer_type().as_str_name(),
            "peer_id": c.peer_id,
            "last_seq": c.last_seq,
            "last_message_id": c.last_message_id,
            "last_sender_id": c.last_sender_id,
            "preview": c.preview,
            "unread": c.unread,
            "read_seq": c.read_seq,
            "pinned": c.pinned,
            "muted": c.muted,
            "deleted": c.deleted,
            "version": c.version,
        });
        println!("{v}");
    } else {
        let flags = [
            (c.pinned, " pinned"),
            (c.muted, " muted"),
            (c.deleted, " deleted"),
        ]
        .iter()
        .filter(|f| f.0)
        .map(|f| f.1)
        .collect::<String>();
        println!(
            "{} {}: {} unread (read {} of {}){}: {}",
            c.peer_type().as_str_name(),
            c.peer_id,
            c.unread,
            c.read_seq,
            c.last_seq,
            flags,
            c.preview
        );
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("with").required(true).args(["user_peer", "group", "large_group"])))]
pub struct ReadArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// The conversation with this user
    #[arg(long = "with-user")]
    user_peer: Option<i64>,
    /// The conversation of this normal group
    #[arg(long)]
    group: Option<i64>,
    /// The conversation of this large group
    #[arg(long)]
    large_group: Option<i64>,
    /// Read up to this seq; 0 = the conversation's last seq
    #[arg(long, default_value_t = 0)]
    seq: i64,
    /// LogicClientExt address
    #[arg(long, default_value = "http://127.0.0.1:50001")]
    client_url: String,
}

/// Marks a conversation read (up to its last message by default).
pub async fn read(a: ReadArgs) -> Result<()> {
    let (t, id) = match (a.user_peer, a.group, a.large_group) {
        (Some(u), _, _) => (ReceiverType::User, u),
        (_, Some(g), _) => (ReceiverType::NormalGroup, g),
        (_, _, Some(g)) => (ReceiverType::LargeGroup, g),
        _ => bail!("one of --with-user, --group, --large-group is needed"),
    };
    let mut api = ClientApi::connect(&a.client_url, &a.device.credentials()?)?;
    let seq = if a.seq > 0 {
        a.seq
    } else {
        let mut since = 0;
        loop {
            let out = api.get_conversations(since, 0).await?;
            if let Some(c) = out
                .conversations
                .iter()
                .chain(&out.large_groups)
                .find(|c| c.peer_type == t as i32 && c.peer_id == id)
            {
                break c.last_seq;
            }
            if !out.has_more {
                bail!("no such conversation");
            }
            since = out.version;
        }
    };
    let c = api.mark_read(t, id, seq).await?;
    print_conversation(&c, false);
    Ok(())
}
