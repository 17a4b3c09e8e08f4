//! The book's configuration reference (`docs/reference/configuration.md`) is generated from the
//! config types: keys and defaults from `Default` serialized to TOML, descriptions from the fields'
//! doc comments. This test fails when the committed page differs from what the types give, so the
//! page cannot drift; `GIM_BLESS=1 cargo test -p gim-common --test config_reference` rewrites it.
//! It also fails when a config field has no doc comment: every key a user can set is described.

use gim_common::config::{ConnConfig, LogicConfig};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const PAGE: &str = "docs/reference/configuration.md";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One field of a config struct: its name, its type's name and its doc comment.
struct Field {
    name: String,
    ty: String,
    doc: String,
}

/// Struct name -> its fields.
type Structs = BTreeMap<String, Vec<Field>>;

/// Field doc comments of every `pub struct` in the config sources.
/// The sources are rustfmt-formatted (CI checks it), so one field per line is a safe assumption.
fn field_docs() -> Structs {
    let dir = repo().join("common/src/config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut out = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut current: Option<(String, Vec<Field>)> = None;
        let mut doc: Vec<String> = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if let Some(name) = t
                .strip_prefix("pub struct ")
                .and_then(|r| r.strip_suffix(" {"))
            {
                current = Some((name.to_string(), Vec::new()));
                doc.clear();
            } else if current.is_some() && t == "}" {
                let (name, fields) = current.take().unwrap();
                out.insert(name, fields);
            } else if let Some((_, fields)) = current.as_mut() {
                if let Some(d) = t.strip_prefix("///") {
                    doc.push(d.trim().to_string());
                } else if let Some((field, ty)) = t
                    .strip_prefix("pub ")
                    .and_then(|r| r.strip_suffix(','))
                    .and_then(|r| r.split_once(": "))
                {
                    fields.push(Field {
                        name: field.to_string(),
                        ty: ty.to_string(),
                        doc: doc.join(" "),
                    });
                    doc.clear();
                } else if !t.starts_with("#[") {
                    doc.clear();
                }
            }
        }
    }
    out
}

/// A TOML default as the reader would write it in the file.
fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) if s.is_empty() => "`\"\"`".into(),
        toml::Value::Array(a) if a.is_empty() => "`[]`".into(),
        other => format!("`{other}`"),
    }
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "string",
        toml::Value::Integer(_) => "integer",
        toml::Value::Float(_) => "number",
        toml::Value::Boolean(_) => "boolean",
        toml::Value::Array(_) => "list of strings",
        _ => "table",
    }
}

fn binary_section(
    out: &mut String,
    binary: &str,
    root: &str,
    defaults: toml::Value,
    docs: &Structs,
) {
    writeln!(out, "## {binary}\n").unwrap();
    let table = defaults.as_table().unwrap();
    for Field {
        name: section,
        ty,
        doc: section_doc,
    } in &docs[root]
    {
        let values = table[section.as_str()]
            .as_table()
            .expect("sections are tables");
        writeln!(out, "### `[{section}]`\n").unwrap();
        if !section_doc.is_empty() {
            writeln!(out, "{section_doc}\n").unwrap();
        }
        writeln!(
            out,
            "| key | environment variable | type | default | meaning |\n|---|---|---|---|---|"
        )
        .unwrap();
        let fields = docs
            .get(ty)
            .unwrap_or_else(|| panic!("no struct {ty} in common/src/config"));
        for Field {
            name: field, doc, ..
        } in fields
        {
            assert!(
                !doc.is_empty(),
                "{ty}.{field} has no doc comment: every config key is described in the reference"
            );
            // A key left out of the serialized defaults (a secret, never written out) is an
            // empty string by default.
            let empty = toml::Value::String(String::new());
            let v = values.get(field.as_str()).unwrap_or(&empty);
            let env = format!(
                "GIM_{}__{}",
                section.to_ascii_uppercase(),
                field.to_ascii_uppercase()
            );
            writeln!(
                out,
                "| `{field}` | `{env}` | {} | {} | {} |",
                kind(v),
                show(v),
                doc.replace('|', "\\|")
            )
            .unwrap();
        }
        writeln!(out).unwrap();
    }
}

fn render() -> String {
    let docs = field_docs();
    let mut out = String::new();
    out.push_str(
        "<!-- Generated from gim's config types by \
         `GIM_BLESS=1 cargo test -p gim-common --test config_reference`; do not edit by hand. -->\n\n\
         # Configuration reference\n\n\
         Each binary takes `--config FILE` (TOML). Values are layered: the built-in defaults below, then \
         the file, then environment variables named `GIM_<SECTION>__<KEY>`. An environment value is \
         read with the type of the key's default; lists take comma-separated values \
         (`GIM_REDIS__CLUSTER_NODES=redis://a:7000,redis://b:7000`). Unknown keys are errors, and a bad \
         value stops the process with one line naming the key, for example \
         `config error: mysql.max_connections: expected an integer, got \"lots\"`.\n\n\
         Every key is optional. The defaults suit one machine; on Kubernetes the operator writes the \
         file from the `GimCluster` (see [the GimCluster reference](gimcluster.md)).\n\n",
    );
    let logic = toml::Value::try_from(LogicConfig::default()).unwrap();
    binary_section(&mut out, "gim-logic", "LogicConfig", logic, &docs);
    let conn = toml::Value::try_from(ConnConfig::default()).unwrap();
    binary_section(&mut out, "gim-conn", "ConnConfig", conn, &docs);
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[test]
fn configuration_reference_is_current() {
    let page = repo().join(PAGE);
    let want = render();
    if std::env::var_os("GIM_BLESS").is_some() {
        std::fs::write(&page, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        have == want,
        "{PAGE} is stale: run `GIM_BLESS=1 cargo test -p gim-common --test config_reference`"
    );
}

#[test]
fn every_key_of_the_defaults_is_documented() {
    // The page's tables come from the doc comments; a key present in the defaults but missing
    // there (a field the line parser did not see) would silently drop out of the reference.
    let page = render();
    for (binary, defaults) in [
        (
            "logic",
            toml::Value::try_from(LogicConfig::default()).unwrap(),
        ),
        (
            "conn",
            toml::Value::try_from(ConnConfig::default()).unwrap(),
        ),
    ] {
        for (section, values) in defaults.as_table().unwrap() {
            for key in values.as_table().unwrap().keys() {
                let env = format!(
                    "`GIM_{}__{}`",
                    section.to_ascii_uppercase(),
                    key.to_ascii_uppercase()
                );
                assert!(page.contains(&env), "{binary}: {section}.{key} missing");
            }
        }
    }
}
