//! `gim-logic`: serve (default), apply migrations, or create an app.

use clap::{Parser, Subcommand};
use gim_common::config::{self, LogicConfig};
use gim_common::shutdown::Shutdown;
use gim_common::{AppId, DeviceId, UserId};
use std::path::PathBuf;
use std::process::ExitCode;

// Many small short-lived allocations per request (protobuf, HTTP/2, SQL rows) on every worker
// thread: mimalloc's thread-local free lists cost far less than glibc's arenas here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "gim-logic", version, about = "gim's messaging core")]
struct Cli {
    /// TOML config file (every key can also be set as GIM_<SECTION>__<KEY>).
    #[arg(long, short, global = true, env = "GIM_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gRPC and admin servers (the default).
    Serve,
    /// Apply the schema migrations to mysql.url (re-running is a no-op).
    Migrate,
    /// Manage apps (tenants).
    App {
        #[command(subcommand)]
        cmd: AppCmd,
    },
    /// Delete stored messages (and their sends' idempotency records) older than a retention
    /// period, of one app or all; users, groups, acks and seq marks stay. Safe beside traffic.
    Purge {
        /// Delete what was written more than this many days ago (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        older_than_days: u32,
        /// Only this app (default: every app).
        #[arg(long)]
        app: Option<i64>,
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum AppCmd {
    /// Create an app; prints its id, its private key (shown once, never stored) and a sample
    /// server token.
    Create {
        #[arg(long)]
        name: String,
    },
    /// Suspend an app's clients: sign-ins, client calls and sends get 1021 and live connections
    /// close on every conn node. `--lift` ends it.
    Suspend {
        #[arg(long)]
        app: i64,
        #[arg(long)]
        lift: bool,
    },
    /// Suspend one user of an app: sign-ins, client calls and sends get 1022 and its live
    /// connections close on every conn node. `--lift` ends it.
    SuspendUser {
        #[arg(long)]
        app: i64,
        #[arg(long)]
        user: i64,
        #[arg(long)]
        lift: bool,
    },
    /// An app's signing keys: tokens name theirs by `kid`.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Set the app's token rules: a maximum lifetime (0 = none) and whether tokens must carry
    /// iat and jti (tokens of older minters do not).
    TokenPolicy {
        #[arg(long)]
        app: i64,
        #[arg(long, default_value_t = 0)]
        max_token_ttl: i64,
        #[arg(long)]
        require_token_ids: bool,
    },
    /// Refuse every token of a user (or of one device) issued until now, and close its live
    /// connections on every conn node.
    ForceLogout {
        #[arg(long)]
        app: i64,
        #[arg(long)]
        user: i64,
        #[arg(long)]
        device: Option<i64>,
    },
    /// Revoke one token by its jti (`--user 0`: a server token).
    RevokeToken {
        #[arg(long)]
        app: i64,
        #[arg(long)]
        user: i64,
        #[arg(long)]
        jti: String,
        /// The token's exp (Unix seconds): the revocation is dropped after it. 0 = kept.
        #[arg(long, default_value_t = 0)]
        expires_at: i64,
        /// Also close this device's live connections.
        #[arg(long)]
        device: Option<i64>,
    },
    /// Show the app's rate limits and quotas, or change the ones given (0 = the server's
    /// default, -1 = no limit); every logic process applies them within seconds.
    Limits {
        #[arg(long)]
        app: i64,
        /// Messages one user may send per second, sustained.
        #[arg(long, allow_hyphen_values = true)]
        send_per_sec: Option<i64>,
        /// Sends one user may make at once above the sustained rate.
        #[arg(long, allow_hyphen_values = true)]
        send_burst: Option<i64>,
    },
    /// Write every row of one app (users, devices, groups, messages, ...) as JSON lines, from
    /// one consistent snapshot; binary values are hex. Row counts go to stderr.
    Export {
        #[arg(long)]
        app: i64,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Make a key pair and add its public key as `kid`; prints the private key (shown once).
    Add {
        #[arg(long)]
        app: i64,
        #[arg(long)]
        kid: String,
    },
    /// List the app's keys (kid "" is the original one).
    List {
        #[arg(long)]
        app: i64,
    },
    /// Retire a key: tokens naming it are refused from now on.
    Retire {
        #[arg(long)]
        app: i64,
        #[arg(long)]
        kid: String,
    },
}

fn main() -> ExitCode {
    // Two rustls providers would panic at first TLS use; pick ring before anything builds one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let cfg: LogicConfig = match config::load_from_process(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    gim_common::telemetry::init(&cfg.log);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd.unwrap_or(Cmd::Serve), cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cmd: Cmd, cfg: LogicConfig) -> anyhow::Result<()> {
    match cmd {
        Cmd::Serve => {
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signal();
            let handle = gim_logic::start(cfg, shutdown).await?;
            handle.wait().await?;
            tracing::info!("gim-logic stopped");
        }
        Cmd::Migrate => {
            let pool = gim_logic::mysql_pool(&cfg.mysql)?;
            gim_logic::migrate(&pool).await?;
            println!("migrations applied");
        }
        Cmd::App {
            cmd: AppCmd::Create { name },
        } => {
            let pool = gim_logic::mysql_pool(&cfg.mysql)?;
            let (app, key) = gim_logic::create_app(&pool, &name)
                .await
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            let now = gim_common::token::now_secs();
            println!("app_id: {app}");
            println!("private_key: {}", key.private_b64());
            println!(
                "server_token (valid 24 h): {}",
                key.server_token(app.0, now, 24 * 3600)
            );
            println!("keep the private key secret: gim stores only the public key");
        }
        Cmd::App {
            cmd: AppCmd::Suspend { app, lift },
        } => {
            let state = gim_logic::offline_state(&cfg).await?;
            let closed = state
                .policies
                .set_app_suspended(AppId(app), !lift)
                .await
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            let what = if lift { "lifted" } else { "suspended" };
            println!("app {app} {what}; {closed} connections closed");
        }
        Cmd::App {
            cmd: AppCmd::SuspendUser { app, user, lift },
        } => {
            let state = gim_logic::offline_state(&cfg).await?;
            let closed = state
                .policies
                .set_user_suspended(AppId(app), UserId(user), !lift)
                .await
                .map_err(|e| anyhow::anyhow!(e.chain()))?;
            let what = if lift { "lifted" } else { "suspended" };
            println!("user {user} of app {app} {what}; {closed} connections closed");
        }
        Cmd::App {
            cmd: AppCmd::Export { app, out },
        } => {
            let pool = gim_logic::mysql_pool(&cfg.mysql)?;
            let app = gim_common::AppId(app);
            let counts = match out {
                Some(path) => {
                    // Written beside, renamed when complete: a failed export leaves no file
                    // that looks like a whole one.
                    let partial = path.with_extension("partial");
                    let mut f = std::io::BufWriter::new(std::fs::File::create(&partial)?);
                    match gim_logic::ops::export::export_app(&pool, app, &mut f).await {
                        Ok(c) => {
                            drop(f);
                            std::fs::rename(&partial, &path)?;
                            c
                        }
                        Err(e) => {
                            drop(f);
                            let _ = std::fs::remove_file(&partial);
                            return Err(e);
                        }
                    }
                }
                None => {
                    let mut f = std::io::BufWriter::new(std::io::stdout().lock());
                    gim_logic::ops::export::export_app(&pool, app, &mut f).await?
                }
            };
            for (table, n) in counts {
                eprintln!("{table}: {n} rows");
            }
        }
        Cmd::Purge {
            older_than_days,
            app,
            dry_run,
        } => {
            let pool = gim_logic::mysql_pool(&cfg.mysql)?;
            let app = app.map(gim_common::AppId);
            let done = gim_logic::ops::purge::purge(&pool, app, older_than_days, dry_run).await?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            for (table, n) in done {
                println!("{table}: {verb} {n} rows");
            }
        }
        Cmd::App { cmd } => app_cmd(cmd, &cfg).await?,
    }
    Ok(())
}

/// The `app` commands that change a running cluster's rules: through the same domain code as
/// the API, so caches are invalidated and connections closed.
async fn app_cmd(cmd: AppCmd, cfg: &LogicConfig) -> anyhow::Result<()> {
    let state = gim_logic::offline_state(cfg).await?;
    let p = &state.policies;
    let fail = |e: gim_logic::Error| anyhow::anyhow!(e.chain());
    match cmd {
        AppCmd::Key {
            cmd: KeyCmd::Add { app, kid },
        } => {
            let key = gim_common::token::AppKey::generate();
            p.add_key(AppId(app), &kid, &key.public_key())
                .await
                .map_err(fail)?;
            let key = key.with_kid(&kid);
            let now = gim_common::token::now_secs();
            println!("kid: {kid}");
            println!("private_key: {}", key.private_b64());
            println!(
                "server_token (valid 24 h): {}",
                key.server_token(app, now, 24 * 3600)
            );
            println!("sign with this key and kid {kid:?} in the token header");
        }
        AppCmd::Key {
            cmd: KeyCmd::List { app },
        } => {
            for k in p.keys(AppId(app)).await.map_err(fail)? {
                let kid = if k.kid.is_empty() { "\"\"" } else { &k.kid };
                let state = if k.retired { "retired" } else { "active" };
                let public = gim_common::token::PublicKey::from_bytes(&k.public_key)
                    .map(|p| p.to_b64())
                    .unwrap_or_default();
                println!("{kid}\t{state}\t{public}\t{}", k.created_ms);
            }
        }
        AppCmd::Key {
            cmd: KeyCmd::Retire { app, kid },
        } => {
            p.retire_key(AppId(app), &kid).await.map_err(fail)?;
            println!("key {kid:?} of app {app} retired");
        }
        AppCmd::TokenPolicy {
            app,
            max_token_ttl,
            require_token_ids,
        } => {
            p.set_token_policy(AppId(app), max_token_ttl, require_token_ids)
                .await
                .map_err(fail)?;
            println!(
                "app {app}: max token lifetime {max_token_ttl} s (0 = none), iat and jti required: {require_token_ids}"
            );
        }
        AppCmd::ForceLogout { app, user, device } => {
            let (after, closed) = p
                .force_logout(AppId(app), UserId(user), device.map(DeviceId))
                .await
                .map_err(fail)?;
            println!("tokens issued at or before {after} refused; {closed} connections closed");
        }
        AppCmd::RevokeToken {
            app,
            user,
            jti,
            expires_at,
            device,
        } => {
            let closed = p
                .revoke_token(
                    AppId(app),
                    UserId(user),
                    &jti,
                    expires_at,
                    device.map(DeviceId),
                )
                .await
                .map_err(fail)?;
            println!("token revoked; {closed} connections closed");
        }
        AppCmd::Limits {
            app,
            send_per_sec,
            send_burst,
        } => {
            let app = AppId(app);
            // Unknown apps are refused here: the row would otherwise outlive nothing.
            state.apps.app(app).await.map_err(fail)?;
            let mut l = state.limits.app(app).await.map_err(fail)?;
            if send_per_sec.is_some() || send_burst.is_some() {
                let mut row = l.row.to_pb();
                row.send_per_sec = send_per_sec.unwrap_or(row.send_per_sec);
                row.send_burst = send_burst.unwrap_or(row.send_burst);
                l = state.limits.set(app, &row).await.map_err(fail)?;
            }
            let (set, now) = (l.row, l.effective());
            println!("limit\tset\teffective (set 0 = default, -1 = no limit)");
            println!("send_per_sec\t{}\t{}", set.send_per_sec, now.send_per_sec);
            println!("send_burst\t{}\t{}", set.send_burst, now.send_burst);
        }
        AppCmd::Create { .. }
        | AppCmd::Export { .. }
        | AppCmd::Suspend { .. }
        | AppCmd::SuspendUser { .. } => {
            unreachable!("handled in run")
        }
    }
    Ok(())
}
