//! The calls a session makes to logic, behind a trait so unit tests use an in-memory fake and
//! the node uses the `LogicInt` gRPC client.
//!
//! Every call carries the request's trace id in `x-trace-id` metadata so conn's and logic's log
//! lines for one client request join.

use gim_common::TRACE_ID_HEADER;
use gim_common::internal::{AddSecret, SecretChannel};
use gim_proto::connect::v1::{
    Conversation, GetConversationsOutput, GetHistoryOutput, MessageChangeOutput,
};
use gim_proto::logic::v1::logic_int_client::LogicIntClient;
use gim_proto::logic::v1::{
    GroupSyncReq, GroupSyncResp, IntGetConversationsReq, IntGetHistoryReq, IntMarkReadReq,
    IntMessageChangeReq, IntSendMessageReq, IntUpdateConversationReq, MessageAckReq,
    MessageAckResp, OfflineReq, OfflineResp, RestoreRoutesReq, RestoreRoutesResp, SendMessageResp,
    SignInReq, SignInResp, SyncReq, SyncResp,
};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A boxed call: sessions keep at most one in flight, boxed so an idle connection's task does not
/// carry the size of a gRPC call's state machine.
pub type LogicFuture<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send + 'static>>;

pub trait LogicApi: Send + Sync + 'static {
    fn sign_in(&self, req: SignInReq, trace_id: String) -> LogicFuture<SignInResp>;
    fn sync(&self, req: SyncReq, trace_id: String) -> LogicFuture<SyncResp>;
    fn message_ack(&self, req: MessageAckReq, trace_id: String) -> LogicFuture<MessageAckResp>;
    fn offline(&self, req: OfflineReq, trace_id: String) -> LogicFuture<OfflineResp>;
    fn send_message(
        &self,
        req: IntSendMessageReq,
        trace_id: String,
    ) -> LogicFuture<SendMessageResp>;
    fn group_sync(&self, req: GroupSyncReq, trace_id: String) -> LogicFuture<GroupSyncResp>;
    /// Re-records this node's routes after Redis lost them (logic sets only absent ones).
    fn restore_routes(
        &self,
        req: RestoreRoutesReq,
        trace_id: String,
    ) -> LogicFuture<RestoreRoutesResp>;
    /// The conversation list (PACKAGE_TYPE_GET_CONVERSATIONS).
    fn get_conversations(
        &self,
        req: IntGetConversationsReq,
        trace_id: String,
    ) -> LogicFuture<GetConversationsOutput> {
        let _ = (req, trace_id);
        Box::pin(async { Err(Status::unimplemented("get_conversations")) })
    }
    /// Pin, mute, delete (PACKAGE_TYPE_UPDATE_CONVERSATION).
    fn update_conversation(
        &self,
        req: IntUpdateConversationReq,
        trace_id: String,
    ) -> LogicFuture<Conversation> {
        let _ = (req, trace_id);
        Box::pin(async { Err(Status::unimplemented("update_conversation")) })
    }
    /// Read position and receipts (PACKAGE_TYPE_MARK_READ).
    fn mark_read(&self, req: IntMarkReadReq, trace_id: String) -> LogicFuture<Conversation> {
        let _ = (req, trace_id);
        Box::pin(async { Err(Status::unimplemented("mark_read")) })
    }
    /// Whether logic answers and reports itself serving (its stores up); [`crate::health`].
    fn ping(&self) -> LogicFuture<bool> {
        Box::pin(async { Ok(true) })
    }
    /// One conversation's history (PACKAGE_TYPE_GET_HISTORY).
    fn get_history(
        &self,
        req: IntGetHistoryReq,
        trace_id: String,
    ) -> LogicFuture<GetHistoryOutput> {
        let _ = (req, trace_id);
        Box::pin(async { Err(Status::unimplemented("get_history")) })
    }
    /// Recall, edit, delete-for-me (PACKAGE_TYPE_RECALL_MESSAGE, EDIT_MESSAGE, DELETE_MESSAGE).
    fn change_message(
        &self,
        kind: ChangeKind,
        req: IntMessageChangeReq,
        trace_id: String,
    ) -> LogicFuture<MessageChangeOutput> {
        let _ = (kind, req, trace_id);
        Box::pin(async { Err(Status::unimplemented("change_message")) })
    }
}

