//! `sqlx::migrate!` embeds `sql/migrations` at compile time; rebuild when a migration is added or
//! edited, or the binary would apply a stale set.
fn main() {
    println!("cargo:rerun-if-changed=../sql/migrations");
}
