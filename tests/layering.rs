//! The layer order of `src/`, checked: a module may use only modules below it, and no file
//! takes part in an import cycle. A failure names the file and the import that breaks the
//! order. `docs/architecture.md` shows the same list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of the library, lowest first. A module may import the ones before it, never
/// one after it; where a module's parts sit at different heights, the part is listed on
/// its own (`a::b` before or after `a`).
const LAYERS: &[&str] = &[
    // Foundations: plain helpers that know nothing of users.
    "text",
    "files",
    "pb",
    "json",
    "whole_body",
    "timing",
    "call_deadline",
    "shutdown",
    "telemetry",
    // The validated types, and what the wire shares with them.
    "domain",
    "contract",
    "tokens",
    // Filters over users (AIP-160), which storage and the handlers both use.
    "filter",
    // Durable state.
    "storage",
    // The one service error, over domain and storage errors.
    "error",
    // Who a call comes from, and what limits count it under.
    "connections",
    "client_address",
    "caller",
    "call",
    "rate",
    "auth",
    "streams",
    // The directory as an issuer: its signing keys, and the endpoints others read.
    "oidc",
    // Handlers and what serves them.
    "codec",
    "grpc",
    "health",
    "metrics",
    "connect",
    "console",
    "middleware",
    // Start-up.
    "database_wait",
    "config",
    "startup",
    // The client, apart from the server.
    "cli",
];

/// A `use` (or inline path) in a file, resolved to a path from the crate root.
struct Import {
    file: PathBuf,
    line: usize,
    path: Vec<String>,
}

fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("the file is under src/");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` module (tests may
/// reach anywhere).
fn code_of(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim_start() == "#[cfg(test)]" {
            let rest: String = text.lines().skip(index + 1).collect::<Vec<_>>().join("\n");
            if rest.trim_start().starts_with("mod ") {
                break;
            }
        }
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        lines.push((index + 1, code.to_owned()));
    }
    lines
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(prefix: &[String], tree: &str, into: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|segment| !segment.is_empty())
            .map(str::to_owned)
            .collect();
        let close = tree.rfind('}').unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let mut depth = 0;
        let mut start = 0;
        let mut path = prefix.to_vec();
        path.extend(head);
        for (at, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&path, &inner[start..at], into);
                    start = at + 1;
                }
                _ => {}
            }
        }
        expand(&path, &inner[start..], into);
    } else {
        let mut path = prefix.to_vec();
        path.extend(
            tree.split(" as ")
                .next()
                .unwrap_or(tree)
                .split("::")
                .map(str::trim)
                .filter(|segment| !segment.is_empty() && *segment != "self" && *segment != "*")
                .map(str::to_owned),
        );
        into.push(path);
    }
}

/// The crate paths a file names: `use crate::…` trees, `crate::a::b` inline, and `super::`
/// paths resolved against the file's module.
fn imports_of(src: &Path, file: &Path) -> Vec<Import> {
    let text = std::fs::read_to_string(file).expect("a readable source file");
    let module = module_path(src, file);
    let code = code_of(&text);
    let joined: String = code
        .iter()
        .map(|(_, line)| line.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |offset: usize| joined[..offset].matches('\n').count() + 1;
    let mut imports = Vec::new();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(found) = joined[from..].find(root) {
            let at = from + found;
            from = at + root.len();
            let before = joined[..at].chars().next_back();
            if before.is_some_and(|ch| ch.is_alphanumeric() || ch == '_' || ch == ':') {
                continue;
            }
            // The path runs while it is identifiers, `::` and (for a `use` tree) braces.
            let rest = &joined[at..];
            let mut depth = 0;
            let mut end = rest.len();
            for (offset, ch) in rest.char_indices() {
                let in_path = ch.is_alphanumeric()
                    || ch == '_'
                    || ch == ':'
                    || ch == '*'
                    || (depth > 0 && (ch == ',' || ch.is_whitespace() || ch == '}'))
                    || ch == '{';
                if ch == '{' {
                    depth += 1;
                } else if ch == '}' {
                    if depth == 0 {
                        end = offset;
                        break;
                    }
                    depth -= 1;
                }
                if !in_path || (depth == 0 && ch == '}') {
                    end = if ch == '}' { offset + 1 } else { offset };
                    break;
                }
            }
            let tree = &rest[..end];
            let mut base: Vec<String> = Vec::new();
            let mut tree = tree;
            if root == "crate::" {
                tree = &tree["crate::".len()..];
            } else {
                // `super::` climbs from the module that holds the file's items.
                base = module.clone();
                while let Some(rest) = tree.strip_prefix("super::") {
                    base.pop();
                    tree = rest;
                }
            }
            let mut paths = Vec::new();
            expand(&base, tree, &mut paths);
            for path in paths {
                imports.push(Import {
                    file: file.to_owned(),
                    line: code[line_of(at).min(code.len()) - 1].0,
                    path,
                });
            }
        }
    }
    imports
}

/// The position in `LAYERS` that holds `path`: its longest listed prefix.
fn layer_of(path: &[String]) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .filter(|(_, layer)| {
            let segments: Vec<&str> = layer.split("::").collect();
            segments.len() <= path.len() && segments.iter().zip(path).all(|(a, b)| a == b)
        })
        .max_by_key(|(_, layer)| layer.split("::").count())
        .map(|(index, layer)| (index, *layer))
}

/// The file that defines `path`: its longest prefix that is a module with a file.
fn file_of(modules: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|len| modules.get(&path[..len]).cloned())
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn library_files() -> Vec<PathBuf> {
    let src = src();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|file| !file.starts_with(src.join("bin")));
    files.sort();
    files
}

#[test]
fn every_import_points_down_the_layer_order() {
    let src = src();
    let mut wrong = Vec::new();
    for file in library_files() {
        let module = module_path(&src, &file);
        if module.is_empty() {
            continue; // lib.rs declares the modules.
        }
        let Some((own, own_name)) = layer_of(&module) else {
            wrong.push(format!(
                "{} is in no layer: add its module to LAYERS in tests/layering.rs",
                file.display()
            ));
            continue;
        };
        for import in imports_of(&src, &file) {
            let Some((target, target_name)) = layer_of(&import.path) else {
                continue; // a path inside the module itself, or a macro at the crate root.
            };
            if target > own {
                wrong.push(format!(
                    "{}:{} imports crate::{}, but {target_name} sits above {own_name} in the layer order",
                    import.file.strip_prefix(&src).unwrap_or(&import.file).display(),
                    import.line,
                    import.path.join("::"),
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_of_the_library_is_in_a_layer() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("src/lib.rs is readable");
    let declared: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|name| name.trim_end_matches(';'))
        .collect();
    assert!(!declared.is_empty(), "src/lib.rs declares no modules");
    let missing: Vec<&&str> = declared
        .iter()
        .filter(|name| !LAYERS.contains(name))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from LAYERS in tests/layering.rs: {missing:?}"
    );
    let gone: Vec<&&str> = LAYERS
        .iter()
        .filter(|layer| !layer.contains("::") && !declared.contains(layer))
        .collect();
    assert!(
        gone.is_empty(),
        "LAYERS names modules src/lib.rs does not declare: {gone:?}"
    );
}

#[test]
fn no_file_takes_part_in_an_import_cycle() {
    let src = src();
    let src = src.as_path();
    let files = library_files();
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|file| (module_path(src, file), file.clone()))
        .collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in &files {
        for import in imports_of(src, file) {
            if let Some(target) = file_of(&modules, &import.path)
                && target != *file
                && !target.ends_with("lib.rs")
            {
                edges.entry(file.clone()).or_default().insert(target);
            }
        }
    }
    // Tarjan's strongly connected components: any component of two or more files is a cycle.
    struct Walk<'a> {
        edges: &'a BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        cycles: Vec<Vec<&'a PathBuf>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, file: &'a PathBuf) {
            let next = self.index.len();
            self.index.insert(file, next);
            self.low.insert(file, next);
            self.stack.push(file);
            self.on_stack.insert(file);
            for target in self.edges.get(file).into_iter().flatten() {
                if !self.index.contains_key(target) {
                    self.visit(target);
                    let low = self.low[file].min(self.low[target]);
                    self.low.insert(file, low);
                } else if self.on_stack.contains(target) {
                    let low = self.low[file].min(self.index[target]);
                    self.low.insert(file, low);
                }
            }
            if self.low[file] == self.index[file] {
                let mut component = Vec::new();
                while let Some(top) = self.stack.pop() {
                    self.on_stack.remove(top);
                    component.push(top);
                    if top == file {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.cycles.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges: &edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        cycles: Vec::new(),
    };
    for file in &files {
        if !walk.index.contains_key(file) {
            walk.visit(file);
        }
    }
    let described: Vec<String> = walk
        .cycles
        .iter()
        .map(|cycle| {
            let names: Vec<String> = cycle
                .iter()
                .map(|file| file.strip_prefix(src).unwrap_or(file).display().to_string())
                .collect();
            let through: Vec<String> = cycle
                .iter()
                .flat_map(|file| {
                    edges[*file]
                        .iter()
                        .filter(|target| cycle.contains(target))
                        .map(move |target| {
                            format!(
                                "{} -> {}",
                                file.strip_prefix(src).unwrap_or(file).display(),
                                target.strip_prefix(src).unwrap_or(target).display()
                            )
                        })
                })
                .collect();
            format!("{} (imports: {})", names.join(", "), through.join("; "))
        })
        .collect();
    assert!(
        described.is_empty(),
        "files that import each other:\n{}",
        described.join("\n")
    );
}

#[test]
fn the_check_reads_use_trees_and_super_paths() {
    let mut paths = Vec::new();
    expand(&[], "a::{b, c::{d, e as f}, self}", &mut paths);
    let shown: Vec<String> = paths.iter().map(|path| path.join("::")).collect();
    assert_eq!(
        shown,
        ["a::b", "a::c::d", "a::c::e", "a"],
        "a use tree expands per leaf"
    );
    assert_eq!(
        layer_of(&["storage".into(), "postgres".into()]).map(|(_, name)| name),
        Some("storage"),
        "a submodule sits in its module's layer"
    );
}

/// Which module imports which, lowest first:
/// `cargo test --test layering -- --nocapture the_module_graph` prints it.
#[test]
fn the_module_graph() {
    let src = src();
    let mut graph: BTreeMap<(usize, &str), BTreeSet<&str>> = BTreeMap::new();
    for file in library_files() {
        let Some(own) = layer_of(&module_path(&src, &file)) else {
            continue;
        };
        let targets = graph.entry(own).or_default();
        for import in imports_of(&src, &file) {
            if let Some(target) = layer_of(&import.path)
                && target != own
            {
                targets.insert(target.1);
            }
        }
    }
    for ((_, module), targets) in &graph {
        let targets: Vec<&str> = targets.iter().copied().collect();
        println!("{module} -> {}", targets.join(", "));
    }
    assert!(
        graph
            .iter()
            .any(|((_, module), targets)| *module == "startup" && targets.contains("storage")),
        "start-up assembles storage, so the graph must show it"
    );
}
