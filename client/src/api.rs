//! Typed wrappers for the gRPC APIs: [`ClientApi`] (`LogicClientExt`, as a user's device) and
//! [`ServerApi`] (`LogicServerExt`, as the app's business server). Credentials go into every call's
//! metadata by an interceptor; each call gets a fresh `x-trace-id` so a failure can be found in the
//! server logs; failures come back as [`ClientError`] carrying the gim code.

use crate::{ClientError, Credentials};
use gim_proto::connect::v1::{
    Conversation, GetConversationsInput, GetConversationsOutput, GetHistoryInput, GetHistoryOutput,
    MarkReadInput, MessageBody, MessageChangeInput, MessageChangeOutput, MessageContent,
    MessageType, ReceiverType, Text, UpdateConversationInput, message_content,
};
use gim_proto::logic::v1::logic_client_ext_client::LogicClientExtClient;
use gim_proto::logic::v1::logic_server_ext_client::LogicServerExtClient;
use gim_proto::logic::v1::*;
use std::time::Duration;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint};

/// Adds fixed credential headers and a fresh trace id to every call.
#[derive(Clone)]
pub struct AuthInterceptor {
    headers: Vec<(&'static str, AsciiMetadataValue)>,
}

impl std::fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthInterceptor(<credentials>)")
    }
}

