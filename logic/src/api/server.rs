//! `LogicServerExt`: what tenants' business servers call, authenticated by the app token.

use super::{handle, server_auth};
use crate::error::Error;
use crate::messages::Sender;
use crate::messages::change::ChangeKind;
use crate::state::State;
use gim_common::{DeviceId, GroupId, UserId};
use gim_proto::logic::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

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
            self.0
                .messages
                .send(app, Sender::Business { id }, req)
                .await
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
            let (created, updated) = self.0.users.import_users(app, &req.users).await?;
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
                user: Some(self.0.users.get_user(app, UserId(req.user_id)).await?),
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
                    .groups
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
            self.0.groups.update_group(app, None, req).await?;
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
            let g = self.0.groups.group(app, GroupId(req.group_id)).await?;
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
                members: self
                    .0
                    .groups
                    .group_members(app, GroupId(req.group_id))
                    .await?,
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
                    .groups
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
                .groups
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
            self.0.messages.push_to_users(app, req).await
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
                nodes: self.0.messages.broadcast(app, req).await?,
            })
        })
        .await
    }

    async fn set_app_suspended(
        &self,
        r: Request<pb::SetAppSuspendedReq>,
    ) -> Result<Response<pb::SetAppSuspendedResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.SetAppSuspended", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let closed = self
                .0
                .policies
                .set_app_suspended(app, req.suspended)
                .await?;
            Ok(pb::SetAppSuspendedResp { closed })
        })
        .await
    }

    async fn set_user_suspended(
        &self,
        r: Request<pb::SetUserSuspendedReq>,
    ) -> Result<Response<pb::SetUserSuspendedResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.SetUserSuspended", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let closed = self
                .0
                .policies
                .set_user_suspended(app, UserId(req.user_id), req.suspended)
                .await?;
            Ok(pb::SetUserSuspendedResp { closed })
        })
        .await
    }

    async fn force_logout(
        &self,
        r: Request<pb::ForceLogoutReq>,
    ) -> Result<Response<pb::ForceLogoutResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.ForceLogout", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let device = (req.device_id != 0).then_some(DeviceId(req.device_id));
            let (tokens_after, closed) = self
                .0
                .policies
                .force_logout(app, UserId(req.user_id), device)
                .await?;
            Ok(pb::ForceLogoutResp {
                tokens_after,
                closed,
            })
        })
        .await
    }

    async fn revoke_token(
        &self,
        r: Request<pb::RevokeTokenReq>,
    ) -> Result<Response<pb::RevokeTokenResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.RevokeToken", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let device = (req.device_id != 0).then_some(DeviceId(req.device_id));
            let closed = self
                .0
                .policies
                .revoke_token(app, UserId(req.user_id), &req.jti, req.expires_at, device)
                .await?;
            Ok(pb::RevokeTokenResp { closed })
        })
        .await
    }

    async fn add_app_key(
        &self,
        r: Request<pb::AddAppKeyReq>,
    ) -> Result<Response<pb::AddAppKeyResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.AddAppKey", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0
                .policies
                .add_key(app, &req.kid, &req.public_key)
                .await?;
            Ok(pb::AddAppKeyResp {})
        })
        .await
    }

    async fn list_app_keys(
        &self,
        r: Request<pb::ListAppKeysReq>,
    ) -> Result<Response<pb::ListAppKeysResp>, Status> {
        let (meta, _, _req) = r.into_parts();
        handle(&self.0, "LogicServerExt.ListAppKeys", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let keys = self.0.policies.keys(app).await?;
            Ok(pb::ListAppKeysResp {
                keys: keys
                    .into_iter()
                    .map(|k| pb::AppKeyInfo {
                        kid: k.kid,
                        public_key: k.public_key.into(),
                        create_time: k.created_ms,
                        retired: k.retired,
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn retire_app_key(
        &self,
        r: Request<pb::RetireAppKeyReq>,
    ) -> Result<Response<pb::RetireAppKeyResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.RetireAppKey", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0.policies.retire_key(app, &req.kid).await?;
            Ok(pb::RetireAppKeyResp {})
        })
        .await
    }

    async fn set_token_policy(
        &self,
        r: Request<pb::SetTokenPolicyReq>,
    ) -> Result<Response<pb::SetTokenPolicyResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.SetTokenPolicy", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0
                .policies
                .set_token_policy(app, req.max_token_ttl_secs, req.require_token_ids)
                .await?;
            Ok(pb::SetTokenPolicyResp {})
        })
        .await
    }

    async fn recall_message(
        &self,
        r: Request<gim_proto::connect::v1::MessageChangeInput>,
    ) -> Result<Response<gim_proto::connect::v1::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.RecallMessage", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let actor = Sender::Business { id: 0 };
            self.0
                .messages
                .change(app, actor, ChangeKind::Recall, req)
                .await
        })
        .await
    }

    async fn edit_message(
        &self,
        r: Request<gim_proto::connect::v1::MessageChangeInput>,
    ) -> Result<Response<gim_proto::connect::v1::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.EditMessage", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let actor = Sender::Business { id: 0 };
            self.0
                .messages
                .change(app, actor, ChangeKind::Edit, req)
                .await
        })
        .await
    }

    async fn set_recall_window(
        &self,
        r: Request<pb::SetRecallWindowReq>,
    ) -> Result<Response<pb::SetRecallWindowResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.SetRecallWindow", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            self.0
                .messages
                .set_recall_window(app, req.recall_window_secs)
                .await?;
            Ok(pb::SetRecallWindowResp {})
        })
        .await
    }

    async fn set_app_limits(
        &self,
        r: Request<pb::SetAppLimitsReq>,
    ) -> Result<Response<pb::SetAppLimitsResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicServerExt.SetAppLimits", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let l = req.limits.unwrap_or_default();
            let now = self.0.limits.set(app, &l).await?;
            Ok(pb::SetAppLimitsResp {
                effective: Some(now.effective()),
            })
        })
        .await
    }

    async fn get_app_limits(
        &self,
        r: Request<pb::GetAppLimitsReq>,
    ) -> Result<Response<pb::GetAppLimitsResp>, Status> {
        let (meta, _, _) = r.into_parts();
        handle(&self.0, "LogicServerExt.GetAppLimits", &meta, async {
            let app = server_auth(&self.0, &meta).await?;
            let l = self.0.limits.app(app).await?;
            Ok(pb::GetAppLimitsResp {
                set: Some(l.row.to_pb()),
                effective: Some(l.effective()),
            })
        })
        .await
    }
}
