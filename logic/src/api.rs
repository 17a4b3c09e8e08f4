//! The three gRPC services: each method reads its identity (metadata for the external APIs, the
//! request for `LogicInt`), runs the core logic inside a span carrying the trace id, and maps the
//! result through the crate's single error-to-status conversion.

use crate::core::{Sender, State};
use crate::error::{Error, Result};
use crate::metrics::{MethodLabel, RpcLabels};
use gim_common::{AppId, DeviceId, GimCode, GroupId, TRACE_ID_HEADER, UserId};
use gim_proto::logic::v1 as pb;
use std::future::Future;
use std::sync::Arc;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

fn trace_id(meta: &MetadataMap) -> String {
    meta.get(TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(gim_common::telemetry::new_trace_id)
}

/// Runs one RPC's work inside its span and trace-id scope, and counts it. The work goes to the
/// heap before anything else: a send's future holds the locals of every await point in it, and
/// every layer wrapped around it (the span, the trace-id scope, this function's own future,
/// tonic's) would otherwise copy all of it when it is built and moved. Those copies were 6 % of
/// logic's CPU under B3 (`memmove` under `send_message` in a `perf record --call-graph dwarf`
/// profile); one allocation per RPC replaces them.
fn handle<'a, T: 'a>(
    state: &'a State,
    method: &'static str,
    meta: &'a MetadataMap,
    fut: impl Future<Output = Result<T>> + 'a,
) -> impl Future<Output = Result<Response<T>, Status>> + 'a {
    handle_boxed(state, method, meta, Box::pin(fut))
}

async fn handle_boxed<T>(
    state: &State,
    method: &'static str,
    meta: &MetadataMap,
    fut: std::pin::Pin<Box<impl Future<Output = Result<T>>>>,
) -> Result<Response<T>, Status> {
    let trace_id = trace_id(meta);
    let span = tracing::info_span!("rpc", method, trace_id = %trace_id);
    let start = std::time::Instant::now();
    let r = crate::push::TRACE_ID
        .scope(trace_id.clone(), fut.instrument(span.clone()))
        .await;
    state
        .metrics
        .rpc_seconds
        .get_or_create(&MethodLabel { method })
        .observe(start.elapsed().as_secs_f64());
    let outcome = match &r {
        Ok(_) => "ok".to_string(),
        Err(e) => match e.gim_code() {
            Some(c) => c.as_i32().to_string(),
            None if e.is_unavailable() => "unavailable".into(),
            None => "internal".into(),
        },
    };
    state
        .metrics
        .rpcs
        .get_or_create(&RpcLabels { method, outcome })
        .inc();
    match r {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            let _g = span.enter();
            Err(e.into_status(method, &trace_id))
        }
    }
}

fn meta_i64(meta: &MetadataMap, key: &str) -> Result<i64> {
    meta.get(key)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::code(GimCode::Unauthorized, format!("metadata {key} is missing")))
}

fn meta_token(meta: &MetadataMap) -> Result<&str> {
    meta.get("token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::code(GimCode::Unauthorized, "metadata token is missing"))
}

/// A client app's identity, verified: (app, user, device).
async fn client_auth(state: &State, meta: &MetadataMap) -> Result<(AppId, UserId, DeviceId)> {
    let app = AppId(meta_i64(meta, "app_id")?);
    let user = UserId(meta_i64(meta, "user_id")?);
    let device = DeviceId(meta_i64(meta, "device_id")?);
    state
        .auth_device(app, user, device, meta_token(meta)?)
        .await?;
    Ok((app, user, device))
}

async fn server_auth(state: &State, meta: &MetadataMap) -> Result<AppId> {
    let app = AppId(meta_i64(meta, "app_id")?);
    state.auth_server(app, meta_token(meta)?).await?;
    Ok(app)
}

// ------------------------------------------------------------------------------------ LogicInt

#[derive(Debug, Clone)]
pub struct IntService(pub Arc<State>);

#[tonic::async_trait]
impl pb::logic_int_server::LogicInt for IntService {
    async fn sign_in(&self, r: Request<pb::SignInReq>) -> Result<Response<pb::SignInResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.SignIn", &meta, self.0.sign_in(req)).await
    }

    async fn sync(&self, r: Request<pb::SyncReq>) -> Result<Response<pb::SyncResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.Sync", &meta, self.0.sync(req)).await
    }

    async fn message_ack(
        &self,
        r: Request<pb::MessageAckReq>,
    ) -> Result<Response<pb::MessageAckResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.MessageACK", &meta, async {
            self.0.ack(req).await.map(|_| pb::MessageAckResp {})
        })
        .await
    }

    async fn offline(
        &self,
        r: Request<pb::OfflineReq>,
    ) -> Result<Response<pb::OfflineResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.Offline", &meta, async {
            self.0.offline(req).await.map(|_| pb::OfflineResp {})
        })
        .await
    }

    async fn restore_routes(
        &self,
        r: Request<pb::RestoreRoutesReq>,
    ) -> Result<Response<pb::RestoreRoutesResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.RestoreRoutes", &meta, async {
            self.0
                .restore_routes(req)
                .await
                .map(|restored| pb::RestoreRoutesResp { restored })
        })
        .await
    }

    async fn send_message(
        &self,
        r: Request<pb::IntSendMessageReq>,
    ) -> Result<Response<pb::SendMessageResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.SendMessage", &meta, async {
            let inner = req
                .req
                .ok_or_else(|| Error::bad_request("req", "is required"))?;
            let sender = Sender::User {
                user: UserId(req.user_id),
                device: DeviceId(req.device_id),
            };
            self.0.send(AppId(req.app_id), sender, inner).await
        })
        .await
    }

    async fn group_sync(
        &self,
        r: Request<pb::GroupSyncReq>,
    ) -> Result<Response<pb::GroupSyncResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.GroupSync", &meta, self.0.group_sync(req)).await
    }
}

