//! The tenant a run works in: one app, `users` users with one device each, normal groups over the
//! first users and one large group over the first `large` users. Created through logic's public
//! gRPC APIs (LogicServerExt with a server token, LogicClientExt.RegisterDevice) and saved as JSON
//! so every scenario and worker process of a suite shares it.

use gim_common::token::AppKey;
use gim_proto::logic::v1::{
    self as lpb, logic_client_ext_client::LogicClientExtClient,
    logic_server_ext_client::LogicServerExtClient,
};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixture {
    pub app_id: i64,
    /// The app's private key (base64url), to mint device and server tokens.
    pub key_b64: String,
    /// `(user_id, device_id)`; scenarios address users by index into this list.
    pub users: Vec<(i64, i64)>,
    /// Normal groups: `(group_id, first user index)`, each over `normal_size` consecutive users.
    pub normal_groups: Vec<(i64, usize)>,
    pub normal_size: usize,
    /// The large group and its members, users `0..large_members`.
    pub large_group: Option<(i64, usize)>,
}

impl Fixture {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading fixture {}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn key(&self) -> anyhow::Result<AppKey> {
        Ok(AppKey::from_private_b64(&self.key_b64)?)
    }

    /// The identity of user index `i`, with a day-long device token.
    pub fn identity(&self, key: &AppKey, i: usize) -> crate::gim::Identity {
        let (user_id, device_id) = self.users[i];
        let now = gim_common::now_ms() / 1000;
        crate::gim::Identity {
            app_id: self.app_id,
            user_id,
            device_id,
            token: key.device_token(self.app_id, user_id, device_id, now, 86_400),
        }
    }

    pub fn server_token(&self) -> anyhow::Result<String> {
        let now = gim_common::now_ms() / 1000;
        Ok(self.key()?.server_token(self.app_id, now, 86_400))
    }
}

/// Adds `app_id` and the server token to every LogicServerExt call.
#[derive(Clone)]
pub struct ServerAuth {
    app: MetadataValue<Ascii>,
    token: MetadataValue<Ascii>,
}

impl tonic::service::Interceptor for ServerAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("app_id", self.app.clone());
        req.metadata_mut().insert("token", self.token.clone());
        Ok(req)
    }
}

pub type ServerClient = LogicServerExtClient<InterceptedService<Channel, ServerAuth>>;

pub fn server_client(channel: Channel, app_id: i64, token: &str) -> anyhow::Result<ServerClient> {
    let auth = ServerAuth {
        app: app_id.to_string().parse()?,
        token: token.parse()?,
    };
    Ok(LogicServerExtClient::with_interceptor(channel, auth))
}

#[derive(Debug, Clone)]
pub struct SetupSpec {
    pub server_url: String,
    pub client_url: String,
    pub app_id: i64,
    pub key_b64: String,
    pub users: usize,
    pub normal_groups: usize,
    pub normal_size: usize,
    pub large_members: usize,
    /// RegisterDevice calls in flight.
    pub concurrency: usize,
}

