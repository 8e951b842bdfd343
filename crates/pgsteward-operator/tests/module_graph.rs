//! The module graph of src/: read every `crate::…` (and, inside a folder,
//! `super::…`) reference, outside comments, and check that
//!
//! - the top-level modules form no cycle;
//! - the modules of one folder (such as `act/`) form no cycle among
//!   themselves (each may use its folder's own module);
//! - each pipeline step uses only the steps before it and leaf modules
//!   (observe → validate → build → apply → act → status);
//! - leaf modules use only other leaf modules;
//! - the PgInstance and PgBackup controllers share `context`, never each
//!   other.
//!
//! A failure names the offending edge and the line it comes from.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The reconcile pipeline, in order.
const STEPS: &[&str] = &["observe", "validate", "build", "apply", "act", "status"];
/// Modules every step may use: they use nothing of the pipeline.
const LEAVES: &[&str] = &["names", "error", "conditions", "exec", "image_state"];

/// One reference: from module, to module, where.
#[derive(Clone, Debug)]
struct Edge {
    from: String,
    to: String,
    at: String,
}

impl std::fmt::Display for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {} ({})", self.from, self.to, self.at)
    }
}

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every .rs file below `dir`, except the crate roots.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.retain(|p| {
        !(p.parent() == Some(&src()) && (p.ends_with("lib.rs") || p.ends_with("main.rs")))
    });
    out.sort();
    out
}

/// The module path of a file: `src/act/mod.rs` is `act`, `src/act/config.rs`
/// is `act::config`.
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("a file under src/");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts.join("::")
}

/// The source without comments and without the contents of string literals,
/// so that neither a doc link nor a message counts as a reference.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if chars.get(i + 1) == Some(&'/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '"' => {
                out.push('"');
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if chars.get(i) == Some(&'\n') {
                        out.push('\n');
                    }
                    i += 1;
                }
                out.push('"');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn ident_at(chars: &[char], start: usize) -> String {
    chars[start..]
        .iter()
        .take_while(|c| c.is_alphanumeric() || **c == '_')
        .collect()
}

