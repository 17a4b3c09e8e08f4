//! `LogicClientExt`: what client apps call directly, authenticated by their device token.

use super::{client_auth, handle};
use crate::error::Error;
use crate::messages::Sender;
use crate::messages::change::ChangeKind;
use crate::state::State;
use gim_common::{GroupId, UserId};
use gim_proto::connect::v1 as cpb;
use gim_proto::logic::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

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
                device_id: self.0.apps.register_device(req).await?,
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
            self.0.users.add_user(app, user, u).await?;
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
                user: Some(self.0.users.get_user(app, UserId(req.user_id)).await?),
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
            self.0
                .messages
                .send(app, Sender::User { user, device }, req)
                .await
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
                group_id: self
                    .0
                    .groups
                    .create_group(app, user, g, req.member_ids)
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
        handle(&self.0, "LogicClientExt.UpdateGroup", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0.groups.update_group(app, Some(user), req).await?;
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
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            let g = self.0.groups.group(app, GroupId(req.group_id)).await?;
            // Group ids are sequential: a non-member must not learn any group's name, owner
            // and size by counting. Business servers read any group (LogicServerExt).
            self.0.groups.require_member(app, &g, user).await?;
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
                groups: self.0.groups.user_groups(app, user).await?,
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
                    .groups
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
            self.0.groups.update_member(app, user, req).await?;
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
                .groups
                .delete_member(app, Some(user), GroupId(req.group_id), UserId(req.user_id))
                .await?;
            Ok(pb::DeleteGroupMemberResp {})
        })
        .await
    }

    async fn block_user(
        &self,
        r: Request<pb::BlockUserReq>,
    ) -> Result<Response<pb::BlockUserResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.BlockUser", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0
                .policies
                .block(app, user, UserId(req.user_id))
                .await?;
            Ok(pb::BlockUserResp {})
        })
        .await
    }

    async fn get_conversations(
        &self,
        r: Request<cpb::GetConversationsInput>,
    ) -> Result<Response<cpb::GetConversationsOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.GetConversations", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0.conversations.list(app, user, req).await
        })
        .await
    }

    async fn unblock_user(
        &self,
        r: Request<pb::UnblockUserReq>,
    ) -> Result<Response<pb::UnblockUserResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.UnblockUser", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0
                .policies
                .unblock(app, user, UserId(req.user_id))
                .await?;
            Ok(pb::UnblockUserResp {})
        })
        .await
    }

    async fn update_conversation(
        &self,
        r: Request<cpb::UpdateConversationInput>,
    ) -> Result<Response<cpb::Conversation>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.UpdateConversation", &meta, async {
            let (app, user, device) = client_auth(&self.0, &meta).await?;
            self.0.conversations.update(app, user, device, req).await
        })
        .await
    }

    async fn list_blocked_users(
        &self,
        r: Request<pb::ListBlockedUsersReq>,
    ) -> Result<Response<pb::ListBlockedUsersResp>, Status> {
        let (meta, _, _req) = r.into_parts();
        handle(&self.0, "LogicClientExt.ListBlockedUsers", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            Ok(pb::ListBlockedUsersResp {
                user_ids: self.0.policies.blocked(app, user).await?,
            })
        })
        .await
    }

    async fn mark_read(
        &self,
        r: Request<cpb::MarkReadInput>,
    ) -> Result<Response<cpb::Conversation>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.MarkRead", &meta, async {
            let (app, user, device) = client_auth(&self.0, &meta).await?;
            self.0.conversations.mark_read(app, user, device, req).await
        })
        .await
    }

    async fn get_history(
        &self,
        r: Request<cpb::GetHistoryInput>,
    ) -> Result<Response<cpb::GetHistoryOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.GetHistory", &meta, async {
            let (app, user, _) = client_auth(&self.0, &meta).await?;
            self.0.conversations.history(app, user, req).await
        })
        .await
    }

    async fn recall_message(
        &self,
        r: Request<cpb::MessageChangeInput>,
    ) -> Result<Response<cpb::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.RecallMessage", &meta, async {
            let (app, user, device) = client_auth(&self.0, &meta).await?;
            let actor = Sender::User { user, device };
            self.0
                .messages
                .change(app, actor, ChangeKind::Recall, req)
                .await
        })
        .await
    }

    async fn edit_message(
        &self,
        r: Request<cpb::MessageChangeInput>,
    ) -> Result<Response<cpb::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.EditMessage", &meta, async {
            let (app, user, device) = client_auth(&self.0, &meta).await?;
            let actor = Sender::User { user, device };
            self.0
                .messages
                .change(app, actor, ChangeKind::Edit, req)
                .await
        })
        .await
    }

    async fn delete_message(
        &self,
        r: Request<cpb::MessageChangeInput>,
    ) -> Result<Response<cpb::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicClientExt.DeleteMessage", &meta, async {
            let (app, user, device) = client_auth(&self.0, &meta).await?;
            let actor = Sender::User { user, device };
            self.0
                .messages
                .change(app, actor, ChangeKind::Delete, req)
                .await
        })
        .await
    }
}
