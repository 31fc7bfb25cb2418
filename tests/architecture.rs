//! ARCHITECTURE.md stays true: every path it names exists, and the crates keep to the
//! dependency rules it states.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// The checkout cargo runs the test in (not where it was compiled: a shared target
/// directory serves every checkout).
fn root() -> std::path::PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The names in `[dependencies]` of a manifest (not dev-dependencies).
fn dependencies(manifest: &str) -> Vec<String> {
    let text = read(manifest);
    let mut names = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with('[') {
            inside = line.trim() == "[dependencies]";
            continue;
        }
        if let Some((name, _)) = line.split_once('=')
            && inside
            && !name.trim().is_empty()
        {
            // `name.workspace = true` or `name = …`.
            let name = name.trim().trim_matches('"');
            names.push(name.split('.').next().unwrap_or(name).to_owned());
        }
    }
    names
}

#[test]
fn every_path_architecture_md_names_exists() {
    let text = read("ARCHITECTURE.md");
    let mut missing = Vec::new();
    let mut checked = 0;
    for (i, span) in text.split('`').enumerate() {
        // Odd pieces are inside backticks; a path has a slash and no spaces or braces.
        if i % 2 == 0 || !span.contains('/') || span.contains([' ', '{', '<']) {
            continue;
        }
        checked += 1;
        if !root().join(span).exists() {
            missing.push(span.to_owned());
        }
    }
    assert!(
        checked > 50,
        "only {checked} paths found: is the document there?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn core_depends_on_no_web_database_aws_or_other_wharf_crate() {
    let forbidden = [
        "axum", "hyper", "tower", "rusqlite", "reqwest", "lettre", "tokio", "lambda", "aws",
        "wharf", "figment",
    ];
    for dependency in dependencies("core/Cargo.toml") {
        assert!(
            !forbidden.iter().any(|f| dependency.starts_with(f)),
            "core depends on {dependency}"
        );
    }
}

#[test]
fn api_and_workers_reach_the_adapters_only_through_core() {
    for manifest in ["api/Cargo.toml", "workers/Cargo.toml"] {
        for dependency in dependencies(manifest) {
            assert!(
                !dependency.starts_with("wharf") || dependency == "wharf-core",
                "{manifest} depends on {dependency}"
            );
            assert!(
                !dependency.starts_with("aws") && !dependency.starts_with("rusqlite"),
                "{manifest} depends on {dependency}"
            );
        }
    }
}

#[test]
fn the_root_package_calls_no_aws_sdk() {
    for dependency in dependencies("Cargo.toml") {
        assert!(
            !dependency.starts_with("aws-sdk"),
            "the root depends on {dependency}"
        );
    }
    for entry in walk(&root().join("src")) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(
            !text.contains("aws_sdk_"),
            "{} calls an AWS SDK",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
