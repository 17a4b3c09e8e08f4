//! The binary: config errors, `migrate`, `app create`.

mod common;

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gim-logic"));
    // Only what each test sets: no GIM_ variables from the developer's shell.
    for (k, _) in std::env::vars() {
        if k.starts_with("GIM_") {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn bad_config_exits_non_zero_with_one_line_naming_the_key() {
    let out = bin()
        .arg("migrate")
        .env("GIM_MYSQL__MAX_CONNECTIONS", "lots")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("mysql.max_connections"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("logic.toml");
    std::fs::write(&path, "[logic]\nsync_page_size = 0\n").unwrap();
    let out = bin().arg("--config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("logic.sync_page_size"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn migrate_and_app_create_print_what_a_tenant_needs() {
    let out = bin()
        .arg("migrate")
        .env("GIM_MYSQL__URL", common::mysql_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = format!("cli{}", common::rand_u64());
    let out = bin()
        .args(["app", "create", "--name", &name])
        .env("GIM_MYSQL__URL", common::mysql_url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} missing in {text}"))
            .trim()
            .to_string()
    };
    let app: i64 = field("app_id:").parse().unwrap();
    let key = gim_common::token::AppKey::from_private_b64(&field("private_key:")).unwrap();
    let token = field("server_token (valid 24 h):");
    let now = gim_common::token::now_secs();
    gim_common::token::verify_server(&key.public_key(), &token, app, now).unwrap();
    // The same name again is refused.
    let out = bin()
        .args(["app", "create", "--name", &name])
        .env("GIM_MYSQL__URL", common::mysql_url())
        .output()
        .unwrap();
    assert!(!out.status.success());
}