/// Which change [`LogicApi::change_message`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Recall,
    Edit,
    Delete,
}

/// `LogicInt` over gRPC. The channel connects lazily and reconnects by itself, so conn starts
/// (and keeps its connections) while logic restarts.
#[derive(Debug, Clone)]
pub struct GrpcLogic {
    client: LogicIntClient<SecretChannel>,
    /// The standard gRPC health service on the same connection (logic serves it without the
    /// cluster secret; it says only whether logic's stores are up).
    health: HealthClient<Channel>,
    timeout: Duration,
}

impl GrpcLogic {
    /// `auth`: the cluster secret every call carries.
    pub fn new(url: &str, timeout: Duration, auth: AddSecret) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        let channel = endpoint.connect_lazy();
        Ok(Self {
            client: LogicIntClient::with_interceptor(channel.clone(), auth),
            health: HealthClient::new(channel),
            timeout,
        })
    }

    fn request<T>(&self, msg: T, trace_id: &str) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = trace_id.parse() {
            r.metadata_mut().insert(TRACE_ID_HEADER, v);
        }
        r.set_timeout(self.timeout);
        r
    }
}

macro_rules! call {
    ($self:ident, $method:ident, $req:ident, $trace:ident) => {{
        let mut client = $self.client.clone();
        let request = $self.request($req, &$trace);
        Box::pin(async move { client.$method(request).await.map(|r| r.into_inner()) })
    }};
}

impl LogicApi for GrpcLogic {
    fn sign_in(&self, req: SignInReq, trace_id: String) -> LogicFuture<SignInResp> {
        call!(self, sign_in, req, trace_id)
    }
    fn sync(&self, req: SyncReq, trace_id: String) -> LogicFuture<SyncResp> {
        call!(self, sync, req, trace_id)
    }
    fn message_ack(&self, req: MessageAckReq, trace_id: String) -> LogicFuture<MessageAckResp> {
        call!(self, message_ack, req, trace_id)
    }
    fn offline(&self, req: OfflineReq, trace_id: String) -> LogicFuture<OfflineResp> {
        call!(self, offline, req, trace_id)
    }
    fn send_message(
        &self,
        req: IntSendMessageReq,
        trace_id: String,
    ) -> LogicFuture<SendMessageResp> {
        call!(self, send_message, req, trace_id)
    }
    fn group_sync(&self, req: GroupSyncReq, trace_id: String) -> LogicFuture<GroupSyncResp> {
        call!(self, group_sync, req, trace_id)
    }
    fn restore_routes(
        &self,
        req: RestoreRoutesReq,
        trace_id: String,
    ) -> LogicFuture<RestoreRoutesResp> {
        call!(self, restore_routes, req, trace_id)
    }
    fn get_conversations(
        &self,
        req: IntGetConversationsReq,
        trace_id: String,
    ) -> LogicFuture<GetConversationsOutput> {
        call!(self, get_conversations, req, trace_id)
    }
    fn update_conversation(
        &self,
        req: IntUpdateConversationReq,
        trace_id: String,
    ) -> LogicFuture<Conversation> {
        call!(self, update_conversation, req, trace_id)
    }
    fn mark_read(&self, req: IntMarkReadReq, trace_id: String) -> LogicFuture<Conversation> {
        call!(self, mark_read, req, trace_id)
    }
    fn ping(&self) -> LogicFuture<bool> {
        let mut health = self.health.clone();
        let mut request = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        request.set_timeout(self.timeout);
        Box::pin(async move {
            let r = health.check(request).await?.into_inner();
            Ok(r.status == ServingStatus::Serving as i32)
        })
    }
    fn get_history(
        &self,
        req: IntGetHistoryReq,
        trace_id: String,
    ) -> LogicFuture<GetHistoryOutput> {
        call!(self, get_history, req, trace_id)
    }
    fn change_message(
        &self,
        kind: ChangeKind,
        req: IntMessageChangeReq,
        trace_id: String,
    ) -> LogicFuture<MessageChangeOutput> {
        match kind {
            ChangeKind::Recall => call!(self, recall_message, req, trace_id),
            ChangeKind::Edit => call!(self, edit_message, req, trace_id),
            ChangeKind::Delete => call!(self, delete_message, req, trace_id),
        }
    }
}
