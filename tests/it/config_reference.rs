//! `docs/configuration.md` names every key of the agent and ledger configurations, and
//! only those. The keys of the code are asked from the parsers themselves: a probe key is
//! put into each table of the document's example, and the `deny_unknown_fields` error
//! lists the keys that table accepts. A key added to a config struct without a line in
//! the reference, or a documented key the code dropped, fails this test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use attestor_agent::config::AgentConfig;
use attestor_ledger::config::LedgerConfig;

const PROBE: &str = "zz_probe";

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    std::fs::read_to_string(path).unwrap()
}

/// The fenced TOML block after `<!-- example: NAME -->`, and the `` `key` `` rows of the
/// table that follows it.
fn section(doc: &str, name: &str) -> (String, BTreeSet<String>) {
    let marker = format!("<!-- example: {name} -->");
    let rest = &doc[doc.find(&marker).expect("example marker") + marker.len()..];
    let rest = rest.split_once("```toml\n").expect("toml block").1;
    let (example, rest) = rest.split_once("```").expect("end of the block");
    let table = rest.split("\n## ").next().unwrap_or_default();
    let rows = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once('`').map(|(key, _)| key.to_string()))
        .collect();
    (example.to_string(), rows)
}

/// Tables of a TOML document with their dotted paths (arrays of tables by their name).
fn tables(value: &toml::Value, path: &str, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(table) => {
            out.push(path.to_string());
            for (key, child) in table {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                tables(child, &child_path, out);
            }
        }
        toml::Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_table()) {
                tables(item, path, out);
            }
        }
        _ => {}
    }
}

fn table_at<'a>(root: &'a mut toml::Value, path: &str) -> &'a mut toml::value::Table {
    let mut at = root;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        at = match at.get_mut(key).unwrap() {
            toml::Value::Array(items) => items.first_mut().unwrap(),
            other => other,
        };
    }
    at.as_table_mut().unwrap()
}

/// Every key the parser accepts in the example's tables, as dotted paths.
fn code_keys(example: &str, parse: impl Fn(&str) -> Result<(), String>) -> BTreeSet<String> {
    let root: toml::Value = toml::from_str(example).expect("the example is TOML");
    let mut paths = Vec::new();
    tables(&root, "", &mut paths);
    let mut keys = BTreeSet::new();
    for path in paths {
        let mut probed = root.clone();
        table_at(&mut probed, &path).insert(PROBE.into(), toml::Value::Integer(0));
        let message = parse(&toml::to_string(&probed).unwrap()).expect_err("probe accepted");
        let unknown = format!("unknown field `{PROBE}`, expected ");
        let Some(at) = message.find(&unknown) else {
            assert!(
                !message.contains("unknown field"),
                "the example has a key the code does not know: {message}"
            );
            // A map (e.g. one table per tenant): the probe became an entry, not a key.
            continue;
        };
        let expected = message[at + unknown.len()..].lines().next().unwrap();
        for field in expected.split('`').skip(1).step_by(2) {
            keys.insert(if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            });
        }
    }
    keys
}

fn check(name: &str, parse: impl Fn(&str) -> Result<(), String>) {
    let (example, documented) = section(&doc(), name);
    let code = code_keys(&example, parse);
    // A table counts as documented through its keys' rows.
    let under = |keys: &BTreeSet<String>, table: &str| {
        keys.iter().any(|k| k.starts_with(&format!("{table}.")))
    };
    let undocumented: Vec<_> = code
        .iter()
        .filter(|k| !documented.contains(*k) && !under(&documented, k))
        .collect();
    let stale: Vec<_> = documented
        .iter()
        .filter(|k| !code.contains(*k) && !under(&code, k))
        .collect();
    assert!(
        undocumented.is_empty(),
        "{name} keys missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "docs/configuration.md documents {name} keys the code does not have: {stale:?}"
    );
    assert!(code.len() >= 10, "{code:?}");
}

fn config_path() -> PathBuf {
    PathBuf::from("/nonexistent/attestor-config-reference/config.toml")
}

#[test]
fn every_agent_config_key_is_documented_and_every_documented_key_exists() {
    check("agent", |text| {
        AgentConfig::parse(text, &config_path())
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn every_ledger_config_key_is_documented_and_every_documented_key_exists() {
    check("ledger", |text| {
        LedgerConfig::parse(text, &config_path())
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

/// The example ledger expects exactly the policy the example agent runs.
#[test]
fn the_example_ledger_expects_the_example_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let c = LedgerConfig::load(&root.join("examples/ledger.toml")).unwrap();
    let hash =
        attestor_agent::collect::policy_hash_of(&root.join("examples/policy-kernel/policy.toml"))
            .unwrap();
    assert_eq!(c.tenants["demo"].policy_hash, hex::encode(hash));
}
