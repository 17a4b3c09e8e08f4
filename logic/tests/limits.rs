//! Rate limits and quotas (issue 19 item 3), on the test MariaDB and Redis: a user's sends over
//! its app's rate get 1011 with a retry-after (every send path: 1:1 and group lists, large
//! groups, not persisted), under it they pass, other users and business sends are not affected;
//! the defaults come from config; a change through the API reaches another logic process
//! within seconds; refusals are counted per app in /metrics.

mod common;

use common::*;
use gim_common::{GimCode, GimError};
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;
use std::time::Duration;

/// 1011's retry-after, or None for a success (panics on another error).
fn limited<T>(r: Result<T, tonic::Status>) -> Option<i64> {
    match r {
        Ok(_) => None,
        Err(s) => {
            let e = GimError::from_status(&s).unwrap_or_else(|| panic!("{s:?}"));
            assert_eq!(e.code, GimCode::RateLimited, "{s:?}");
            assert_eq!(s.code(), tonic::Code::ResourceExhausted);
            Some(e.retry_after_ms)
        }
    }
}

async fn set_limits(ctx: &Ctx, send_per_sec: i64, send_burst: i64) -> pb::AppLimits {
    let mut s = ctx.server.clone();
    s.set_app_limits(ctx.sreq(pb::SetAppLimitsReq {
        limits: Some(pb::AppLimits {
            send_per_sec,
            send_burst,
        }),
    }))
    .await
    .unwrap()
    .into_inner()
    .effective
    .unwrap()
}

#[tokio::test]
async fn sends_over_the_users_rate_get_1011_with_retry_after_and_under_it_pass() {
    let ctx = Ctx::start().await;
    ctx.import_users(&[1, 2, 3]).await;
    let (d1, d3) = (ctx.register_device().await, ctx.register_device().await);
    // One per second, three at once.
    let eff = set_limits(&ctx, 1, 3).await;
    assert_eq!((eff.send_per_sec, eff.send_burst), (1, 3));
    let send =
        |user, device, req_id| ctx.send_text(user, device, ReceiverType::User, 2, "hi", req_id);
    for i in 0..3 {
        assert_eq!(
            limited(send(1, d1, 0).await),
            None,
            "send {i} is within the burst"
        );
    }
    let wait = limited(send(1, d1, 0).await).expect("the fourth is over the rate");
    assert!((1..=1000).contains(&wait), "retry after {wait} ms");
    // A request id does not get around it (the refusal sets no mark), nor do other paths.
    assert!(limited(send(1, d1, 77).await).is_some());
    let mut not_persisted = send_req(ReceiverType::User, 2, "typing", 0);
    not_persisted.is_persist = false;
    let mut c = ctx.client.clone();
    assert!(limited(c.send_message(ctx.creq(not_persisted, 1, d1)).await).is_some());
    let gid = c
        .create_group(ctx.creq(
            pb::CreateGroupReq {
                group: Some(pb::Group {
                    name: "big".into(),
                    r#type: pb::GroupType::Large as i32,
                    ..Default::default()
                }),
                member_ids: vec![2],
            },
            1,
            d1,
        ))
        .await
        .unwrap()
        .into_inner()
        .group_id;
    let r = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, gid, "x", 0)
        .await;
    assert!(limited(r).is_some());
    // Another user, and the app's business server, are not limited by user 1's sends.
    assert_eq!(limited(send(3, d3, 0).await), None);
    let mut s = ctx.server.clone();
    for _ in 0..5 {
        let r = s
            .send_message(ctx.sreq(send_req(ReceiverType::User, 2, "b", 0)))
            .await;
        assert_eq!(limited(r), None);
    }
    // After the wait, one more fits.
    tokio::time::sleep(Duration::from_millis(wait as u64 + 1000)).await;
    assert_eq!(limited(send(1, d1, 77).await), None);
    // The refusals are counted for this app.
    let (_, metrics) = http_get(ctx.logic.admin_addr, "/metrics").await;
    let line = format!(
        "gim_logic_rate_limited_total{{app=\"{}\",limit=\"send\"}}",
        ctx.app.0
    );
    let n: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(line.as_str()))
        .unwrap_or_else(|| panic!("{line} not in /metrics"))
        .trim()
        .parse()
        .unwrap();
    assert!(n >= 4, "{n}");
}

#[tokio::test]
async fn an_app_without_limits_takes_the_config_defaults_and_minus_one_lifts_them() {
    let mut cfg = test_config();
    cfg.logic.send_per_sec = 1;
    cfg.logic.send_burst = 2;
    let ctx = Ctx::start_with(cfg).await;
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    let mut s = ctx.server.clone();
    let got = s
        .get_app_limits(ctx.sreq(pb::GetAppLimitsReq {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.set.unwrap(), pb::AppLimits::default());
    assert_eq!(got.effective.unwrap().send_per_sec, 1);
    let send = || ctx.send_text(1, d1, ReceiverType::User, 2, "hi", 0);
    assert_eq!(limited(send().await), None);
    assert_eq!(limited(send().await), None);
    assert!(limited(send().await).is_some());
    let eff = set_limits(&ctx, -1, 0).await;
    assert_eq!(eff.send_per_sec, -1);
    for _ in 0..10 {
        assert_eq!(limited(send().await), None);
    }
    // Out of range: 1006.
    let r = s
        .set_app_limits(ctx.sreq(pb::SetAppLimitsReq {
            limits: Some(pb::AppLimits {
                send_per_sec: -5,
                send_burst: 0,
            }),
        }))
        .await;
    assert_eq!(code(r), GimCode::BadRequest);
}

/// The app's limits are cached for a minute; a change through one logic process reaches
/// another within seconds through the invalidation channel.
#[tokio::test]
async fn a_limit_changed_through_the_api_reaches_another_logic_process_within_seconds() {
    let ctx = Ctx::start().await;
    let other = gim_logic::start(ctx.cfg.clone(), ctx.shutdown.clone())
        .await
        .unwrap();
    let other_client =
        pb::logic_client_ext_client::LogicClientExtClient::new(channel(other.client_addr).await);
    ctx.import_users(&[1, 2]).await;
    let d1 = ctx.register_device().await;
    let send = || {
        let mut c = other_client.clone();
        let req = ctx.creq(send_req(ReceiverType::User, 2, "x", 0), 1, d1);
        async move { c.send_message(req).await }
    };
    // No limit, before the other process reads the app's row; then it caches it: what follows
    // is refused only once the change reaches it.
    set_limits(&ctx, -1, 0).await;
    for _ in 0..3 {
        assert_eq!(limited(send().await), None);
    }
    let started = std::time::Instant::now();
    set_limits(&ctx, 1, 1).await;
    eventually("the other process applies the new limit", || async {
        // Two at once: the second is over one per second with a burst of one.
        let _ = send().await;
        limited(send().await).map(|_| ())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
}
