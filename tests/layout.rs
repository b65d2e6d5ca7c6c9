//! The layout has no back-references: each top-level module of `src` imports only modules
//! earlier in one fixed order (the README's "Source layout" states it), so no two import each
//! other, directly or in a loop.

use std::collections::BTreeSet;
use std::path::Path;

/// Lowest first: a module may import those before it.
const ORDER: [&str; 18] = [
    "process",
    "error",
    "rng",
    "ranks",
    "nir",
    "surrogate",
    "data",
    "spec",
    "nn",
    "engine",
    "recording",
    "records",
    "io",
    "models",
    "train",
    "plot",
    "simulate",
    "commands",
];

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The top-level modules `text` names as `crate::NAME`.
fn imported(text: &str) -> BTreeSet<String> {
    text.match_indices("crate::")
        .map(|(at, m)| {
            text[at + m.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn every_module_imports_only_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (path, text) in &files {
        let relative = Path::new(path).strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(rank) = ORDER.iter().position(|m| *m == top) else {
            problems.push(format!("{path}: module {top:?} is not in the layout's order; add it where it belongs"));
            continue;
        };
        seen.insert(top.to_owned());
        for name in imported(text) {
            match ORDER.iter().position(|m| *m == name) {
                Some(r) if r > rank => {
                    problems.push(format!("{path}: {top} imports crate::{name}, which sits above it"))
                }
                Some(_) => {}
                None => problems.push(format!("{path}: crate::{name} is not in the layout's order")),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The walk saw the modules, so an empty result means something.
    assert!(seen.len() >= 15, "only {seen:?} found under {}", src.display());
}
