//! `gim app create` through a running logic's admin API, then the key it printed in use.

use gim_common::config::LogicConfig;
use gim_common::shutdown::Shutdown;
use gim_test_support::{init, mysql_url, redis_url, unique};
use std::net::SocketAddr;
use std::process::{Command, Output};

const TOKEN: &str = "client-test-admin-token";

fn gim(args: &[&str], token: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gim"));
    c.args(args)
        .env_remove("GIMCLI_ADMIN_URL")
        .env_remove("GIMCLI_APP_ID")
        .env_remove("GIMCLI_APP_KEY");
    match token {
        Some(t) => c.env("GIMCLI_ADMIN_TOKEN", t),
        None => c.env_remove("GIMCLI_ADMIN_TOKEN"),
    };
    c.output().expect("run gim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A logic on free ports with the admin API on.
async fn logic() -> (gim_logic::LogicHandle, Shutdown) {
    init();
    let mut cfg = LogicConfig::default();
    cfg.mysql.url = mysql_url();
    cfg.mysql.max_connections = 4;
    // The CLI's tests register no conn nodes; a db of their own all the same.
    cfg.redis.url = redis_url(5);
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    cfg.logic.int_listen = any;
    cfg.logic.client_listen = any;
    cfg.logic.server_listen = any;
    cfg.logic.admin_listen = any;
    cfg.logic.admin_token = TOKEN.into();
    let pool = gim_logic::mysql_pool(&cfg.mysql).unwrap();
    gim_logic::migrate(&pool).await.unwrap();
    pool.close().await;
    let shutdown = Shutdown::new();
    let handle = gim_logic::start(cfg, shutdown.clone()).await.unwrap();
    (handle, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_an_app_through_the_admin_api() {
    let (logic, shutdown) = logic().await;
    let admin = format!("http://{}", logic.admin_addr);
    let server = format!("http://{}", logic.server_addr);
    let name = unique("cli-app");

    let out = tokio::task::spawn_blocking({
        let (admin, name) = (admin.clone(), name.clone());
        move || {
            gim(
                &["app", "create", "--name", &name, "--admin-url", &admin],
                Some(TOKEN),
            )
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {stdout}"))
            .to_string()
    };
    let (app, key) = (field("app_id: "), field("private_key: "));
    assert!(app.parse::<i64>().unwrap() > 0);

    // The printed key is the app's: the business-server calls it signs pass.
    let out = tokio::task::spawn_blocking(move || {
        gim(
            &[
                "user",
                "import",
                "--app-id",
                &app,
                "--key",
                &key,
                "--server-url",
                &server,
                "--users",
                "1,2",
            ],
            None,
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The same name again, a wrong token, no token: non-zero exits that say why.
    let out = tokio::task::spawn_blocking({
        let (admin, name) = (admin.clone(), name.clone());
        move || {
            [
                gim(
                    &["app", "create", "--name", &name, "--admin-url", &admin],
                    Some(TOKEN),
                ),
                gim(
                    &["app", "create", "--name", "x", "--admin-url", &admin],
                    Some("wrong-admin-token-0123"),
                ),
                gim(
                    &["app", "create", "--name", "x", "--admin-url", &admin],
                    None,
                ),
            ]
        }
    })
    .await
    .unwrap();
    let [taken, wrong, none] = out;
    assert!(!taken.status.success());
    assert!(
        text(&taken.stderr).contains("HTTP 409"),
        "{}",
        text(&taken.stderr)
    );
    assert!(!wrong.status.success());
    let err = text(&wrong.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("admin token"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-admin-token"),
        "the token is echoed: {err}"
    );
    assert_eq!(none.status.code(), Some(2), "{}", text(&none.stderr));
    assert!(
        text(&none.stderr).contains("--admin-token"),
        "{}",
        text(&none.stderr)
    );
    shutdown.trigger();
}

#[tokio::test]
async fn says_when_logic_is_not_there() {
    let port = gim_test_support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        gim(
            &["app", "create", "--name", "x", "--admin-url", &url],
            Some(TOKEN),
        )
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot reach"),
        "{}",
        text(&out.stderr)
    );
}
