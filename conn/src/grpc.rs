//! `ConnInt`: pushes from logic into local connection queues.
//!
//! Every method only encodes and queues: it never waits for a socket, so one slow client cannot
//! slow a push to the others (its queue overflows and it is closed instead). A message is encoded
//! once per distinct (message, seq) and the same bytes are shared by every connection it goes to.

use crate::coalesce::{Coalescer, Offered};
use crate::hub::{Control, Hub, Push};
use crate::metrics::Metrics;
use crate::wire;
use bytes::Bytes;
use gim_common::{AppId, ConnId, DeviceId, GimError, GroupId, UserId};
use gim_proto::conn::v1::conn_int_server::ConnInt;
use gim_proto::conn::v1::{
    BroadcastAppReq, BroadcastAppResp, BroadcastLargeGroupReq, BroadcastLargeGroupResp,
    CloseConnReq, CloseConnResp, CloseConnsReq, CloseConnsResp, DeliverBatchReq, DeliverBatchResp,
    DeliverMessageReq, DeliverMessageResp, UpdateLargeGroupMembersReq, UpdateLargeGroupMembersResp,
};
use gim_proto::connect::v1::MessageItem;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::debug;

#[derive(Debug, Clone)]
pub struct ConnIntService {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    large_groups: Arc<Coalescer>,
}

impl ConnIntService {
    /// `large_group_window`: how long a busy large group's messages are held to go out together
    /// (see [`crate::coalesce`]); zero sends each at once.
    pub fn new(hub: Arc<Hub>, metrics: Arc<Metrics>, large_group_window: Duration) -> Self {
        let large_groups = Coalescer::new(hub.clone(), large_group_window);
        Self {
            hub,
            metrics,
            large_groups,
        }
    }
}