// ------------------------------------------------------------------------------ LogicClientExt

#[derive(Debug, Clone)]
pub struct ClientService(pub Arc<State>);

#[tonic::async_trait]
impl pb::logic_client_ext_server::LogicClientExt for ClientService {
    async fn register_device(
        &self,
        r: Request<pb::RegisterDeviceReq>,
    ) -> Result<Response<pb::RegisterDeviceResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.RegisterDevice", &meta, async {
            Ok(pb::RegisterDeviceResp {
                device_id: self.0.register_device(req).await?,
            })
        })
        .await
    }

    async fn add_user(
        &self,
        r: Request<pb::AddUserReq>,
    ) -> Result<Response<pb::AddUserResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.AddUser", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            let u = req
                .user
                .ok_or_else(|| Error::bad_request("user", "is required"))?;
            self.0.add_user(app, user, u).await?;
            Ok(pb::AddUserResp {})
        })
        .await
    }

    async fn get_user(
        &self,
        r: Request<pb::GetUserReq>,
    ) -> Result<Response<pb::GetUserResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.GetUser", &meta, async {
            let (app, _, _) = client_auth(&self.0, &meta).await?;
            Ok(pb::GetUserResp {
                user: Some(self.0.get_user(app, UserId(req.user_id)).await?),
            })
        })
        .await
    }

    async fn send_message(
        &self,
        r: Request<pb::SendMessageReq>,
    ) -> Result<Response<pb::SendMessageResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.SendMessage", &meta, async {
            let (app, user, device) = client_auth(&self.0, &meta).await?;
            if req.sender_id != 0 {
                return Err(Error::bad_request(
                    "sender_id",
                    "only business servers may set it",
                ));
            }
            self.0.send(app, Sender::User { user, device }, req).await
        })
        .await
    }

    async fn create_group(
        &self,
        r: Request<pb::CreateGroupReq>,
    ) -> Result<Response<pb::CreateGroupResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.CreateGroup", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            let g = req
                .group
                .ok_or_else(|| Error::bad_request("group", "is required"))?;
            Ok(pb::CreateGroupResp {
                group_id: self.0.create_group(app, user, g, req.member_ids).await?,
            })
        })
        .await
    }

    async fn update_group(
        &self,
        r: Request<pb::UpdateGroupReq>,
    ) -> Result<Response<pb::UpdateGroupResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.UpdateGroup", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0.update_group(app, Some(user), req).await?;
            Ok(pb::UpdateGroupResp {})
        })
        .await
    }

    async fn get_group(
        &self,
        r: Request<pb::GetGroupReq>,
    ) -> Result<Response<pb::GetGroupResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.GetGroup", &meta, async {
            let (app, _, _) = client_auth(&self.0, &meta).await?;
            let g = self.0.group(app, GroupId(req.group_id)).await?;
            Ok(pb::GetGroupResp {
                group: Some(g.to_pb()),
            })
        })
        .await
    }

    async fn get_user_groups(
        &self,
        r: Request<pb::GetUserGroupsReq>,
    ) -> Result<Response<pb::GetUserGroupsResp>, Status> {
        let (meta, _, _req) = r.into_parts();
        handle(&self.0, "LogicClientExt.GetUserGroups", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            Ok(pb::GetUserGroupsResp {
                groups: self.0.user_groups(app, user).await?,
            })
        })
        .await
    }

    async fn add_group_member(
        &self,
        r: Request<pb::AddGroupMemberReq>,
    ) -> Result<Response<pb::AddGroupMemberResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.AddGroupMember", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            Ok(pb::AddGroupMemberResp {
                user_ids: self
                    .0
                    .add_members(app, Some(user), GroupId(req.group_id), req.user_ids)
                    .await?,
            })
        })
        .await
    }

    async fn update_group_member(
        &self,
        r: Request<pb::UpdateGroupMemberReq>,
    ) -> Result<Response<pb::UpdateGroupMemberResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.UpdateGroupMember", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0.update_member(app, user, req).await?;
            Ok(pb::UpdateGroupMemberResp {})
        })
        .await
    }

    async fn delete_group_member(
        &self,
        r: Request<pb::DeleteGroupMemberReq>,
    ) -> Result<Response<pb::DeleteGroupMemberResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.DeleteGroupMember", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0
                .delete_member(app, Some(user), GroupId(req.group_id), UserId(req.user_id))
                .await?;
            Ok(pb::DeleteGroupMemberResp {})
        })
        .await
    }
}