pub async fn setup(spec: SetupSpec, out: &Path) -> anyhow::Result<Fixture> {
    let key = AppKey::from_private_b64(&spec.key_b64)?;
    let now = gim_common::now_ms() / 1000;
    let token = key.server_token(spec.app_id, now, 86_400);
    let server_ch = Channel::from_shared(spec.server_url.clone())?
        .connect()
        .await?;
    let client_ch = Channel::from_shared(spec.client_url.clone())?
        .connect()
        .await?;
    let mut server = server_client(server_ch, spec.app_id, &token)?;

    // The bench's senders send far above a user's default rate (1011): lift it for this app.
    // An older server without SetAppLimits has no limits to lift.
    let lift = lpb::SetAppLimitsReq {
        limits: Some(lpb::AppLimits {
            send_per_sec: -1,
            send_burst: 0,
        }),
    };
    match server.set_app_limits(lift).await {
        Err(s) if s.code() != tonic::Code::Unimplemented => return Err(s.into()),
        _ => {}
    }

    let user_ids: Vec<i64> = (1..=spec.users as i64).collect();
    for chunk in user_ids.chunks(1000) {
        server
            .import_users(lpb::ImportUsersReq {
                users: chunk
                    .iter()
                    .map(|&u| lpb::User {
                        user_id: u,
                        nickname: format!("bench-{u}"),
                        ..Default::default()
                    })
                    .collect(),
            })
            .await?;
    }

    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(spec.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(spec.users);
    for _ in 0..spec.users {
        let mut c = LogicClientExtClient::new(client_ch.clone());
        let permit = sem.clone().acquire_owned().await?;
        let app_id = spec.app_id;
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            c.register_device(lpb::RegisterDeviceReq {
                app_id,
                r#type: lpb::DeviceType::Android as i32,
                brand: "bench".into(),
                model: "gim-bench".into(),
                system_version: "1".into(),
                sdk_version: "gim-bench".into(),
            })
            .await
            .map(|r| r.into_inner().device_id)
        }));
    }
    let mut users = Vec::with_capacity(spec.users);
    for (u, t) in user_ids.iter().zip(tasks) {
        users.push((*u, t.await??));
    }

    let mut normal_groups = Vec::new();
    for g in 0..spec.normal_groups {
        let first = g * spec.normal_size;
        anyhow::ensure!(
            first + spec.normal_size <= users.len(),
            "not enough users for {} normal groups of {}",
            spec.normal_groups,
            spec.normal_size
        );
        let members: Vec<i64> = users[first + 1..first + spec.normal_size]
            .iter()
            .map(|u| u.0)
            .collect();
        let resp = server
            .create_group(lpb::ServerCreateGroupReq {
                group: Some(lpb::Group {
                    name: format!("bench-normal-{g}"),
                    r#type: lpb::GroupType::Normal as i32,
                    ..Default::default()
                }),
                owner_id: users[first].0,
                member_ids: members,
            })
            .await?;
        normal_groups.push((resp.into_inner().group_id, first));
    }

    let mut large_group = None;
    if spec.large_members > 0 {
        anyhow::ensure!(
            spec.large_members <= users.len(),
            "not enough users for the large group"
        );
        let resp = server
            .create_group(lpb::ServerCreateGroupReq {
                group: Some(lpb::Group {
                    name: "bench-large".into(),
                    r#type: lpb::GroupType::Large as i32,
                    ..Default::default()
                }),
                owner_id: users[0].0,
                member_ids: vec![],
            })
            .await?;
        let gid = resp.into_inner().group_id;
        let ids: Vec<i64> = users[1..spec.large_members].iter().map(|u| u.0).collect();
        for chunk in ids.chunks(1000) {
            server
                .add_group_member(lpb::AddGroupMemberReq {
                    group_id: gid,
                    user_ids: chunk.to_vec(),
                })
                .await?;
        }
        large_group = Some((gid, spec.large_members));
    }

    let fixture = Fixture {
        app_id: spec.app_id,
        key_b64: spec.key_b64,
        users,
        normal_groups,
        normal_size: spec.normal_size,
        large_group,
    };
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string(&fixture)?)?;
    Ok(fixture)
}

/// Stores `per_user` messages of run `tag` (bodies numbered `0..per_user`) in each listed user's
/// list through LogicServerExt.PushToUsers, 1 000 users per call; returns, per user index, the
/// seq just below that user's first such message (a sync from there returns exactly them).
pub async fn push_pending(
    fx: &Fixture,
    server_url: &str,
    users: &[usize],
    per_user: usize,
    tag: u32,
) -> anyhow::Result<std::collections::HashMap<usize, i64>> {
    let ch = Channel::from_shared(server_url.to_string())?
        .connect()
        .await?;
    let client = server_client(ch, fx.app_id, &fx.server_token()?)?;
    let chunks: Vec<Vec<usize>> = users.chunks(1000).map(<[usize]>::to_vec).collect();
    let mut base = std::collections::HashMap::new();
    for m in 0..per_user as u64 {
        let calls = chunks.iter().enumerate().map(|(c, chunk)| {
            let mut client = client.clone();
            let req = lpb::PushToUsersReq {
                user_ids: chunk.iter().map(|&u| fx.users[u].0).collect(),
                message_body: Some(crate::gim::body(tag, m, 0)),
                is_persist: true,
                client_request_id: crate::gim::client_request_id(
                    tag,
                    m * chunks.len() as u64 + c as u64,
                ),
                sender_id: 0,
            };
            async move { client.push_to_users(req).await.map(|r| r.into_inner()) }
        });
        let resps = futures::future::try_join_all(calls).await?;
        if m == 0 {
            for (chunk, resp) in chunks.iter().zip(resps) {
                anyhow::ensure!(
                    resp.seqs.len() == chunk.len(),
                    "PushToUsers returned {} seqs for {} users",
                    resp.seqs.len(),
                    chunk.len()
                );
                for (&u, s) in chunk.iter().zip(resp.seqs) {
                    base.insert(u, s - 1);
                }
            }
        }
    }
    Ok(base)
}