/// The first path segments after `prefix::`: one for `prefix::a::b`, each
/// item's for `prefix::{a, b::{c}}`. With the line of each.
fn referenced(code: &str, prefix: &str) -> Vec<(Vec<String>, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let needle: Vec<char> = format!("{prefix}::").chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + needle.len() <= chars.len() {
        let boundary = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if !(boundary && chars[i..i + needle.len()] == needle[..]) {
            i += 1;
            continue;
        }
        let line = chars[..i].iter().filter(|c| **c == '\n').count() + 1;
        let mut j = i + needle.len();
        if chars.get(j) == Some(&'{') {
            let mut depth = 0;
            let mut item_start = true;
            while j < chars.len() {
                match chars[j] {
                    '{' => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                        let name = ident_at(&chars, j);
                        let rest = ident_at(&chars, j + name.len() + 2);
                        out.push((vec![name.clone(), rest], line));
                        item_start = false;
                        j += name.len();
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            let name = ident_at(&chars, j);
            let rest = if chars.get(j + name.len()) == Some(&':') {
                ident_at(&chars, j + name.len() + 2)
            } else {
                String::new()
            };
            out.push((vec![name, rest], line));
        }
        i = j.max(i + 1);
    }
    out
}

/// Every reference between modules of src/.
fn edges() -> Vec<Edge> {
    let files = files(&src());
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    // `a::b` when that module exists, else `a`.
    let resolve = |first: &str, second: &str| {
        let nested = format!("{first}::{second}");
        if modules.contains(&nested) {
            nested
        } else {
            first.to_string()
        }
    };
    let mut out = Vec::new();
    for file in &files {
        let from = module_of(file);
        let code = code_only(&std::fs::read_to_string(file).expect("a readable source file"));
        let name = file
            .strip_prefix(src().parent().unwrap())
            .unwrap()
            .display()
            .to_string();
        let parent = from.rsplit_once("::").map(|(p, _)| p.to_string());
        let mut found = Vec::new();
        for (segments, line) in referenced(&code, "crate") {
            if segments[0] == "self" {
                continue;
            }
            found.push((resolve(&segments[0], &segments[1]), line));
        }
        if let Some(parent) = &parent {
            for (segments, line) in referenced(&code, "super") {
                found.push((resolve(parent, &segments[0]), line));
            }
        }
        for (to, line) in found {
            if to != from && modules.contains(&to) {
                out.push(Edge {
                    from: from.clone(),
                    to,
                    at: format!("{name}:{line}"),
                });
            }
        }
    }
    out
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap()
}

/// A cycle in `graph`, as its edges, if there is one.
fn find_cycle(graph: &BTreeMap<String, Vec<Edge>>) -> Option<Vec<Edge>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, Vec<Edge>>,
        path: &mut Vec<Edge>,
        on_path: &mut BTreeSet<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<Edge>> {
        if done.contains(node) {
            return None;
        }
        on_path.insert(node.to_string());
        for edge in graph.get(node).into_iter().flatten() {
            path.push(edge.clone());
            if on_path.contains(&edge.to) {
                let start = path.iter().position(|e| e.from == edge.to).unwrap();
                return Some(path[start..].to_vec());
            }
            if let Some(cycle) = visit(&edge.to, graph, path, on_path, done) {
                return Some(cycle);
            }
            path.pop();
        }
        on_path.remove(node);
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        let cycle = visit(
            node,
            graph,
            &mut Vec::new(),
            &mut BTreeSet::new(),
            &mut done,
        );
        if cycle.is_some() {
            return cycle;
        }
    }
    None
}

fn describe(cycle: &[Edge]) -> String {
    cycle
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_graph_reads_the_references_it_should() {
    // A guard against a parser that finds nothing and so passes everything.
    let all = edges();
    let has = |from: &str, to: &str| all.iter().any(|e| e.from == from && e.to == to);
    assert!(has("controller", "observe"), "{all:#?}");
    assert!(has("act::config", "observe"), "{all:#?}");
    assert!(has("act::restore", "act"), "{all:#?}");
    assert!(has("status", "act"), "{all:#?}");
}

#[test]
fn the_top_level_modules_form_no_cycle() {
    let mut graph: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
    for e in edges() {
        let (from, to) = (top(&e.from).to_string(), top(&e.to).to_string());
        if from != to {
            graph
                .entry(from.clone())
                .or_default()
                .push(Edge { from, to, at: e.at });
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules form a cycle:\n{}", describe(&cycle));
    }
}

#[test]
fn the_modules_of_a_folder_form_no_cycle_among_themselves() {
    let mut graph: BTreeMap<String, Vec<Edge>> = BTreeMap::new();
    for e in edges() {
        let siblings = e.from.contains("::")
            && e.to.contains("::")
            && e.from.rsplit_once("::").map(|p| p.0) == e.to.rsplit_once("::").map(|p| p.0);
        if siblings {
            graph.entry(e.from.clone()).or_default().push(e);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "the modules of a folder form a cycle:\n{}",
            describe(&cycle)
        );
    }
}

#[test]
fn each_pipeline_step_uses_only_earlier_steps_and_leaves() {
    let step = |m: &str| STEPS.iter().position(|s| *s == top(m));
    let leaf = |m: &str| LEAVES.contains(&top(m));
    let mut wrong = Vec::new();
    for e in edges().into_iter().filter(|e| top(&e.from) != top(&e.to)) {
        let allowed = match (step(&e.from), step(&e.to)) {
            (Some(from), Some(to)) => to < from,
            (Some(_), None) => leaf(&e.to),
            (None, _) if leaf(&e.from) => leaf(&e.to),
            (None, _) => true,
        };
        if !allowed {
            wrong.push(format!("  {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "a step uses a later step or a module that is not a leaf ({} → leaves {}):\n{}",
        STEPS.join(" → "),
        LEAVES.join(", "),
        wrong.join("\n")
    );
}

#[test]
fn the_two_controllers_share_context_and_never_use_each_other() {
    let controllers = ["controller", "backups"];
    let wrong: Vec<String> = edges()
        .into_iter()
        .filter(|e| controllers.contains(&top(&e.from)) && controllers.contains(&top(&e.to)))
        .filter(|e| top(&e.from) != top(&e.to))
        .map(|e| format!("  {e}"))
        .collect();
    assert!(
        wrong.is_empty(),
        "the PgInstance and PgBackup controllers share crate::context, not each other:\n{}",
        wrong.join("\n")
    );
}
