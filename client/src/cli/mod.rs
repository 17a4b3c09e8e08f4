//! Command-line definitions and dispatch.

mod cluster;
mod conversations;
mod demo;
mod history;
mod messages;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use gim_client::{Credentials, Endpoint, ServerApi};
use gim_common::token::{AppKey, now_secs};
use gim_proto::logic::v1::{DeviceType, Group, GroupType, User};

// Environment names avoid the `GIM_` prefix on purpose: gim-logic and gim-conn read every `GIM_*`
// variable as config and refuse unknown keys, so a shell that exported these would break them.
const ENV_APP_ID: &str = "GIMCLI_APP_ID";
const ENV_APP_KEY: &str = "GIMCLI_APP_KEY";
const ENV_ADMIN_URL: &str = "GIMCLI_ADMIN_URL";
const ENV_ADMIN_TOKEN: &str = "GIMCLI_ADMIN_TOKEN";

#[derive(Debug, Parser)]
#[command(name = "gim", version, about = "Command-line client for the gim IM server", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Register apps (tenants)
    #[command(subcommand)]
    App(AppCmd),
    /// Mint device or server tokens with an app's private key
    #[command(subcommand)]
    Token(TokenCmd),
    /// Create or update users (as the app's business server)
    #[command(subcommand)]
    User(UserCmd),
    /// Register devices (a device id is needed to mint a device token)
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Send a text message, as a user's device or as the business server
    Send(messages::SendArgs),
    /// Sign in over the long connection and print messages as they arrive
    Listen(messages::ListenArgs),
    /// Print a user's messages after a seq and exit
    Sync(messages::SyncArgs),
    /// List a user's conversations with their unread counts
    Conversations(conversations::ConversationsArgs),
    /// Mark a conversation read (sends read receipts)
    Read(conversations::ReadArgs),
    /// Print one conversation's messages, newest first
    History(history::HistoryArgs),
    /// Recall a message (the sender within the app's window, a group admin; --as-server: any)
    Recall(history::ChangeArgs),
    /// Replace a message's text (who may: as recall)
    Edit(history::ChangeArgs),
    /// Hide a message in this user's own list only (delete-for-me)
    DeleteMessage(history::ChangeArgs),
    /// Set how long after sending users may recall or edit their messages (business server)
    RecallWindow(history::RecallWindowArgs),
    /// Create groups and manage their members
    #[command(subcommand)]
    Group(GroupCmd),
    /// Inspect the running cluster
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The web chat demo
    #[command(subcommand)]
    Demo(DemoCmd),
}