fn trace_of<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(gim_common::TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn frame(item: Option<&MessageItem>) -> Result<Bytes, Status> {
    let item = item.ok_or_else(|| GimError::bad_request("message", "missing").to_status())?;
    wire::push_frame(item).map_err(|len| {
        GimError::bad_request("message", format!("{len} bytes does not fit one frame")).to_status()
    })
}

fn queued(p: Push) -> bool {
    p == Push::Queued
}

#[tonic::async_trait]
impl ConnInt for ConnIntService {
    async fn deliver_message(
        &self,
        request: Request<DeliverMessageReq>,
    ) -> Result<Response<DeliverMessageResp>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let f = frame(r.message.as_ref())?;
        let p = self
            .hub
            .deliver(AppId(r.app_id), DeviceId(r.device_id), ConnId(r.conn_id), f);
        self.metrics.push_observe("deliver_message", started);
        Ok(Response::new(DeliverMessageResp {
            delivered: queued(p),
        }))
    }

    async fn deliver_batch(
        &self,
        request: Request<DeliverBatchReq>,
    ) -> Result<Response<DeliverBatchResp>, Status> {
        let started = Instant::now();
        let trace_id = trace_of(&request);
        let r = request.into_inner();
        let mut cache: Vec<Option<Bytes>> = vec![None; r.messages.len()];
        let (mut delivered, mut missing) = (0u32, 0u32);
        // One bad message (out of range, too large for a frame) fails its own targets only: the
        // others in the batch are other sends' messages and are delivered.
        let mut bad = 0u32;
        for t in &r.targets {
            let i = t.message_index as usize;
            let Some(item) = r.messages.get(i) else {
                bad += 1;
                continue;
            };
            let bytes = if t.seq != 0 && t.seq != item.seq {
                // Write diffusion: this recipient's copy has its own seq.
                let copy = MessageItem {
                    seq: t.seq,
                    ..item.clone()
                };
                match frame(Some(&copy)) {
                    Ok(b) => b,
                    Err(_) => {
                        bad += 1;
                        continue;
                    }
                }
            } else {
                match &cache[i] {
                    Some(b) => b.clone(),
                    None => match frame(Some(item)) {
                        Ok(b) => {
                            cache[i] = Some(b.clone());
                            b
                        }
                        Err(_) => {
                            bad += 1;
                            continue;
                        }
                    },
                }
            };
            let p = self.hub.deliver(
                AppId(t.app_id),
                DeviceId(t.device_id),
                ConnId(t.conn_id),
                bytes,
            );
            if queued(p) {
                delivered += 1;
            } else {
                missing += 1;
            }
        }
        if bad > 0 {
            tracing::warn!(%trace_id, bad, "deliver batch: targets of malformed messages skipped");
        }
        missing += bad;
        debug!(%trace_id, delivered, missing, "deliver batch");
        self.metrics.push_observe("deliver_batch", started);
        Ok(Response::new(DeliverBatchResp { delivered, missing }))
    }

    async fn broadcast_large_group(
        &self,
        request: Request<BroadcastLargeGroupReq>,
    ) -> Result<Response<BroadcastLargeGroupResp>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let f = frame(r.message.as_ref())?;
        let delivered = match self.large_groups.offer(
            AppId(r.app_id),
            GroupId(r.group_id),
            f,
            r.exclude_device_id,
        ) {
            Offered::Sent(n) | Offered::Held(n) => n,
        };
        self.metrics.push_observe("broadcast_large_group", started);
        Ok(Response::new(BroadcastLargeGroupResp { delivered }))
    }

    async fn update_large_group_members(
        &self,
        request: Request<UpdateLargeGroupMembersReq>,
    ) -> Result<Response<UpdateLargeGroupMembersResp>, Status> {
        let r = request.into_inner();
        self.hub.update_group(
            AppId(r.app_id),
            GroupId(r.group_id),
            &r.joined_user_ids,
            &r.left_user_ids,
            r.dissolved,
        );
        Ok(Response::new(UpdateLargeGroupMembersResp {}))
    }

    async fn broadcast_app(
        &self,
        request: Request<BroadcastAppReq>,
    ) -> Result<Response<BroadcastAppResp>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let f = frame(r.message.as_ref())?;
        let mut delivered = 0;
        for c in self.hub.app_conns(AppId(r.app_id)) {
            if queued(c.push(f.clone())) {
                delivered += 1;
            }
        }
        self.metrics.push_observe("broadcast_app", started);
        Ok(Response::new(BroadcastAppResp { delivered }))
    }

    async fn close_conn(
        &self,
        request: Request<CloseConnReq>,
    ) -> Result<Response<CloseConnResp>, Status> {
        let trace_id = trace_of(&request);
        let r = request.into_inner();
        let conn = self
            .hub
            .find(AppId(r.app_id), DeviceId(r.device_id), ConnId(r.conn_id));
        let closed = match conn {
            Some(c) => {
                let reason = if r.reason.is_empty() {
                    "signed in elsewhere".to_string()
                } else {
                    r.reason
                };
                c.control(Control::Kick(reason))
            }
            None => false,
        };
        if closed {
            debug!(%trace_id, conn_id = r.conn_id, device_id = r.device_id, "kicked");
        } else {
            // Routine, not an operator's concern: the old connection of a device signing in
            // again has usually closed already (one per sign-in in a reconnect storm).
            debug!(%trace_id, conn_id = r.conn_id, "close for an unknown connection");
        }
        Ok(Response::new(CloseConnResp { closed }))
    }

    async fn close_conns(
        &self,
        request: Request<CloseConnsReq>,
    ) -> Result<Response<CloseConnsResp>, Status> {
        let trace_id = trace_of(&request);
        let r = request.into_inner();
        let app = AppId(r.app_id);
        let conns = if r.user_id == 0 {
            self.hub.app_conns(app)
        } else {
            self.hub.user_conns(app, UserId(r.user_id))
        };
        let reason = if r.reason.is_empty() {
            "signed out".to_string()
        } else {
            r.reason
        };
        let mut closed = 0;
        for c in conns {
            let device_ok = r.user_id == 0
                || r.device_id == 0
                || c.identity().is_some_and(|i| i.device.0 == r.device_id);
            if device_ok && c.control(Control::Kick(reason.clone())) {
                closed += 1;
            }
        }
        debug!(%trace_id, app_id = r.app_id, user_id = r.user_id, device_id = r.device_id, closed, "closed by logic");
        Ok(Response::new(CloseConnsResp { closed }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Identity;
    use gim_common::UserId;
    use gim_proto::conn::v1::DeliverTarget;
    use gim_proto::connect::v1::{Message, Output};
    use prost::Message as _;

    fn seq_of(b: Bytes) -> i64 {
        let out = Output::decode(b).unwrap();
        Message::decode(out.data).unwrap().message.unwrap().seq
    }

    /// A sign-in storm closes many already-gone connections: none of that may log at WARN.
    #[test]
    fn close_for_an_unknown_connection_logs_no_warning() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tracing_subscriber::layer::SubscriberExt;
        struct Warnings(Arc<AtomicUsize>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
            fn on_event(
                &self,
                e: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                if *e.metadata().level() <= tracing::Level::WARN {
                    self.0.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let n = Arc::new(AtomicUsize::new(0));
        let sub = tracing_subscriber::registry().with(Warnings(n.clone()));
        tracing::subscriber::with_default(sub, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let svc = ConnIntService::new(
                Arc::new(Hub::new(8)),
                Arc::new(Metrics::new()),
                Duration::ZERO,
            );
            for conn_id in 1..=100 {
                let req = CloseConnReq {
                    app_id: 1,
                    device_id: 2,
                    conn_id,
                    reason: String::new(),
                };
                let r = rt.block_on(svc.close_conn(Request::new(req))).unwrap();
                assert!(!r.into_inner().closed);
            }
        });
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }

    /// A message too large for a frame and a target naming no message fail only their own
    /// targets; the batch's other message is still delivered.
    #[tokio::test]
    async fn one_bad_message_in_a_batch_fails_only_its_own_targets() {
        let hub = Arc::new(Hub::new(8));
        let svc = ConnIntService::new(hub.clone(), Arc::new(Metrics::new()), Duration::ZERO);
        let a = hub.register();
        let who = Identity {
            app: AppId(1),
            user: UserId(1),
            device: DeviceId(1),
        };
        hub.signed_in(&a, who, &[]);
        let target = |index, seq| DeliverTarget {
            app_id: 1,
            device_id: 1,
            conn_id: a.id.get(),
            message_index: index,
            seq,
        };
        let huge = MessageItem {
            seq: 1,
            to_user_ids: vec![7; 70_000],
            ..Default::default()
        };
        let fine = MessageItem {
            seq: 2,
            ..Default::default()
        };
        let req = DeliverBatchReq {
            messages: vec![huge, fine],
            targets: vec![target(0, 0), target(0, 5), target(9, 0), target(1, 0)],
        };
        let resp = svc
            .deliver_batch(Request::new(req))
            .await
            .expect("the batch is not failed by one message")
            .into_inner();
        assert_eq!((resp.delivered, resp.missing), (1, 3));
        assert_eq!(seq_of(a.pop().unwrap()), 2);
        assert!(a.pop().is_none());
    }

    #[tokio::test]
    async fn batch_applies_per_recipient_seq_and_counts_missing() {
        let hub = Arc::new(Hub::new(8));
        let svc = ConnIntService::new(hub.clone(), Arc::new(Metrics::new()), Duration::ZERO);
        let a = hub.register();
        let b = hub.register();
        for (c, d) in [(&a, 1), (&b, 2)] {
            let who = Identity {
                app: AppId(1),
                user: UserId(d),
                device: DeviceId(d),
            };
            hub.signed_in(c, who, &[5]);
        }
        let target = |c: &crate::hub::Conn, d, seq| DeliverTarget {
            app_id: 1,
            device_id: d,
            conn_id: c.id.get(),
            message_index: 0,
            seq,
        };
        let req = DeliverBatchReq {
            messages: vec![MessageItem {
                seq: 3,
                ..Default::default()
            }],
            targets: vec![target(&a, 1, 0), target(&b, 2, 9), target(&b, 7, 9)],
        };
        let resp = svc
            .deliver_batch(Request::new(req))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((resp.delivered, resp.missing), (2, 1));
        assert_eq!(seq_of(a.pop().unwrap()), 3);
        assert_eq!(seq_of(b.pop().unwrap()), 9);

        let req = BroadcastLargeGroupReq {
            app_id: 1,
            group_id: 5,
            message: Some(MessageItem::default()),
            exclude_device_id: 1,
        };
        let resp = svc
            .broadcast_large_group(Request::new(req))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.delivered, 1, "the sender's device gets no echo");
        assert!(a.pop().is_none() && b.pop().is_some());

        let close = CloseConnReq {
            app_id: 1,
            device_id: 2,
            conn_id: b.id.get(),
            reason: String::new(),
        };
        let resp = svc.close_conn(Request::new(close)).await.unwrap();
        assert!(resp.into_inner().closed);
        assert!(matches!(b.take_control(), Some(Control::Kick(_))));
    }
}
