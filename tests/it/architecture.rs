//! The architecture, kept by the compiler and by these checks rather than by a document:
//! the crate graph is the trust boundaries (ARCHITECTURE.md), so a crate that starts to
//! depend on what it must not, or modules that start importing each other in a loop, fail
//! here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `cargo metadata` of the workspace: packages by id, and the resolved graph.
fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("cannot run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every package `crate_name` reaches through normal (not dev or build) dependency edges.
fn normal_closure(metadata: &Value, crate_name: &str) -> BTreeSet<String> {
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let normal = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["dep_kinds"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| k["kind"].is_null())
                })
                .map(|d| d["pkg"].as_str().unwrap())
                .collect();
            (n["id"].as_str().unwrap(), normal)
        })
        .collect();
    let start = names
        .iter()
        .find(|(_, name)| **name == crate_name)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{crate_name} is not in the workspace"));
    let mut seen = BTreeSet::new();
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for dep in nodes.get(id).into_iter().flatten() {
            if seen.insert(names[dep].to_string()) {
                todo.push(dep);
            }
        }
    }
    seen
}

fn assert_never_reaches(closure: &BTreeSet<String>, of: &str, forbidden: &[&str]) {
    let found: Vec<&&str> = forbidden.iter().filter(|f| closure.contains(**f)).collect();
    assert!(found.is_empty(), "{of} depends (normal edges) on {found:?}");
}

#[test]
fn each_crate_depends_only_on_what_its_trust_boundary_allows() {
    let metadata = metadata();
    let verify = normal_closure(&metadata, "attestor-verify");
    // A relying party takes the verifier alone: no TPM library, network stack or database.
    assert_never_reaches(
        &verify,
        "attestor-verify",
        &[
            "tss-esapi",
            "tss-esapi-sys",
            "tokio",
            "hyper",
            "rusqlite",
            "tokio-postgres",
            "attestor-platform",
            "attestor-net",
            "attestor-agent",
            "attestor-ledger",
        ],
    );
    // The ledger verifies with attestor-verify alone: it never links a TPM or a device.
    let ledger = normal_closure(&metadata, "attestor-ledger");
    assert_never_reaches(
        &ledger,
        "attestor-ledger",
        &[
            "tss-esapi",
            "tss-esapi-sys",
            "attestor-platform",
            "attestor-agent",
        ],
    );
    // Hardware is the platform crate's alone, and it knows nothing above it.
    for (name, forbidden) in [
        (
            "attestor-platform",
            &[
                "attestor-net",
                "attestor-agent",
                "attestor-ledger",
                "tokio",
                "hyper",
            ][..],
        ),
        (
            "attestor-net",
            &[
                "tss-esapi",
                "attestor-platform",
                "attestor-agent",
                "attestor-ledger",
            ][..],
        ),
        (
            "attestor-agent",
            &["attestor-ledger", "rusqlite", "tokio-postgres"][..],
        ),
    ] {
        assert_never_reaches(&normal_closure(&metadata, name), name, forbidden);
    }
    assert!(normal_closure(&metadata, "attestor-agent").contains("tss-esapi"));
}

/// Sources of a crate, without its tests (`#[cfg(test)]` and after) and comments.
fn sources(crate_dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut todo = vec![crate_dir.join("src")];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default();
                let code: Vec<&str> = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                out.push((path, code.join("\n")));
            }
        }
    }
    out
}

/// The top-level module a source file belongs to (`src/a/b.rs` and `src/a.rs`: `a`).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    (!["lib", "main"].contains(&name.as_str())).then_some(name)
}

/// Strongly connected components of more than one module: import loops.
fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // A module is in a loop with every module that both reaches it and is reached by it.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|m| (m, reach(m))).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for (m, from_m) in &reached {
        if !from_m.contains(*m) {
            continue;
        }
        let component: BTreeSet<String> = from_m
            .iter()
            .filter(|other| reached.get(other).is_some_and(|r| r.contains(*m)))
            .cloned()
            .collect();
        if component.len() > 1 && !found.contains(&component) {
            found.push(component);
        }
    }
    found
}

#[test]
fn no_crate_has_modules_that_import_each_other_in_a_loop() {
    for crate_dir in std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([root()])
    {
        let src = crate_dir.join("src");
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, code) in sources(&crate_dir) {
            let Some(module) = top_module(&src, &file) else {
                continue;
            };
            let deps = module_refs(&code)
                .into_iter()
                .filter(|d| *d != module)
                .collect::<BTreeSet<_>>();
            graph.entry(module).or_default().extend(deps);
        }
        let found = loops(&graph);
        assert!(
            found.is_empty(),
            "{}: modules importing each other in a loop: {found:?}",
            crate_dir.display()
        );
    }
}

/// The modules `crate::module` paths (and `use crate::{a, b}` groups) name in `code`.
fn module_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            out.extend(group.split(',').map(|item| ident(item.trim())));
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

#[test]
fn the_loop_check_would_see_a_loop() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(m, deps)| (m.to_string(), deps.into_iter().map(String::from).collect()))
    .collect();
    let found = loops(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ["a", "b", "c"].map(String::from).into());
    assert_eq!(
        module_refs("use crate::{store::X, log};\nlet x = crate::alerts::f();"),
        ["alerts", "log", "store"].map(String::from).into()
    );
}

#[test]
fn the_verifier_never_opens_a_device() {
    // The `sev` crate compiles its /dev/sev-guest ioctls into the same crate as the report
    // parser the verifier uses, so the crate graph cannot keep them apart: the sources do.
    for (file, code) in sources(&root().join("crates/attestor-verify")) {
        for forbidden in [
            "/dev/",
            "Firmware::open",
            "firmware::guest::Firmware",
            "ioctl",
        ] {
            assert!(
                !code.contains(forbidden),
                "{} mentions {forbidden:?}",
                file.display()
            );
        }
    }
}