#[derive(Debug, Subcommand)]
enum AppCmd {
    /// Create an app through logic's admin API: prints its id and private key (made here and
    /// shown once; logic receives only the public key)
    Create {
        /// App name (unique)
        #[arg(long)]
        name: String,
        /// logic's admin listener (`logic.admin_listen`)
        #[arg(long, env = ENV_ADMIN_URL, default_value = "http://127.0.0.1:9100")]
        admin_url: String,
        /// logic's admin token (`logic.admin_token`)
        #[arg(long, env = ENV_ADMIN_TOKEN, hide_env_values = true, allow_hyphen_values = true)]
        admin_token: String,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// A device token for a user's device
    Device {
        #[command(flatten)]
        app: AppArgs,
        /// User id
        #[arg(long)]
        user: i64,
        /// Device id (from `gim device register`)
        #[arg(long)]
        device: i64,
        /// Lifetime in seconds
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
    /// A business-server token for LogicServerExt
    Server {
        #[command(flatten)]
        app: AppArgs,
        /// Lifetime in seconds
        #[arg(long, default_value_t = 86_400)]
        ttl: i64,
    },
}

#[derive(Debug, Subcommand)]
enum UserCmd {
    /// Create or update users by id (idempotent)
    Import {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        /// Comma-separated user ids
        #[arg(long, value_delimiter = ',', required = true)]
        users: Vec<i64>,
        /// Nickname prefix; each user gets "<prefix><id>"
        #[arg(long, default_value = "user")]
        nickname: String,
    },
    /// Suspend a user (sign-ins, calls and sends get 1022; live connections close); --lift ends it
    Suspend {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        #[arg(long)]
        user: i64,
        #[arg(long)]
        lift: bool,
    },
    /// Force a logout: tokens of the user (or one device) issued until now are refused and live
    /// connections close
    Logout {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        #[arg(long)]
        user: i64,
        /// Only this device
        #[arg(long, default_value_t = 0)]
        device: i64,
    },
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// Register a device of the app; prints its id. It binds to the first user that signs in with it
    Register {
        #[arg(long, env = ENV_APP_ID)]
        app_id: i64,
        /// android, ios, windows, macos or web
        #[arg(long, default_value = "web")]
        kind: String,
        /// LogicClientExt address
        #[arg(long, default_value = "http://127.0.0.1:50001")]
        client_url: String,
        /// How many devices to register (one id per line)
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

#[derive(Debug, Subcommand)]
enum GroupCmd {
    /// Create a group; prints its id
    Create {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        /// Group name
        #[arg(long)]
        name: String,
        /// Owner user id (becomes an admin member)
        #[arg(long)]
        owner: i64,
        /// Comma-separated member ids besides the owner
        #[arg(long, value_delimiter = ',')]
        members: Vec<i64>,
        /// A large group (read diffusion) instead of a normal one
        #[arg(long)]
        large: bool,
    },
    /// Add members
    Add {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        /// Group id
        #[arg(long)]
        group: i64,
        /// Comma-separated user ids
        #[arg(long, value_delimiter = ',', required = true)]
        users: Vec<i64>,
    },
    /// Remove a member
    Remove {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        /// Group id
        #[arg(long)]
        group: i64,
        /// The member to remove
        #[arg(long)]
        user: i64,
    },
    /// List a group's members
    Members {
        #[command(flatten)]
        app: AppArgs,
        #[command(flatten)]
        server: ServerUrl,
        /// Group id
        #[arg(long)]
        group: i64,
    },
    /// List the groups a user belongs to
    List {
        #[command(flatten)]
        device: DeviceArgs,
        /// LogicClientExt address
        #[arg(long, default_value = "http://127.0.0.1:50001")]
        client_url: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCmd {
    /// Live conn nodes and their connection counts, from the Redis registry
    Status {
        #[arg(long, default_value = "redis://127.0.0.1:6379/")]
        redis_url: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DemoCmd {
    /// Serve the web chat demo and mint demo tokens for it (local development only)
    Serve(demo::ServeArgs),
}

/// Which app, and its private key for minting tokens.
#[derive(Debug, Args, Clone)]
pub struct AppArgs {
    /// App id
    #[arg(long, env = ENV_APP_ID)]
    pub app_id: i64,
    /// The app's private key (base64url, as printed by `app create`)
    // base64url has '-' in its alphabet: one key in 64 starts with it, and without this clap
    // reads `--key -u...` as an unknown flag `-u` (seen in CI: run-local.sh's demo app).
    #[arg(long, env = ENV_APP_KEY, hide_env_values = true, allow_hyphen_values = true)]
    pub key: Option<String>,
}

impl AppArgs {
    pub fn app_key(&self) -> Result<AppKey> {
        let key = self
            .key
            .as_deref()
            .context("an app key is needed: pass --key or set GIMCLI_APP_KEY")?;
        AppKey::from_private_b64(key).context("--key is not a valid app private key")
    }

    pub fn server_token(&self) -> Result<String> {
        Ok(self.app_key()?.server_token(self.app_id, now_secs(), 3600))
    }

    pub fn server_api(&self, url: &ServerUrl) -> Result<ServerApi> {
        Ok(ServerApi::connect(
            &url.server_url,
            self.app_id,
            &self.server_token()?,
        )?)
    }
}

#[derive(Debug, Args, Clone)]
pub struct ServerUrl {
    /// LogicServerExt address
    #[arg(long, default_value = "http://127.0.0.1:50002")]
    pub server_url: String,
}

/// A user's device: a token, or the app key to mint one.
#[derive(Debug, Args, Clone)]
pub struct DeviceArgs {
    #[command(flatten)]
    pub app: AppArgs,
    /// User id
    #[arg(long)]
    pub user: i64,
    /// Device id (from `gim device register`)
    #[arg(long)]
    pub device: i64,
    /// Device token; minted from --key when absent
    #[arg(long, hide_env_values = true, allow_hyphen_values = true)]
    pub token: Option<String>,
}

impl DeviceArgs {
    pub fn credentials(&self) -> Result<Credentials> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => self
                .app
                .app_key()
                .context("pass --token, or --key to mint one")?
                .device_token(self.app.app_id, self.user, self.device, now_secs(), 86_400),
        };
        Ok(Credentials {
            app_id: self.app.app_id,
            user_id: self.user,
            device_id: self.device,
            token,
        })
    }
}

/// Parses `--endpoint` values.
pub fn endpoints(raw: &[String]) -> Result<Vec<Endpoint>> {
    if raw.is_empty() {
        bail!("at least one --endpoint is needed");
    }
    raw.iter()
        .map(|s| s.parse::<Endpoint>().map_err(anyhow::Error::from))
        .collect()
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::App(AppCmd::Create {
            name,
            admin_url,
            admin_token,
        }) => {
            let (app, key) = gim_client::admin::create_app(&admin_url, &admin_token, &name)
                .await
                .context("cannot create the app")?;
            println!("app_id: {app}");
            println!("private_key: {}", key.private_b64());
            eprintln!("keep the private key secret: gim stores only the public key");
            Ok(())
        }
        Command::Token(TokenCmd::Device {
            app,
            user,
            device,
            ttl,
        }) => {
            let key = app.app_key()?;
            println!(
                "{}",
                key.device_token(app.app_id, user, device, now_secs(), ttl)
            );
            Ok(())
        }
        Command::Token(TokenCmd::Server { app, ttl }) => {
            println!(
                "{}",
                app.app_key()?.server_token(app.app_id, now_secs(), ttl)
            );
            Ok(())
        }
        Command::User(UserCmd::Import {
            app,
            server,
            users,
            nickname,
        }) => {
            let mut api = app.server_api(&server)?;
            let list = users
                .iter()
                .map(|&id| User {
                    user_id: id,
                    nickname: format!("{nickname}{id}"),
                    ..Default::default()
                })
                .collect();
            let r = api.import_users(list).await?;
            eprintln!("{} created, {} updated", r.created, r.updated);
            Ok(())
        }
        Command::User(UserCmd::Suspend {
            app,
            server,
            user,
            lift,
        }) => {
            let closed = app
                .server_api(&server)?
                .set_user_suspended(user, !lift)
                .await?;
            eprintln!("{closed} connections closed");
            Ok(())
        }
        Command::User(UserCmd::Logout {
            app,
            server,
            user,
            device,
        }) => {
            let r = app.server_api(&server)?.force_logout(user, device).await?;
            eprintln!(
                "tokens issued at or before {} refused; {} connections closed",
                r.tokens_after, r.closed
            );
            Ok(())
        }
        Command::Device(DeviceCmd::Register {
            app_id,
            kind,
            client_url,
            count,
        }) => {
            let kind = match kind.as_str() {
                "android" => DeviceType::Android,
                "ios" => DeviceType::Ios,
                "windows" => DeviceType::Windows,
                "macos" => DeviceType::Macos,
                "web" => DeviceType::Web,
                other => bail!("--kind {other:?}: expected android, ios, windows, macos or web"),
            };
            let channel = gim_client::api::channel(&client_url)?;
            for _ in 0..count {
                let id = gim_client::ClientApi::register_device(
                    channel.clone(),
                    app_id,
                    kind,
                    "gim cli",
                )
                .await?;
                println!("{id}");
            }
            Ok(())
        }
        Command::Send(a) => messages::send(a).await,
        Command::Listen(a) => messages::listen(a).await,
        Command::Sync(a) => messages::sync(a).await,
        Command::Conversations(a) => conversations::list(a).await,
        Command::Read(a) => conversations::read(a).await,
        Command::History(a) => history::history(a).await,
        Command::Recall(a) => history::change(a, history::Kind::Recall).await,
        Command::Edit(a) => history::change(a, history::Kind::Edit).await,
        Command::DeleteMessage(a) => history::change(a, history::Kind::Delete).await,
        Command::RecallWindow(a) => history::recall_window(a).await,
        Command::Group(g) => group(g).await,
        Command::Cluster(ClusterCmd::Status { redis_url, json }) => {
            cluster::status(&redis_url, json).await
        }
        Command::Demo(DemoCmd::Serve(a)) => demo::serve(a).await,
    }
}

async fn group(cmd: GroupCmd) -> Result<()> {
    match cmd {
        GroupCmd::Create {
            app,
            server,
            name,
            owner,
            members,
            large,
        } => {
            let mut api = app.server_api(&server)?;
            let group = Group {
                name: name.clone(),
                r#type: if large {
                    GroupType::Large
                } else {
                    GroupType::Normal
                } as i32,
                ..Default::default()
            };
            let id = api.create_group(group, owner, members).await?;
            eprintln!("created group {name:?}");
            println!("{id}");
        }
        GroupCmd::Add {
            app,
            server,
            group,
            users,
        } => {
            let already = app
                .server_api(&server)?
                .add_group_members(group, users)
                .await?;
            if !already.is_empty() {
                eprintln!("already members: {already:?}");
            }
        }
        GroupCmd::Remove {
            app,
            server,
            group,
            user,
        } => {
            app.server_api(&server)?
                .delete_group_member(group, user)
                .await?;
        }
        GroupCmd::Members { app, server, group } => {
            let members = app.server_api(&server)?.get_group_members(group).await?;
            println!("{:<12} {:<8} NICKNAME", "USER", "ROLE");
            for m in members {
                let role = match m.member_type {
                    1 => "admin",
                    2 => "member",
                    _ => "?",
                };
                println!("{:<12} {:<8} {}", m.user_id, role, m.nickname);
            }
        }
        GroupCmd::List { device, client_url } => {
            let mut api = gim_client::ClientApi::connect(&client_url, &device.credentials()?)?;
            let groups = api.get_user_groups().await?;
            println!("{:<20} {:<7} {:>7} NAME", "GROUP", "TYPE", "MEMBERS");
            for g in groups {
                let kind = if g.r#type == GroupType::Large as i32 {
                    "large"
                } else {
                    "normal"
                };
                println!(
                    "{:<20} {:<7} {:>7} {}",
                    g.group_id, kind, g.user_num, g.name
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_may_start_with_a_hyphen() {
        let cli = Cli::try_parse_from([
            "gim", "user", "import", "--app-id", "7", "--key", "-uAbc_d", "--users", "1,2",
        ])
        .expect("a key starting with '-' is a value");
        let Command::User(UserCmd::Import { app, .. }) = cli.cmd else {
            panic!("parsed as {cli:?}");
        };
        assert_eq!(app.key.as_deref(), Some("-uAbc_d"));
    }

    #[test]
    fn history_and_message_changes_parse() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let dev = [
            "--app-id", "7", "--key", "k", "--user", "1", "--device", "2",
        ];
        let run = |args: &[&str]| Cli::try_parse_from(["gim"].iter().chain(args)).map(|c| c.cmd);
        let h = run(&[&["history", "--group", "9", "--limit", "50"][..], &dev].concat());
        assert!(matches!(h, Ok(Command::History(_))), "{h:?}");
        let h = run(&[&["history"][..], &dev].concat());
        assert!(h.is_err(), "a conversation is needed");
        for sub in ["recall", "delete-message"] {
            let c = run(&[&[sub, "--message-id", "5"][..], &dev].concat());
            assert!(c.is_ok(), "{sub}: {c:?}");
        }
        let e = run(&[&["edit", "--message-id", "5", "--text", "t"][..], &dev].concat());
        assert!(matches!(e, Ok(Command::Edit(_))), "{e:?}");
        let s = run(&[
            "recall",
            "--app-id",
            "7",
            "--message-id",
            "5",
            "--as-server",
        ]);
        assert!(matches!(s, Ok(Command::Recall(_))), "{s:?}");
        let s = run(&["recall", "--app-id", "7", "--message-id", "5"]);
        assert!(s.is_err(), "a user's device, or --as-server");
        let w = run(&["recall-window", "--app-id", "7", "--secs", "30"]);
        assert!(matches!(w, Ok(Command::RecallWindow(_))), "{w:?}");
    }
}
