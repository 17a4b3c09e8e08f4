//! `gim-bench`: see the crate docs (`src/lib.rs`) and `scripts/bench.sh`.

use clap::{Args, Parser, Subcommand};
use gim_bench::fixture::{self, Fixture, SetupSpec};
use gim_bench::scenario::{self, LargeGroup, NormalGroups, OneToOne, Plan};
use gim_bench::wire::Transport;
use gim_bench::worker::{self, StormSpec, SyncExpect};
use gim_bench::{baseline, cpu, gim, net, peer, report};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Open-loop load generator for gim, with broadcast baselines")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Common {
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Number of 127.0.0.x source addresses to bind, starting at 127.0.0.10; 0 (default): no bind,
    /// the kernel picks the source at connect time (see `net`).
    #[arg(long, default_value_t = 0)]
    sources: u8,
    /// Processes whose CPU time the run measures, `label:pid,...` (a label may repeat: summed);
    /// the result's `cpu` gives seconds per label and per unit of work (see `cpu`).
    #[arg(long, default_value = "")]
    cpu: String,
}

impl Common {
    fn cpu(&self) -> anyhow::Result<Vec<(String, u32)>> {
        cpu::parse(&self.cpu)
    }
}

#[derive(Args, Clone)]
struct Gim {
    /// Fixture written by `setup`.
    #[arg(long)]
    fixture: PathBuf,
    /// Conn nodes' client listeners (TCP or WebSocket ports, matching --transport), comma-separated.
    #[arg(long)]
    targets: String,
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    #[command(flatten)]
    common: Common,
}

impl Gim {
    fn spread(&self) -> anyhow::Result<net::Spread> {
        Ok(net::Spread {
            sources: net::sources(10, self.common.sources),
            targets: net::parse_targets(&self.targets)?,
        })
    }
}

#[derive(Args, Clone)]
struct Load {
    /// Offered load, messages (or syncs) per second, on a fixed schedule.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
}

#[derive(Args, Clone)]
struct StormArgs {
    #[arg(long)]
    conns: usize,
    /// First user index of the fixture to use.
    #[arg(long, default_value_t = 0)]
    first_user: usize,
    /// Offered connects per second over the whole storm.
    #[arg(long)]
    rate: f64,
    /// Keep the connections this long once all are up (heartbeating), then close.
    #[arg(long, default_value_t = 0.0)]
    hold_secs: f64,
    #[arg(long, default_value_t = 30.0)]
    heartbeat_secs: f64,
}

#[derive(Subcommand)]
enum Cmd {
    /// Creates users, devices and groups in an existing app and writes the fixture file.
    Setup {
        /// LogicServerExt URL.
        #[arg(long)]
        server_url: String,
        /// LogicClientExt URL (RegisterDevice).
        #[arg(long)]
        client_url: String,
        #[arg(long)]
        app_id: i64,
        /// The app's private key as printed by `gim-logic app create`.
        #[arg(long, env = "GIM_BENCH_APP_KEY")]
        key: String,
        #[arg(long)]
        users: usize,
        #[arg(long, default_value_t = 0)]
        normal_groups: usize,
        #[arg(long, default_value_t = 200)]
        normal_size: usize,
        #[arg(long, default_value_t = 0)]
        large_members: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long)]
        out: PathBuf,
    },
    /// B3: `pairs` pairs of users send each other persisted 1:1 messages.
    B3 {
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        gim: Gim,
    },
    /// B4: messages to the fixture's normal groups, half of each group online.
    B4 {
        #[arg(long)]
        groups: Option<usize>,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        gim: Gim,
    },
    /// B5: messages to the fixture's large group, every member online.
    B5 {
        /// Members to connect (at most the fixture's large group).
        #[arg(long)]
        members: Option<usize>,
        #[arg(long, default_value_t = 50)]
        check_sample: usize,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        gim: Gim,
    },
    /// B6a: `users` clients with `per_user` stored messages each sync them at `rate` syncs/s.
    B6Sync {
        #[arg(long, default_value_t = 200)]
        users: usize,
        #[arg(long, default_value_t = 100)]
        per_user: usize,
        /// LogicServerExt URL (PushToUsers stores the messages).
        #[arg(long)]
        server_url: String,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        gim: Gim,
    },
    /// B1 / B2 / B6b: a connection storm over several worker processes.
    Storm {
        #[command(flatten)]
        storm: StormArgs,
        #[arg(long, default_value_t = 1)]
        procs: usize,
        /// Conn node pids, for RSS per connection.
        #[arg(long, value_delimiter = ',')]
        conn_pids: Vec<u32>,
        /// B6b: store this many messages per user first (needs --server-url); every client syncs
        /// them after signing in and the latency runs to "synced".
        #[arg(long, default_value_t = 0)]
        sync_per_user: usize,
        #[arg(long)]
        server_url: Option<String>,
        /// Name of the scenario in the result.
        #[arg(long, default_value = "storm")]
        name: String,
        #[command(flatten)]
        gim: Gim,
    },
    /// One worker process of a storm (started by `storm`).
    #[command(hide = true)]
    Worker {
        #[command(flatten)]
        storm: StormArgs,
        #[arg(long)]
        shard: usize,
        #[arg(long)]
        shards: usize,
        #[arg(long)]
        start_unix_us: u64,
        #[arg(long)]
        expect: Option<PathBuf>,
        #[command(flatten)]
        gim: Gim,
    },
    /// Baseline B1: RSS growth per idle WebSocket connection of a broadcast server.
    BaseIdle {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_enum, default_value_t = baseline::Proto::Raw)]
        proto: baseline::Proto,
        /// The server's pid, for /proc/<pid>/status.
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[command(flatten)]
        common: Common,
    },
    /// Baseline B5: broadcast fan-out to `conns` receivers at `rate` messages/s.
    BaseFanout {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_enum, default_value_t = baseline::Proto::Raw)]
        proto: baseline::Proto,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        common: Common,
    },
    /// P3 against ejabberd: `pairs` pairs of XMPP users (`u<n>@<domain>`) send each other chat
    /// messages, both online; checked by reading each recipient's MAM archive.
    P3Ejabberd {
        /// ejabberd's c2s listeners (plain TCP), comma-separated.
        #[arg(long)]
        targets: String,
        #[arg(long, default_value = "bench.local")]
        domain: String,
        #[arg(long, default_value = "bench-pw")]
        password: String,
        #[arg(long, default_value_t = 0)]
        first_user: usize,
        #[arg(long, default_value_t = 1000)]
        pairs: usize,
        #[command(flatten)]
        load: Load,
        #[command(flatten)]
        common: Common,
    },
    /// Writes BENCHMARKS.md from a directory of result files.
    Report {
        #[arg(long)]
        results: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Only (re)write the "Peers" section of the existing file.
        #[arg(long)]
        peers_only: bool,
    },
}