impl AuthInterceptor {
    fn new(pairs: &[(&'static str, String)]) -> Result<Self, ClientError> {
        let mut headers = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let value = v
                .parse()
                .map_err(|_| ClientError::Protocol(format!("metadata {k} is not ASCII")))?;
            headers.push((*k, value));
        }
        Ok(Self { headers })
    }

    /// Metadata of a device: `app_id`, `user_id`, `device_id`, `token`.
    pub fn device(c: &Credentials) -> Result<Self, ClientError> {
        Self::new(&[
            ("app_id", c.app_id.to_string()),
            ("user_id", c.user_id.to_string()),
            ("device_id", c.device_id.to_string()),
            ("token", c.token.clone()),
        ])
    }

    /// Metadata of a business server: `app_id` and a server token.
    pub fn server(app_id: i64, server_token: &str) -> Result<Self, ClientError> {
        Self::new(&[
            ("app_id", app_id.to_string()),
            ("token", server_token.to_string()),
        ])
    }

    fn apply(&self, md: &mut MetadataMap) {
        for (k, v) in &self.headers {
            md.insert(*k, v.clone());
        }
        if let Ok(v) = gim_common::telemetry::new_trace_id().parse() {
            md.insert(gim_common::TRACE_ID_HEADER, v);
        }
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.apply(req.metadata_mut());
        Ok(req)
    }
}

/// Opens a lazily connected channel to `url` (`http://host:port`): the first call connects, and a
/// restarted server is reconnected to on the next call.
pub fn channel(url: &str) -> Result<Channel, ClientError> {
    let ep = GrpcEndpoint::from_shared(url.to_string()).map_err(|e| ClientError::Connect {
        endpoint: url.to_string(),
        reason: e.to_string(),
    })?;
    Ok(ep
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

/// A text message body.
pub fn text_body(text: impl Into<String>) -> MessageBody {
    MessageBody {
        message_type: MessageType::Text as i32,
        message_content: Some(MessageContent {
            content: Some(message_content::Content::Text(Text { text: text.into() })),
        }),
    }
}

/// The text of a text body, if it is one.
pub fn body_text(body: Option<&MessageBody>) -> Option<&str> {
    match body?.message_content.as_ref()?.content.as_ref()? {
        message_content::Content::Text(t) => Some(&t.text),
        _ => None,
    }
}

/// `LogicClientExt` as one user's device.
#[derive(Debug, Clone)]
pub struct ClientApi {
    inner: LogicClientExtClient<InterceptedService<Channel, AuthInterceptor>>,
}

impl ClientApi {
    pub fn new(channel: Channel, creds: &Credentials) -> Result<Self, ClientError> {
        Ok(Self {
            inner: LogicClientExtClient::with_interceptor(channel, AuthInterceptor::device(creds)?),
        })
    }

    pub fn connect(url: &str, creds: &Credentials) -> Result<Self, ClientError> {
        Self::new(channel(url)?, creds)
    }

    /// The generated client, for calls without a wrapper.
    pub fn raw(
        &mut self,
    ) -> &mut LogicClientExtClient<InterceptedService<Channel, AuthInterceptor>> {
        &mut self.inner
    }

    /// Registers a device (no auth needed) and returns its id.
    pub async fn register_device(
        channel: Channel,
        app_id: i64,
        kind: DeviceType,
        model: &str,
    ) -> Result<i64, ClientError> {
        let mut c = LogicClientExtClient::new(channel);
        let resp = c
            .register_device(RegisterDeviceReq {
                app_id,
                r#type: kind as i32,
                brand: "gim".into(),
                model: model.into(),
                system_version: std::env::consts::OS.into(),
                sdk_version: env!("CARGO_PKG_VERSION").into(),
            })
            .await?;
        Ok(resp.into_inner().device_id)
    }

    pub async fn send_message(
        &mut self,
        req: SendMessageReq,
    ) -> Result<SendMessageResp, ClientError> {
        Ok(self.inner.send_message(req).await?.into_inner())
    }

    /// Sends a persistent text message to a user.
    pub async fn send_text_to_user(
        &mut self,
        user_id: i64,
        text: &str,
        client_request_id: i64,
    ) -> Result<SendMessageResp, ClientError> {
        self.send_message(SendMessageReq {
            receiver_type: ReceiverType::User as i32,
            receiver_id: user_id,
            message_body: Some(text_body(text)),
            is_persist: true,
            client_request_id,
            ..Default::default()
        })
        .await
    }

    pub async fn add_user(&mut self, user: User) -> Result<(), ClientError> {
        self.inner.add_user(AddUserReq { user: Some(user) }).await?;
        Ok(())
    }

    pub async fn get_user(&mut self, user_id: i64) -> Result<User, ClientError> {
        let r = self
            .inner
            .get_user(GetUserReq { user_id })
            .await?
            .into_inner();
        r.user
            .ok_or_else(|| ClientError::Protocol("GetUser returned no user".into()))
    }

    pub async fn create_group(
        &mut self,
        group: Group,
        member_ids: Vec<i64>,
    ) -> Result<i64, ClientError> {
        let r = self
            .inner
            .create_group(CreateGroupReq {
                group: Some(group),
                member_ids,
            })
            .await?;
        Ok(r.into_inner().group_id)
    }

    pub async fn get_group(&mut self, group_id: i64) -> Result<Group, ClientError> {
        let r = self
            .inner
            .get_group(GetGroupReq { group_id })
            .await?
            .into_inner();
        r.group
            .ok_or_else(|| ClientError::Protocol("GetGroup returned no group".into()))
    }

    pub async fn get_user_groups(&mut self) -> Result<Vec<Group>, ClientError> {
        Ok(self
            .inner
            .get_user_groups(GetUserGroupsReq {})
            .await?
            .into_inner()
            .groups)
    }

    pub async fn add_group_members(
        &mut self,
        group_id: i64,
        user_ids: Vec<i64>,
    ) -> Result<Vec<i64>, ClientError> {
        let r = self
            .inner
            .add_group_member(AddGroupMemberReq { group_id, user_ids })
            .await?;
        Ok(r.into_inner().user_ids)
    }

    pub async fn delete_group_member(
        &mut self,
        group_id: i64,
        user_id: i64,
    ) -> Result<(), ClientError> {
        self.inner
            .delete_group_member(DeleteGroupMemberReq { group_id, user_id })
            .await?;
        Ok(())
    }

    /// Blocks a user: its 1:1 sends to this user get 1020 ([`gim_common::GimCode::Blocked`]).
    pub async fn block_user(&mut self, user_id: i64) -> Result<(), ClientError> {
        self.inner.block_user(BlockUserReq { user_id }).await?;
        Ok(())
    }

    pub async fn unblock_user(&mut self, user_id: i64) -> Result<(), ClientError> {
        self.inner.unblock_user(UnblockUserReq { user_id }).await?;
        Ok(())
    }

    /// The users this user has blocked, in id order.
    pub async fn list_blocked_users(&mut self) -> Result<Vec<i64>, ClientError> {
        Ok(self
            .inner
            .list_blocked_users(ListBlockedUsersReq {})
            .await?
            .into_inner()
            .user_ids)
    }
}

impl ClientApi {
    /// The conversations changed after `since_version` (0: all), plus every large group.
    pub async fn get_conversations(
        &mut self,
        since_version: i64,
        limit: i32,
    ) -> Result<GetConversationsOutput, ClientError> {
        Ok(self
            .inner
            .get_conversations(GetConversationsInput {
                since_version,
                limit,
            })
            .await?
            .into_inner())
    }

    /// Pin, mute or delete a conversation (only what the input's `set_*` / `delete` name).
    pub async fn update_conversation(
        &mut self,
        input: UpdateConversationInput,
    ) -> Result<Conversation, ClientError> {
        Ok(self.inner.update_conversation(input).await?.into_inner())
    }

    /// Marks a conversation read up to `read_seq`.
    pub async fn mark_read(
        &mut self,
        peer_type: ReceiverType,
        peer_id: i64,
        read_seq: i64,
    ) -> Result<Conversation, ClientError> {
        Ok(self
            .inner
            .mark_read(MarkReadInput {
                peer_type: peer_type as i32,
                peer_id,
                read_seq,
            })
            .await?
            .into_inner())
    }

    /// One conversation's messages with seq below `before_seq` (0: the newest), newest first.
    pub async fn get_history(
        &mut self,
        peer_type: ReceiverType,
        peer_id: i64,
        before_seq: i64,
        limit: i32,
    ) -> Result<GetHistoryOutput, ClientError> {
        Ok(self
            .inner
            .get_history(GetHistoryInput {
                peer_type: peer_type as i32,
                peer_id,
                before_seq,
                limit,
            })
            .await?
            .into_inner())
    }

    /// Recalls a message from every list (the sender within the app's window, a group admin).
    pub async fn recall_message(
        &mut self,
        message_id: i64,
    ) -> Result<MessageChangeOutput, ClientError> {
        let req = MessageChangeInput {
            message_id,
            message_body: None,
        };
        Ok(self.inner.recall_message(req).await?.into_inner())
    }

    /// Replaces a message's body in every list (who may: as recall).
    pub async fn edit_message(
        &mut self,
        message_id: i64,
        body: MessageBody,
    ) -> Result<MessageChangeOutput, ClientError> {
        let req = MessageChangeInput {
            message_id,
            message_body: Some(body),
        };
        Ok(self.inner.edit_message(req).await?.into_inner())
    }

    /// Hides a message in the caller's own list only (delete-for-me).
    pub async fn delete_message(
        &mut self,
        message_id: i64,
    ) -> Result<MessageChangeOutput, ClientError> {
        let req = MessageChangeInput {
            message_id,
            message_body: None,
        };
        Ok(self.inner.delete_message(req).await?.into_inner())
    }
}

/// `LogicServerExt` as the app's business server.
#[derive(Debug, Clone)]
pub struct ServerApi {
    inner: LogicServerExtClient<InterceptedService<Channel, AuthInterceptor>>,
}

impl ServerApi {
    pub fn new(channel: Channel, app_id: i64, server_token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            inner: LogicServerExtClient::with_interceptor(
                channel,
                AuthInterceptor::server(app_id, server_token)?,
            ),
        })
    }

    pub fn connect(url: &str, app_id: i64, server_token: &str) -> Result<Self, ClientError> {
        Self::new(channel(url)?, app_id, server_token)
    }

    /// The generated client, for calls without a wrapper.
    pub fn raw(
        &mut self,
    ) -> &mut LogicServerExtClient<InterceptedService<Channel, AuthInterceptor>> {
        &mut self.inner
    }

    pub async fn send_message(
        &mut self,
        req: SendMessageReq,
    ) -> Result<SendMessageResp, ClientError> {
        Ok(self.inner.send_message(req).await?.into_inner())
    }

    pub async fn import_users(&mut self, users: Vec<User>) -> Result<ImportUsersResp, ClientError> {
        Ok(self
            .inner
            .import_users(ImportUsersReq { users })
            .await?
            .into_inner())
    }

    pub async fn get_user(&mut self, user_id: i64) -> Result<User, ClientError> {
        let r = self
            .inner
            .get_user(GetUserReq { user_id })
            .await?
            .into_inner();
        r.user
            .ok_or_else(|| ClientError::Protocol("GetUser returned no user".into()))
    }

    pub async fn create_group(
        &mut self,
        group: Group,
        owner_id: i64,
        member_ids: Vec<i64>,
    ) -> Result<i64, ClientError> {
        let r = self
            .inner
            .create_group(ServerCreateGroupReq {
                group: Some(group),
                owner_id,
                member_ids,
            })
            .await?;
        Ok(r.into_inner().group_id)
    }

    pub async fn get_group(&mut self, group_id: i64) -> Result<Group, ClientError> {
        let r = self
            .inner
            .get_group(GetGroupReq { group_id })
            .await?
            .into_inner();
        r.group
            .ok_or_else(|| ClientError::Protocol("GetGroup returned no group".into()))
    }

    pub async fn get_group_members(
        &mut self,
        group_id: i64,
    ) -> Result<Vec<GroupMember>, ClientError> {
        Ok(self
            .inner
            .get_group_members(GetGroupMembersReq { group_id })
            .await?
            .into_inner()
            .members)
    }

    pub async fn add_group_members(
        &mut self,
        group_id: i64,
        user_ids: Vec<i64>,
    ) -> Result<Vec<i64>, ClientError> {
        let r = self
            .inner
            .add_group_member(AddGroupMemberReq { group_id, user_ids })
            .await?;
        Ok(r.into_inner().user_ids)
    }

    pub async fn delete_group_member(
        &mut self,
        group_id: i64,
        user_id: i64,
    ) -> Result<(), ClientError> {
        self.inner
            .delete_group_member(DeleteGroupMemberReq { group_id, user_id })
            .await?;
        Ok(())
    }

    pub async fn push_to_users(
        &mut self,
        req: PushToUsersReq,
    ) -> Result<PushToUsersResp, ClientError> {
        Ok(self.inner.push_to_users(req).await?.into_inner())
    }

    pub async fn broadcast(&mut self, req: BroadcastReq) -> Result<BroadcastResp, ClientError> {
        Ok(self.inner.broadcast(req).await?.into_inner())
    }

    /// Suspends the app's clients (`true`) or lifts it; returns the connections closed.
    pub async fn set_app_suspended(&mut self, suspended: bool) -> Result<u32, ClientError> {
        let r = self
            .inner
            .set_app_suspended(SetAppSuspendedReq { suspended })
            .await?;
        Ok(r.into_inner().closed)
    }

    /// Refuses every token of a user (or of one device, `device_id` non-zero) issued at or
    /// before now, and closes those live connections. Returns the cut-off (Unix seconds: mint
    /// new tokens with a later `iat`) and the connections closed.
    pub async fn force_logout(
        &mut self,
        user_id: i64,
        device_id: i64,
    ) -> Result<ForceLogoutResp, ClientError> {
        Ok(self
            .inner
            .force_logout(ForceLogoutReq { user_id, device_id })
            .await?
            .into_inner())
    }

    /// Revokes one token by its `jti` (user 0: a server token); `expires_at` is the token's
    /// `exp`; `device_id` non-zero also closes that device's connections.
    pub async fn revoke_token(&mut self, req: RevokeTokenReq) -> Result<u32, ClientError> {
        Ok(self.inner.revoke_token(req).await?.into_inner().closed)
    }

    /// Adds a public key (32 bytes) that verifies tokens naming `kid`.
    pub async fn add_app_key(
        &mut self,
        kid: &str,
        public_key: [u8; 32],
    ) -> Result<(), ClientError> {
        self.inner
            .add_app_key(AddAppKeyReq {
                kid: kid.into(),
                public_key: public_key.to_vec().into(),
            })
            .await?;
        Ok(())
    }

    pub async fn list_app_keys(&mut self) -> Result<Vec<AppKeyInfo>, ClientError> {
        Ok(self
            .inner
            .list_app_keys(ListAppKeysReq {})
            .await?
            .into_inner()
            .keys)
    }

    /// Retires a key (kid "" is the app's original one).
    pub async fn retire_app_key(&mut self, kid: &str) -> Result<(), ClientError> {
        self.inner
            .retire_app_key(RetireAppKeyReq { kid: kid.into() })
            .await?;
        Ok(())
    }

    /// The app's token rules: a maximum lifetime (0: none), and whether tokens must carry
    /// `iat` and `jti`.
    pub async fn set_token_policy(
        &mut self,
        max_token_ttl_secs: i64,
        require_token_ids: bool,
    ) -> Result<(), ClientError> {
        self.inner
            .set_token_policy(SetTokenPolicyReq {
                max_token_ttl_secs,
                require_token_ids,
            })
            .await?;
        Ok(())
    }

    /// Suspends one user (`true`) or lifts it; returns the connections closed.
    pub async fn set_user_suspended(
        &mut self,
        user_id: i64,
        suspended: bool,
    ) -> Result<u32, ClientError> {
        let r = self
            .inner
            .set_user_suspended(SetUserSuspendedReq { user_id, suspended })
            .await?;
        Ok(r.into_inner().closed)
    }

    /// Recalls any message of the app in user lists (no window).
    pub async fn recall_message(
        &mut self,
        message_id: i64,
    ) -> Result<MessageChangeOutput, ClientError> {
        let req = MessageChangeInput {
            message_id,
            message_body: None,
        };
        Ok(self.inner.recall_message(req).await?.into_inner())
    }

    /// Replaces any message's body in user lists (no window).
    pub async fn edit_message(
        &mut self,
        message_id: i64,
        body: MessageBody,
    ) -> Result<MessageChangeOutput, ClientError> {
        let req = MessageChangeInput {
            message_id,
            message_body: Some(body),
        };
        Ok(self.inner.edit_message(req).await?.into_inner())
    }

    /// How long after sending a user may recall or edit its own message (0 to a week).
    pub async fn set_recall_window(&mut self, recall_window_secs: i64) -> Result<(), ClientError> {
        self.inner
            .set_recall_window(SetRecallWindowReq { recall_window_secs })
            .await?;
        Ok(())
    }

    /// Replaces the app's rate limits (0 = the server's default, -1 = no limit); returns the
    /// limits in force.
    pub async fn set_app_limits(
        &mut self,
        limits: gim_proto::logic::v1::AppLimits,
    ) -> Result<gim_proto::logic::v1::AppLimits, ClientError> {
        let r = self
            .inner
            .set_app_limits(gim_proto::logic::v1::SetAppLimitsReq {
                limits: Some(limits),
            })
            .await?;
        Ok(r.into_inner().effective.unwrap_or_default())
    }
}
