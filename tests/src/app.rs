//! A tenant of the test cluster: its key, users, devices, and SDK clients that record what the
//! application sees.

use crate::WAIT;
use gim_client::{
    Client, ClientApi, ClientError, ClientOptions, Credentials, Endpoint, Event, ServerApi,
    text_body,
};
use gim_common::token::{AppKey, now_secs};
use gim_proto::connect::v1::{MessageItem, ReceiverType};
use gim_proto::logic::v1::{DeviceType, Group, GroupType, SendMessageReq, SendMessageResp, User};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub struct TestApp {
    pub app_id: i64,
    pub key: AppKey,
    pub client_url: String,
    pub server_url: String,
    pub server: ServerApi,
}

impl TestApp {
    pub async fn create(pool: &sqlx::MySqlPool, client_url: String, server_url: String) -> Self {
        let (app, key) = gim_logic::create_app(pool, &crate::unique("e2e"))
            .await
            .expect("create app");
        let server = ServerApi::connect(
            &server_url,
            app.0,
            &key.server_token(app.0, now_secs(), 3600),
        )
        .expect("server api");
        TestApp {
            app_id: app.0,
            key,
            client_url,
            server_url,
            server,
        }
    }

    /// Creates users with these ids.
    pub async fn users(&self, ids: &[i64]) {
        let users: Vec<User> = ids
            .iter()
            .map(|&id| User {
                user_id: id,
                nickname: format!("user{id}"),
                ..Default::default()
            })
            .collect();
        // Retries transient failures like any business server would (MariaDB reports deadlocks
        // between concurrent imports of different apps as internal errors).
        let deadline = Instant::now() + WAIT;
        loop {
            match self.server.clone().import_users(users.clone()).await {
                Ok(_) => return,
                Err(e) if e.is_retryable() && Instant::now() < deadline => {
                    tracing::warn!(error = %e, "import users: retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("import users: {e}"),
            }
        }
    }

    /// Registers a new device and mints its token for `user`.
    pub async fn device(&self, user: i64) -> Credentials {
        let channel = gim_client::api::channel(&self.client_url).expect("channel");
        let device = ClientApi::register_device(channel, self.app_id, DeviceType::Android, "e2e")
            .await
            .expect("register device");
        Credentials {
            app_id: self.app_id,
            user_id: user,
            device_id: device,
            token: self
                .key
                .device_token(self.app_id, user, device, now_secs(), 3600),
        }
    }

    pub fn api(&self, creds: &Credentials) -> ClientApi {
        ClientApi::connect(&self.client_url, creds).expect("client api")
    }

    pub async fn group(&self, owner: i64, members: &[i64], large: bool) -> i64 {
        let g = Group {
            name: crate::unique("g"),
            r#type: if large {
                GroupType::Large
            } else {
                GroupType::Normal
            } as i32,
            ..Default::default()
        };
        self.server
            .clone()
            .create_group(g, owner, members.to_vec())
            .await
            .expect("create group")
    }

    /// Starts an SDK client for a new device of `user` and waits until it is signed in.
    pub async fn client(&self, user: i64, endpoints: Vec<Endpoint>) -> TestClient {
        let creds = self.device(user).await;
        TestClient::start(creds, endpoints).await
    }
}

/// A persistent text message request.
pub fn text_req(rt: ReceiverType, to: i64, text: &str, request_id: i64) -> SendMessageReq {
    SendMessageReq {
        receiver_type: rt as i32,
        receiver_id: to,
        message_body: Some(text_body(text)),
        is_persist: true,
        client_request_id: request_id,
        ..Default::default()
    }
}

/// Sends over gRPC, retrying transient failures with the same idempotency key (what a well-behaved
/// client does while logic restarts); business errors fail the test.
pub async fn send_retrying(api: &mut ClientApi, req: SendMessageReq) -> SendMessageResp {
    let deadline = Instant::now() + WAIT;
    loop {
        match api.send_message(req.clone()).await {
            Ok(r) => return r,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("send failed: {e}"),
        }
    }
}

/// An SDK client plus everything its application has seen so far.
pub struct TestClient {
    pub client: std::sync::Arc<Client>,
    pub creds: Credentials,
    events: mpsc::Receiver<Event>,
    /// Messages in delivery order.
    pub messages: Vec<MessageItem>,
    pub connects: usize,
    pub kicked: Option<String>,
    pub failed: Option<String>,
}

impl TestClient {
    pub async fn start(creds: Credentials, endpoints: Vec<Endpoint>) -> TestClient {
        let (client, events) = Client::start(ClientOptions::new(endpoints, creds.clone()));
        let client = std::sync::Arc::new(client);
        let mut c = TestClient {
            client,
            creds,
            events,
            messages: Vec::new(),
            connects: 0,
            kicked: None,
            failed: None,
        };
        c.wait_until(|c| c.connects > 0).await;
        c
    }

    pub fn user(&self) -> i64 {
        self.creds.user_id
    }

    fn absorb(&mut self, ev: Event) {
        match ev {
            Event::Connected { .. } => self.connects += 1,
            Event::Message(m) => self.messages.push(m),
            Event::Disconnected { .. } => {}
            Event::Kicked { reason } => self.kicked = Some(reason),
            Event::Failed(e) => self.failed = Some(e.to_string()),
        }
    }

    /// Takes events until `done` holds; panics after [`WAIT`].
    pub async fn wait_until(&mut self, done: impl Fn(&TestClient) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            if let Some(f) = &self.failed {
                panic!("user {}: client failed: {f}", self.user());
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(ev)) => self.absorb(ev),
                Ok(None) => panic!("user {}: client stopped", self.user()),
                Err(_) => panic!(
                    "user {}: condition not met within {WAIT:?}; saw {} messages: {:?}",
                    self.user(),
                    self.messages.len(),
                    self.messages
                        .iter()
                        .map(|m| (m.seq, crate::text_of(m)))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits until a message with this text was seen.
    pub async fn wait_text(&mut self, text: &str) -> MessageItem {
        self.wait_until(|c| c.messages.iter().any(|m| crate::text_of(m) == text))
            .await;
        self.messages
            .iter()
            .find(|m| crate::text_of(m) == text)
            .cloned()
            .expect("present")
    }

    /// Waits until every text was seen.
    pub async fn wait_all(&mut self, texts: &[String]) {
        self.wait_until(|c| {
            texts
                .iter()
                .all(|t| c.messages.iter().any(|m| &crate::text_of(m) == t))
        })
        .await
    }

    /// Sends a text over the long connection.
    pub async fn send_text(
        &self,
        rt: ReceiverType,
        to: i64,
        text: &str,
    ) -> Result<gim_proto::connect::v1::SendMessageOutput, ClientError> {
        self.client
            .send(gim_proto::connect::v1::SendMessageInput {
                receiver_type: rt as i32,
                receiver_id: to,
                message_body: Some(text_body(text)),
                is_persist: true,
                ..Default::default()
            })
            .await
    }
}