fn storm_spec(s: &StormArgs, g: &Gim, expect: Option<PathBuf>) -> anyhow::Result<StormSpec> {
    Ok(StormSpec {
        fixture: g.fixture.clone(),
        first_user: s.first_user,
        conns: s.conns,
        rate: s.rate,
        hold_secs: s.hold_secs,
        heartbeat_secs: s.heartbeat_secs,
        spread: g.spread()?,
        transport: g.transport,
        expect,
    })
}

fn with_command(mut v: serde_json::Value) -> serde_json::Value {
    // The exact command behind the figure, for BENCHMARKS.md.
    let argv: Vec<String> = std::env::args().collect();
    v["command"] = serde_json::Value::String(argv.join(" "));
    v
}

async fn run_plan(plan: &dyn Plan, load: &Load, g: &Gim) -> anyhow::Result<()> {
    let fx = Fixture::load(&g.fixture)?;
    let v = scenario::run_messages(
        &fx,
        plan,
        &g.spread()?,
        g.transport,
        load.rate,
        load.secs,
        &g.common.cpu()?,
    )
    .await?;
    finish(v, g.common.out.as_deref())
}

fn finish(v: serde_json::Value, out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let v = with_command(v);
    report::emit(&v, out)?;
    // A failed correctness check fails the command (CI's smoke run relies on it).
    if v["check"]["ok"] == serde_json::Value::Bool(false) {
        anyhow::bail!("correctness check failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A storm worker is one of several generator processes sharing two cores with the cluster:
    // one thread each. A multi-threaded runtime per worker would wake (futex) and steal between
    // its own threads on every heartbeat, CPU the cluster under test needs.
    let mut rt = if matches!(cli.cmd, Cmd::Worker { .. }) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    rt.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Setup {
            server_url,
            client_url,
            app_id,
            key,
            users,
            normal_groups,
            normal_size,
            large_members,
            concurrency,
            out,
        } => {
            let t = std::time::Instant::now();
            let fx = fixture::setup(
                SetupSpec {
                    server_url,
                    client_url,
                    app_id,
                    key_b64: key,
                    users,
                    normal_groups,
                    normal_size,
                    large_members,
                    concurrency,
                },
                &out,
            )
            .await?;
            eprintln!(
                "fixture: app {} with {} users, {} normal groups, large group {:?} in {:.1}s",
                fx.app_id,
                fx.users.len(),
                fx.normal_groups.len(),
                fx.large_group,
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::B3 { pairs, load, gim } => run_plan(&OneToOne { pairs }, &load, &gim).await,
        Cmd::B4 { groups, load, gim } => {
            let fx = Fixture::load(&gim.fixture)?;
            let plan = NormalGroups {
                groups: groups
                    .unwrap_or(fx.normal_groups.len())
                    .min(fx.normal_groups.len()),
                size: fx.normal_size,
            };
            anyhow::ensure!(plan.groups > 0, "the fixture has no normal groups");
            run_plan(&plan, &load, &gim).await
        }
        Cmd::B5 {
            members,
            check_sample,
            load,
            gim,
        } => {
            let fx = Fixture::load(&gim.fixture)?;
            let (_, n) = fx
                .large_group
                .ok_or_else(|| anyhow::anyhow!("the fixture has no large group"))?;
            let plan = LargeGroup {
                members: members.unwrap_or(n).min(n),
                check_sample,
            };
            run_plan(&plan, &load, &gim).await
        }
        Cmd::B6Sync {
            users,
            per_user,
            server_url,
            load,
            gim: g,
        } => {
            let fx = Fixture::load(&g.fixture)?;
            let tag = gim::run_tag();
            let idx: Vec<usize> = (0..users.min(fx.users.len())).collect();
            let base = fixture::push_pending(&fx, &server_url, &idx, per_user, tag).await?;
            let base: Vec<(usize, i64)> = idx.iter().map(|u| (*u, base[u])).collect();
            let v = scenario::run_syncs(
                &fx,
                tag,
                &base,
                per_user,
                &g.spread()?,
                g.transport,
                load.rate,
                load.secs,
                &g.common.cpu()?,
            )
            .await?;
            finish(v, g.common.out.as_deref())
        }
        Cmd::Storm {
            storm,
            procs,
            conn_pids,
            sync_per_user,
            server_url,
            name,
            gim: g,
        } => {
            let mut expect_file = None;
            if sync_per_user > 0 {
                let url = server_url
                    .ok_or_else(|| anyhow::anyhow!("--sync-per-user needs --server-url"))?;
                let fx = Fixture::load(&g.fixture)?;
                let tag = gim::run_tag();
                let users: Vec<usize> =
                    (storm.first_user..storm.first_user + storm.conns).collect();
                let t = std::time::Instant::now();
                let base = fixture::push_pending(&fx, &url, &users, sync_per_user, tag).await?;
                eprintln!(
                    "stored {sync_per_user} messages for {} users in {:.1}s",
                    users.len(),
                    t.elapsed().as_secs_f64()
                );
                let path = g.fixture.with_extension(format!("expect-{tag}.json"));
                let x = SyncExpect {
                    tag,
                    per_user: sync_per_user,
                    base,
                };
                std::fs::write(&path, serde_json::to_string(&x)?)?;
                expect_file = Some(path);
            }
            let spec = storm_spec(&storm, &g, expect_file)?;
            let extra = [
                "--targets".to_string(),
                g.targets.clone(),
                "--sources".into(),
                g.common.sources.to_string(),
            ];
            let probe = cpu::Probe::start(&g.common.cpu()?);
            let mut v = worker::coordinate(&spec, procs.max(1), &conn_pids, &extra).await?;
            // Every connection's sign-in (and, for B6b, its sync) is the unit of work.
            v["cpu"] = probe.finish(v["signed_in"].as_u64().unwrap_or(0), "sign-in");
            v["scenario"] = serde_json::Value::String(name);
            v["sync_per_user"] = sync_per_user.into();
            finish(v, g.common.out.as_deref())
        }
        Cmd::Worker {
            storm,
            shard,
            shards,
            start_unix_us,
            expect,
            gim: g,
        } => {
            let spec = storm_spec(&storm, &g, expect)?;
            worker::worker(spec, shard, shards, start_unix_us).await
        }
        Cmd::BaseIdle {
            target,
            proto,
            pid,
            conns,
            common,
        } => {
            net::parse_targets(&target.to_string())?;
            let v = baseline::idle(
                proto,
                baseline::spread_to(target, common.sources),
                pid,
                conns,
            )
            .await?;
            report::emit(&with_command(v), common.out.as_deref())
        }
        Cmd::BaseFanout {
            target,
            proto,
            conns,
            load,
            common,
        } => {
            net::parse_targets(&target.to_string())?;
            let v = baseline::fanout(
                proto,
                baseline::spread_to(target, common.sources),
                conns,
                load.rate,
                load.secs,
                &common.cpu()?,
            )
            .await?;
            report::emit(&with_command(v), common.out.as_deref())
        }
        Cmd::P3Ejabberd {
            targets,
            domain,
            password,
            first_user,
            pairs,
            load,
            common,
        } => {
            let spread = net::Spread {
                sources: net::sources(10, common.sources),
                targets: net::parse_targets(&targets)?,
            };
            let acc = peer::Accounts { domain, password };
            let v = peer::one_to_one(
                &acc,
                &spread,
                first_user,
                pairs,
                load.rate,
                load.secs,
                &common.cpu()?,
            )
            .await?;
            finish(v, common.out.as_deref())
        }
        Cmd::Report {
            results,
            out,
            peers_only,
        } => {
            if peers_only {
                report::write_peers(&results, &out)
            } else {
                report::write_markdown(&results, &out)
            }
        }
    }
}
