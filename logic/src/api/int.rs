//! `LogicInt`: what conn nodes call for their connections (identities come in the request,
//! checked by conn at sign-in).

use super::handle;
use crate::error::Error;
use crate::messages::Sender;
use crate::messages::change::ChangeKind;
use crate::state::State;
use gim_common::{AppId, DeviceId, UserId};
use gim_proto::connect::v1 as cpb;
use gim_proto::logic::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone)]
pub struct IntService(pub Arc<State>);

#[tonic::async_trait]
impl pb::logic_int_server::LogicInt for IntService {
    async fn sign_in(&self, r: Request<pb::SignInReq>) -> Result<Response<pb::SignInResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(
            &self.0,
            "LogicInt.SignIn",
            &meta,
            self.0.sessions.sign_in(req),
        )
        .await
    }

    async fn sync(&self, r: Request<pb::SyncReq>) -> Result<Response<pb::SyncResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.Sync", &meta, self.0.sessions.sync(req)).await
    }

    async fn message_ack(
        &self,
        r: Request<pb::MessageAckReq>,
    ) -> Result<Response<pb::MessageAckResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.MessageACK", &meta, async {
            self.0
                .sessions
                .ack(req)
                .await
                .map(|_| pb::MessageAckResp {})
        })
        .await
    }

    async fn offline(
        &self,
        r: Request<pb::OfflineReq>,
    ) -> Result<Response<pb::OfflineResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.Offline", &meta, async {
            self.0
                .sessions
                .offline(req)
                .await
                .map(|_| pb::OfflineResp {})
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
                .sessions
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
            self.0.messages.send(AppId(req.app_id), sender, inner).await
        })
        .await
    }

    async fn group_sync(
        &self,
        r: Request<pb::GroupSyncReq>,
    ) -> Result<Response<pb::GroupSyncResp>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(
            &self.0,
            "LogicInt.GroupSync",
            &meta,
            self.0.sessions.group_sync(req),
        )
        .await
    }

    async fn get_conversations(
        &self,
        r: Request<pb::IntGetConversationsReq>,
    ) -> Result<Response<cpb::GetConversationsOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.GetConversations", &meta, async {
            self.0
                .conversations
                .list(
                    AppId(req.app_id),
                    UserId(req.user_id),
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }

    async fn update_conversation(
        &self,
        r: Request<pb::IntUpdateConversationReq>,
    ) -> Result<Response<cpb::Conversation>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.UpdateConversation", &meta, async {
            self.0
                .conversations
                .update(
                    AppId(req.app_id),
                    UserId(req.user_id),
                    DeviceId(req.device_id),
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }

    async fn mark_read(
        &self,
        r: Request<pb::IntMarkReadReq>,
    ) -> Result<Response<cpb::Conversation>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.MarkRead", &meta, async {
            self.0
                .conversations
                .mark_read(
                    AppId(req.app_id),
                    UserId(req.user_id),
                    DeviceId(req.device_id),
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }

    async fn get_history(
        &self,
        r: Request<pb::IntGetHistoryReq>,
    ) -> Result<Response<cpb::GetHistoryOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.GetHistory", &meta, async {
            self.0
                .conversations
                .history(
                    AppId(req.app_id),
                    UserId(req.user_id),
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }

    async fn recall_message(
        &self,
        r: Request<pb::IntMessageChangeReq>,
    ) -> Result<Response<cpb::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.RecallMessage", &meta, async {
            let actor = Sender::User {
                user: UserId(req.user_id),
                device: DeviceId(req.device_id),
            };
            self.0
                .messages
                .change(
                    AppId(req.app_id),
                    actor,
                    ChangeKind::Recall,
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }

    async fn edit_message(
        &self,
        r: Request<pb::IntMessageChangeReq>,
    ) -> Result<Response<cpb::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.EditMessage", &meta, async {
            let actor = Sender::User {
                user: UserId(req.user_id),
                device: DeviceId(req.device_id),
            };
            self.0
                .messages
                .change(
                    AppId(req.app_id),
                    actor,
                    ChangeKind::Edit,
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }

    async fn delete_message(
        &self,
        r: Request<pb::IntMessageChangeReq>,
    ) -> Result<Response<cpb::MessageChangeOutput>, Status> {
        let (meta, _, req) = r.into_parts();
        handle(&self.0, "LogicInt.DeleteMessage", &meta, async {
            let actor = Sender::User {
                user: UserId(req.user_id),
                device: DeviceId(req.device_id),
            };
            self.0
                .messages
                .change(
                    AppId(req.app_id),
                    actor,
                    ChangeKind::Delete,
                    req.req.unwrap_or_default(),
                )
                .await
        })
        .await
    }
}