// ------------------------------------------------------------------------------ LogicServerExt

#[derive(Debug, Clone)]
pub struct ServerService(pub Arc<State>);

#[tonic::async_trait]
impl pb::logic_server_ext_server::LogicServerExt for ServerService {
    async fn send_message(
        &self,
        r: Request<pb::SendMessageReq>,
    ) -> Result<Response<pb::SendMessageResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.SendMessage", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let id = req.sender_id;
            self.0.send(app, Sender::Business { id }, req).await
        })
        .await
    }

    async fn import_users(
        &self,
        r: Request<pb::ImportUsersReq>,
    ) -> Result<Response<pb::ImportUsersResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.ImportUsers", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let (created, updated) = self.0.import_users(app, &req.users).await?;
            Ok(pb::ImportUsersResp { created, updated })
        })
        .await
    }

    async fn get_user(
        &self,
        r: Request<pb::GetUserReq>,
    ) -> Result<Response<pb::GetUserResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.GetUser", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            Ok(pb::GetUserResp {
                user: Some(self.0.get_user(app, UserId(req.user_id)).await?),
            })
        })
        .await
    }

    async fn create_group(
        &self,
        r: Request<pb::ServerCreateGroupReq>,
    ) -> Result<Response<pb::CreateGroupResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.CreateGroup", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let g = req
                .group
                .ok_or_else(|| Error::bad_request("group", "is required"))?;
            Ok(pb::CreateGroupResp {
                group_id: self
                    .0
                    .create_group(app, UserId(req.owner_id), g, req.member_ids)
                    .await?,
            })
        })
        .await
    }

    async fn update_group(
        &self,
        r: Request<pb::UpdateGroupReq>,
    ) -> Result<Response<pb::UpdateGroupResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.UpdateGroup", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0.update_group(app, None, req).await?;
            Ok(pb::UpdateGroupResp {})
        })
        .await
    }

    async fn get_group(
        &self,
        r: Request<pb::GetGroupReq>,
    ) -> Result<Response<pb::GetGroupResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.GetGroup", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let g = self.0.group(app, GroupId(req.group_id)).await?;
            Ok(pb::GetGroupResp {
                group: Some(g.to_pb()),
            })
        })
        .await
    }

    async fn get_group_members(
        &self,
        r: Request<pb::GetGroupMembersReq>,
    ) -> Result<Response<pb::GetGroupMembersResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.GetGroupMembers", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            Ok(pb::GetGroupMembersResp {
                members: self.0.group_members(app, GroupId(req.group_id)).await?,
            })
        })
        .await
    }

    async fn add_group_member(
        &self,
        r: Request<pb::AddGroupMemberReq>,
    ) -> Result<Response<pb::AddGroupMemberResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.AddGroupMember", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            Ok(pb::AddGroupMemberResp {
                user_ids: self
                    .0
                    .add_members(app, None, GroupId(req.group_id), req.user_ids)
                    .await?,
            })
        })
        .await
    }

    async fn delete_group_member(
        &self,
        r: Request<pb::DeleteGroupMemberReq>,
    ) -> Result<Response<pb::DeleteGroupMemberResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.DeleteGroupMember", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0
                .delete_member(app, None, GroupId(req.group_id), UserId(req.user_id))
                .await?;
            Ok(pb::DeleteGroupMemberResp {})
        })
        .await
    }

    async fn push_to_users(
        &self,
        r: Request<pb::PushToUsersReq>,
    ) -> Result<Response<pb::PushToUsersResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.PushToUsers", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0.push_to_users(app, req).await
        })
        .await
    }

    async fn broadcast(
        &self,
        r: Request<pb::BroadcastReq>,
    ) -> Result<Response<pb::BroadcastResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.Broadcast", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            Ok(pb::BroadcastResp {
                nodes: self.0.broadcast(app, req).await?,
            })
        })
        .await
    }
}
