//! The top-level modules of `src/` form a directed acyclic graph that follows the data flow
//! (issue 12): shared leaf types at the bottom, providers above them knowing no metrics and no
//! global config, config above the providers, then metrics, scheduler, web and the CLI.
//!
//! The graph is read from the source: every `crate::<module>` path (in `use crate::{a, b}`
//! too) of production code is an edge. Test code may reach anywhere, so `#[cfg(test)]` modules
//! (files declared behind it, and inline `mod tests` blocks) are left out.
//! `cargo test --test module_graph -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may only import modules of lower layers. A new
/// module must be placed here.
const LAYERS: &[(&str, u8)] = &[
    // Shared leaf types and plumbing that know nothing of the rest.
    ("clock", 0),
    ("error", 0),
    ("logging", 0),
    ("money", 0),
    ("secret", 0),
    ("sync", 0),
    ("fields", 1),
    ("listener", 1),
    ("snapshot", 1),
    ("transport", 1),
    // The simulators' shared machinery (providers' own simulators live in their folders).
    ("sim", 2),
    ("providers", 3),
    ("config", 4),
    ("metrics", 5),
    ("web_config", 5),
    ("scheduler", 6),
    ("status_page", 6),
    ("server", 7),
    ("demo", 7),
    ("cli", 8),
];

/// What providers must never know about, whatever the layers say.
const NOT_FOR_PROVIDERS: &[&str] = &[
    "config",
    "metrics",
    "scheduler",
    "server",
    "listener",
    "status_page",
    "web_config",
    "cli",
    "demo",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The files that are `#[cfg(test)] mod x;` of their parent.
fn test_only_files(files: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut test_only = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let dir = if file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for pair in lines.windows(2) {
            if pair[0] != "#[cfg(test)]" {
                continue;
            }
            let declared = pair[1]
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ")
                .strip_prefix("mod ")
                .and_then(|rest| rest.strip_suffix(';'));
            if let Some(name) = declared {
                test_only.insert(dir.join(format!("{name}.rs")));
                test_only.insert(dir.join(name).join("mod.rs"));
            }
        }
    }
    test_only
}

/// The text of `file` without its inline `#[cfg(test)] mod tests { ... }`, which by the
/// crate's convention comes last.
fn production_text(text: &str) -> &str {
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                let next = next.trim_start();
                let next = next.strip_prefix("pub(crate) ").unwrap_or(next);
                next.starts_with("mod tests")
            })
        {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// Top-level modules named by `crate::` paths in `text`.
fn imported(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        // Not `some_crate::x`: the `crate` keyword starts a path.
        let before = text[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name = ident(part);
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let test_only = test_only_files(&files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = first.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let edges = graph.entry(module.clone()).or_default();
        if test_only.contains(file) || file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for target in imported(production_text(&text)) {
            if target != module {
                edges.insert(target);
            }
        }
    }
    // Items of the crate root itself (`crate::VERSION`) are no module.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|target| modules.contains(target));
    }
    graph
}

/// A cycle of `graph`, if it has one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut done, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_top_level_modules_form_a_dag_that_follows_the_layers() {
    let graph = graph();
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    println!("module graph of src/ (production code):");
    for (module, edges) in &graph {
        let names: Vec<&str> = edges.iter().map(String::as_str).collect();
        println!("  {module} -> {}", names.join(", "));
    }
    assert!(
        graph.contains_key("providers") && graph["providers"].contains("error"),
        "the graph was not read: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
    let mut wrong = Vec::new();
    for (module, edges) in &graph {
        let Some(&layer) = layers.get(module.as_str()) else {
            wrong.push(format!("{module} has no layer in LAYERS"));
            continue;
        };
        for target in edges {
            match layers.get(target.as_str()) {
                Some(&below) if below < layer => {}
                Some(&other) => wrong.push(format!(
                    "{module} (layer {layer}) imports {target} (layer {other})"
                )),
                None => wrong.push(format!("{module} imports {target}, which has no layer")),
            }
        }
    }
    for target in &graph["providers"] {
        if NOT_FOR_PROVIDERS.contains(&target.as_str()) {
            wrong.push(format!("providers imports {target}"));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// The reader itself: it sees grouped imports and full paths, and skips test code.
#[test]
fn the_reader_finds_edges_in_every_form_and_skips_tests() {
    let text = "use crate::a::X;\nuse crate::{b, c::Y};\nfn f() { crate::d::g(); }\n\
                let s = some_crate::e;\n#[cfg(test)]\nmod tests {\n    use crate::f;\n}\n";
    let found = imported(production_text(text));
    let expected: BTreeSet<String> = ["a", "b", "c", "d"].map(String::from).into();
    assert_eq!(found, expected);
    let mut cyclic = BTreeMap::new();
    cyclic.insert("x".to_owned(), BTreeSet::from(["y".to_owned()]));
    cyclic.insert("y".to_owned(), BTreeSet::from(["x".to_owned()]));
    assert!(find_cycle(&cyclic).is_some());
    cyclic.get_mut("y").unwrap().clear();
    assert!(find_cycle(&cyclic).is_none());
}
