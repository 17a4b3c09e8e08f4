//! `gim history`, `gim recall`, `gim edit`, `gim delete-message`, `gim recall-window`: one
//! conversation's history and changes to stored messages.

use super::messages::print_message;
use super::{AppArgs, DeviceArgs, ServerUrl};
use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args};
use gim_client::{ClientApi, text_body};
use gim_proto::connect::v1::{MessageChangeOutput, ReceiverType};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("with").required(true).args(["user_peer", "group", "large_group"])))]
pub struct HistoryArgs {
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
    /// Only messages with a seq below this (0: from the newest)
    #[arg(long, default_value_t = 0)]
    before: i64,
    /// How many messages at most (pages of up to 100 are fetched)
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// LogicClientExt address
    #[arg(long, default_value = "http://127.0.0.1:50001")]
    client_url: String,
    /// One JSON object per line instead of text
    #[arg(long)]
    json: bool,
}

pub async fn history(a: HistoryArgs) -> Result<()> {
    let (t, id) = match (a.user_peer, a.group, a.large_group) {
        (Some(u), _, _) => (ReceiverType::User, u),
        (_, Some(g), _) => (ReceiverType::NormalGroup, g),
        (_, _, Some(g)) => (ReceiverType::LargeGroup, g),
        _ => bail!("one of --with-user, --group, --large-group is needed"),
    };
    let mut api = ClientApi::connect(&a.client_url, &a.device.credentials()?)?;
    let (mut before, mut left) = (a.before, a.limit);
    while left > 0 {
        let page = left.min(100) as i32;
        let out = api.get_history(t, id, before, page).await?;
        for m in &out.messages {
            print_message(m, a.json);
        }
        left -= out.messages.len();
        match out.messages.last() {
            Some(m) if out.has_more => before = m.seq,
            _ => break,
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Recall,
    Edit,
    Delete,
}

#[derive(Debug, Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    app: AppArgs,
    /// The message id (the same in every copy)
    #[arg(long)]
    message_id: i64,
    /// Edit: the new text
    #[arg(long)]
    text: Option<String>,
    /// As this user (with --device)
    #[arg(long, required_unless_present = "as_server")]
    user: Option<i64>,
    /// The user's device (from `gim device register`)
    #[arg(long, required_unless_present = "as_server")]
    device: Option<i64>,
    /// Device token; minted from --key when absent
    #[arg(long, hide_env_values = true, allow_hyphen_values = true)]
    token: Option<String>,
    /// As the app's business server (recall and edit any message, no window)
    #[arg(long, conflicts_with_all = ["user", "device", "token"])]
    as_server: bool,
    /// LogicClientExt address
    #[arg(long, default_value = "http://127.0.0.1:50001")]
    client_url: String,
    #[command(flatten)]
    server: ServerUrl,
}

pub async fn change(a: ChangeArgs, kind: Kind) -> Result<()> {
    let body = match (kind, &a.text) {
        (Kind::Edit, Some(t)) => Some(text_body(t.clone())),
        (Kind::Edit, None) => bail!("--text is needed to edit"),
        (_, Some(_)) => bail!("--text is for edits only"),
        _ => None,
    };
    let out: MessageChangeOutput = if a.as_server {
        let mut api = a.app.server_api(&a.server)?;
        match (kind, body) {
            (Kind::Recall, _) => api.recall_message(a.message_id).await?,
            (Kind::Edit, Some(b)) => api.edit_message(a.message_id, b).await?,
            _ => bail!("a business server recalls and edits; delete-for-me is a user's"),
        }
    } else {
        let device = DeviceArgs {
            app: a.app.clone(),
            user: a.user.context("--user is needed")?,
            device: a.device.context("--device is needed")?,
            token: a.token.clone(),
        };
        let mut api = ClientApi::connect(&a.client_url, &device.credentials()?)?;
        match (kind, body) {
            (Kind::Recall, _) => api.recall_message(a.message_id).await?,
            (Kind::Edit, Some(b)) => api.edit_message(a.message_id, b).await?,
            (Kind::Delete, _) => api.delete_message(a.message_id).await?,
            (Kind::Edit, None) => unreachable!("checked above"),
        }
    };
    println!(
        "message {}: {} list(s) changed, edit version {}",
        out.message_id, out.lists, out.edit_version
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct RecallWindowArgs {
    #[command(flatten)]
    app: AppArgs,
    #[command(flatten)]
    server: ServerUrl,
    /// Seconds after sending (0 to 604800; 0: users cannot recall or edit)
    #[arg(long)]
    secs: i64,
}

pub async fn recall_window(a: RecallWindowArgs) -> Result<()> {
    let mut api = a.app.server_api(&a.server)?;
    api.set_recall_window(a.secs).await?;
    println!("recall window {} s", a.secs);
    Ok(())
}
