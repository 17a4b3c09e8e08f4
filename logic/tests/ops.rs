//! Operations commands on a live store: `purge` by retention and `app export`, through the
//! binary as an operator runs them.

mod common;

use common::Ctx;
use gim_proto::connect::v1::ReceiverType;
use gim_proto::logic::v1 as pb;
use std::process::Command;

fn bin(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gim-logic"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GIM_") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .env("GIM_MYSQL__URL", common::mysql_url())
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

async fn large_group(ctx: &Ctx, owner: i64, members: Vec<i64>) -> i64 {
    let mut s = ctx.server.clone();
    s.create_group(ctx.sreq(pb::ServerCreateGroupReq {
        group: Some(pb::Group {
            name: "big".into(),
            r#type: 2,
            ..Default::default()
        }),
        owner_id: owner,
        member_ids: members,
    }))
    .await
    .unwrap()
    .into_inner()
    .group_id
}

/// Moves every row of `app` written for `message_ids` 40 days into the past.
async fn backdate(ctx: &Ctx, app: i64, message_ids: &[i64]) {
    let ids = message_ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for table in ["user_message", "group_message", "send_request"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET created_at = NOW(3) - INTERVAL 40 DAY \
             WHERE app_id = ? AND message_id IN ({ids})"
        )))
        .bind(app)
        .execute(&ctx.pool)
        .await
        .unwrap();
    }
}

async fn count(ctx: &Ctx, table: &str, app: i64) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {table} WHERE app_id = ?"
    )))
    .bind(app)
    .fetch_one(&ctx.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn purge_deletes_only_old_messages_of_the_app_and_seqs_go_on() {
    let ctx = Ctx::start().await;
    let other = Ctx::start().await;
    let (a, b) = (ctx.app.0, other.app.0);
    for c in [&ctx, &other] {
        c.import_users(&[1, 2, 3]).await;
    }
    let d1 = ctx.register_device().await;
    let big = large_group(&ctx, 1, vec![2, 3]).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let r = ctx
            .send_text(1, d1, ReceiverType::User, 2, &format!("m{i}"), 100 + i)
            .await
            .unwrap();
        ids.push(r.message_id);
    }
    let old_big = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, big, "old", 200)
        .await
        .unwrap();
    let new_big = ctx
        .send_text(1, d1, ReceiverType::LargeGroup, big, "new", 201)
        .await
        .unwrap();
    let od = other.register_device().await;
    let theirs = other
        .send_text(1, od, ReceiverType::User, 2, "other app", 1)
        .await
        .unwrap();
    // The first two 1:1 messages and one group message are old; so is the other app's.
    backdate(&ctx, a, &[ids[0], ids[1], old_big.message_id]).await;
    backdate(&other, b, &[theirs.message_id]).await;
    let before = (
        count(&ctx, "user_message", a).await,
        count(&ctx, "group_message", a).await,
        count(&ctx, "send_request", a).await,
    );
    assert_eq!(before, (8, 2, 6));

    let app = a.to_string();
    let dry = ok(&bin(&[
        "purge",
        "--older-than-days",
        "30",
        "--app",
        &app,
        "--dry-run",
    ]));
    assert!(dry.contains("user_message: would delete 4 rows"), "{dry}");
    assert!(dry.contains("group_message: would delete 1 rows"), "{dry}");
    assert!(dry.contains("send_request: would delete 3 rows"), "{dry}");
    assert_eq!(
        count(&ctx, "user_message", a).await,
        8,
        "a dry run deletes nothing"
    );

    let done = ok(&bin(&["purge", "--older-than-days", "30", "--app", &app]));
    assert!(done.contains("user_message: deleted 4 rows"), "{done}");
    assert_eq!(
        (
            count(&ctx, "user_message", a).await,
            count(&ctx, "group_message", a).await,
            count(&ctx, "send_request", a).await,
        ),
        (4, 1, 3)
    );
    // The other app's old message is not this app's to purge.
    assert_eq!(count(&other, "user_message", b).await, 2);

    // Sync from the start sees what was kept, in order; new sends go on above the old seqs.
    let texts = |msgs: &[gim_proto::connect::v1::MessageItem]| {
        msgs.iter().map(common::text_of).collect::<Vec<_>>()
    };
    let kept = ctx.sync(2, 0, 0, 0).await.messages;
    assert_eq!(texts(&kept), ["m2", "m3"]);
    let last = kept.last().unwrap().seq;
    let r = ctx
        .send_text(1, d1, ReceiverType::User, 2, "after", 300)
        .await
        .unwrap();
    let after = ctx.sync(2, 0, last, 0).await.messages;
    assert_eq!(texts(&after), ["after"]);
    assert!(after[0].seq > last && r.seq > 0);
    assert!(new_big.seq > old_big.seq);

    // Without --app, every app: the other app's old message goes too.
    ok(&bin(&["purge", "--older-than-days", "30"]));
    assert_eq!(count(&other, "user_message", b).await, 0);

    // Zero days would delete everything just written: refused before touching anything.
    let zero = bin(&["purge", "--older-than-days", "0"]);
    assert!(!zero.status.success());
    assert_eq!(count(&ctx, "user_message", a).await, 6);
}

#[tokio::test]
async fn export_writes_every_row_of_one_app_as_json_lines() {
    let ctx = Ctx::start().await;
    let other = Ctx::start().await;
    ctx.import_users(&[1, 2]).await;
    other.import_users(&[1, 2, 3]).await;
    let d1 = ctx.register_device().await;
    let sent = ctx
        .send_text(1, d1, ReceiverType::User, 2, "exported \"text\"", 1)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.jsonl");
    let app = ctx.app.0.to_string();
    let out = bin(&[
        "app",
        "export",
        "--app",
        &app,
        "--out",
        path.to_str().unwrap(),
    ]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("user: 2 rows"), "{stderr}");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let rows = |t: &str| {
        lines
            .iter()
            .filter(|l| l["table"] == t)
            .map(|l| l["row"].clone())
            .collect::<Vec<_>>()
    };
    // Only this app's rows, every table that has them.
    assert!(
        lines.iter().all(|l| l["row"]["app_id"] == ctx.app.0),
        "{text}"
    );
    assert_eq!(rows("app").len(), 1);
    assert_eq!(rows("user").len(), 2);
    assert_eq!(rows("device").len(), 1);
    let copies = rows("user_message");
    assert_eq!(copies.len(), 2);
    // The body is the stored protobuf, hex: it decodes to the text sent.
    let hex = copies[0]["body"].as_str().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let body: gim_proto::connect::v1::MessageBody = prost::Message::decode(&bytes[..]).unwrap();
    let item = gim_proto::connect::v1::MessageItem {
        message_body: Some(body),
        ..Default::default()
    };
    assert_eq!(common::text_of(&item), "exported \"text\"");
    assert_eq!(copies[0]["message_id"], sent.message_id);

    // An unknown app: an error, and no file (a failed export never leaves a partial one).
    let missing = dir.path().join("none.jsonl");
    let out = bin(&[
        "app",
        "export",
        "--app",
        "0",
        "--out",
        missing.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no app with id 0"));
    assert!(!missing.exists() && !missing.with_extension("partial").exists());
}
