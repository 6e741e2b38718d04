//! `cargo xtask layers`: no import cycle between the modules of a crate of
//! the workspace, read from the `use` paths of its sources.
//!
//! For each crate (each member's library, `src/main.rs` and every binary
//! under `src/bin/`, each its own crate root) every `.rs` file under `src/`
//! is a module: `src/images/debian.rs` is `images::debian`,
//! `src/images/mod.rs` is `images`, `src/main.rs` or `src/lib.rs` the crate
//! root (`crate`). The references are the `crate::…`, `super::…` and
//! `self::…` paths anywhere in the code (`use` groups expanded), each made
//! absolute from the file's module and resolved to the longest prefix that
//! is a module. Not read: comments, string and character literals, and test
//! code: an inline `#[cfg(test)] mod NAME { … }` (from the attribute to its
//! closing brace, counting braces once comments and strings are gone) and a
//! file module declared `#[cfg(test)] mod NAME;` (with its submodules).
//!
//! Known limits (the rules are simple on purpose): a path without a leading
//! `crate`/`super`/`self` (such as `images::x` in the crate root) is not a
//! reference; `super` is relative to the file, not to an inline module in
//! it; `#[path]` attributes are not followed; only the exact attribute
//! `#[cfg(test)]` marks test code.
//!
//! Two graphs per crate: modules (file level) and their first segment below
//! the crate root (top level: `images::debian` counts as `images`), both
//! without self-edges. Their strongly connected components of more than one
//! node are the cycles; each is printed with one `file:line` for every edge
//! inside it, and any cycle fails the command.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use xshell::Shell;

/// Check that no crate of the workspace has an import cycle between its modules.
#[derive(clap::Args)]
pub struct Layers {}

impl Layers {
    pub fn run(self, _sh: &Shell) -> anyhow::Result<()> {
        check(&crate::project_root())
    }
}

/// Reads every crate of the workspace at `root`, prints each one's cycles
/// and fails if there is any.
pub fn check(root: &Path) -> anyhow::Result<()> {
    let mut cycles = 0;
    for unit in workspace_crates(root)? {
        let parsed = parse_crate(&unit.files);
        let modules = module_graph(&parsed);
        let top = top_level_graph(&modules);
        let references: usize = parsed.iter().map(|file| file.references.len()).sum();
        println!(
            "{}: {} modules, {} references",
            unit.name,
            parsed.len(),
            references
        );
        for (level, graph) in [("module", &modules), ("top-level", &top)] {
            for component in cycles_of(graph) {
                cycles += 1;
                print!("{}", describe_cycle(level, graph, &component));
            }
        }
    }
    if cycles > 0 {
        bail!("{cycles} import cycle(s) between modules (listed above)");
    }
    println!("no import cycle between modules");
    Ok(())
}

// ---------------------------------------------------------------------------
// Crates and files.

/// One crate root and the files that are its modules.
struct CrateUnit {
    name: String,
    files: Vec<SourceFile>,
}

/// One `.rs` file: where it is (relative to the workspace root, for the
/// `file:line` examples), its module and its text.
pub struct SourceFile {
    pub path: String,
    pub module: ModulePath,
    pub text: String,
}

/// A module below the crate root: `[]` is the root, `["images", "debian"]`
/// is `images::debian`.
pub type ModulePath = Vec<String>;

/// The workspace members (from the root Cargo.toml) and the crates of each.
fn workspace_crates(root: &Path) -> anyhow::Result<Vec<CrateUnit>> {
    let manifest_path = root.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("read {}", manifest_path.display()))?;
    let members = workspace_members(&manifest);
    if members.is_empty() {
        bail!("no workspace members in {}", manifest_path.display());
    }
    let mut units = Vec::new();
    for member in members {
        let member_manifest = root.join(&member).join("Cargo.toml");
        let text = std::fs::read_to_string(&member_manifest)
            .with_context(|| format!("read {}", member_manifest.display()))?;
        let package = package_name(&text).unwrap_or_else(|| member.clone());
        units.extend(package_crates(
            root,
            &package,
            &root.join(&member).join("src"),
        )?);
    }
    Ok(units)
}

/// The crates of one package: its library (`src/lib.rs` and the modules
/// below `src/`), `src/main.rs` (which owns those modules when there is no
/// library) and each binary under `src/bin/` (`NAME.rs`, or `NAME/main.rs`
/// with its modules).
fn package_crates(root: &Path, package: &str, src: &Path) -> anyhow::Result<Vec<CrateUnit>> {
    let bin = src.join("bin");
    let lib = src.join("lib.rs");
    let main = src.join("main.rs");
    let has_lib = lib.is_file();
    let mut units = Vec::new();
    let mut library = Vec::new();
    for path in rs_files(src)? {
        if path.starts_with(&bin) || (has_lib && path == main) {
            continue;
        }
        library.push(source_file(root, src, &path)?);
    }
    if !library.is_empty() {
        let kind = if has_lib { "lib" } else { "bin" };
        units.push(CrateUnit {
            name: format!("{package} ({kind})"),
            files: library,
        });
    }
    if has_lib && main.is_file() {
        units.push(CrateUnit {
            name: format!("{package} (bin {package})"),
            files: vec![source_file(root, src, &main)?],
        });
    }
    if bin.is_dir() {
        for entry in sorted_entries(&bin)? {
            let (name, files) = if entry.is_dir() {
                let mut files = Vec::new();
                for path in rs_files(&entry)? {
                    files.push(source_file(root, &entry, &path)?);
                }
                (file_name(&entry), files)
            } else if entry.extension().is_some_and(|extension| extension == "rs") {
                let mut file = source_file(root, &bin, &entry)?;
                file.module = Vec::new();
                (stem(&entry), vec![file])
            } else {
                continue;
            };
            units.push(CrateUnit {
                name: format!("{package} (bin {name})"),
                files,
            });
        }
    }
    Ok(units)
}

fn source_file(root: &Path, base: &Path, path: &Path) -> anyhow::Result<SourceFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let relative = path.strip_prefix(base).unwrap_or(path);
    let shown = path.strip_prefix(root).unwrap_or(path);
    Ok(SourceFile {
        path: shown.display().to_string(),
        module: module_of(relative),
        text,
    })
}

/// The module of a file, from its path relative to the crate's source
/// directory: `images/debian.rs` is `images::debian`, `images/mod.rs` is
/// `images`, `main.rs` and `lib.rs` are the root.
pub fn module_of(relative: &Path) -> ModulePath {
    let mut segments: ModulePath = relative
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = segments.last_mut() {
        if let Some(stem) = last.strip_suffix(".rs") {
            *last = stem.to_string();
        }
    }
    let is_root = segments.len() == 1 && matches!(segments[0].as_str(), "main" | "lib");
    if is_root || segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

/// Every `.rs` file under `directory`, in a stable order.
fn rs_files(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in sorted_entries(directory)? {
        if entry.is_dir() {
            files.extend(rs_files(&entry)?);
        } else if entry.extension().is_some_and(|extension| extension == "rs") {
            files.push(entry);
        }
    }
    Ok(files)
}

fn sorted_entries(directory: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let read = || -> std::io::Result<Vec<PathBuf>> {
        let mut entries = std::fs::read_dir(directory)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<std::io::Result<Vec<_>>>()?;
        entries.sort();
        Ok(entries)
    };
    read().with_context(|| format!("list {}", directory.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The `members = [...]` of a workspace manifest (a plain text read: the
/// list is one array of strings).
pub fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest.get(open + 1..close)
        .unwrap_or_default()
        .split(',')
        .map(|member| member.trim().trim_matches('"').to_string())
        .filter(|member| !member.is_empty())
        .collect()
}

/// The `name` of a package manifest's `[package]` table.
pub fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some((key, value)) = line.split_once('=') {
            if in_package && key.trim() == "name" {
                return Some(value.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// File text -> references.

/// One `crate::`/`super::`/`self::` path of a file, made absolute (still
/// naming items: resolving it to a module needs the crate's modules).
#[derive(Debug, PartialEq, Eq)]
pub struct Reference {
    pub path: ModulePath,
    pub line: usize,
}

/// What the checker reads from one file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileFacts {
    pub references: Vec<Reference>,
    /// Submodules declared `#[cfg(test)] mod NAME;` (test code in files of their own).
    pub test_modules: Vec<String>,
}

/// The references of a file whose module is `module`, outside comments,
/// literals and test modules.
pub fn file_facts(text: &str, module: &[String]) -> FileFacts {
    let tokens = tokenize(&code_only(text));
    let (tokens, test_modules) = without_test_modules(tokens);
    let mut references = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = matches!(&tokens[i].kind, Kind::Word(word) if is_path_start(word))
            && tokens
                .get(i + 1)
                .is_some_and(|next| next.kind == Kind::PathSep)
            && !(i > 0 && tokens[i - 1].kind == Kind::PathSep);
        if !starts_path {
            i += 1;
            continue;
        }
        let mut paths = Vec::new();
        let after = use_tree(&tokens, i, Vec::new(), &mut paths);
        for (segments, line) in paths {
            if let Some(path) = absolute(&segments, module) {
                references.push(Reference { path, line });
            }
        }
        i = after.max(i + 1);
    }
    FileFacts {
        references,
        test_modules,
    }
}

fn is_path_start(word: &str) -> bool {
    matches!(word, "crate" | "super" | "self")
}

/// `text` with comments, string literals and character literals blanked
/// out (newlines kept, so lines still count right).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let starts_token = |i: usize| i == 0 || !is_ident(chars[i - 1]);
    let at = |i: usize| chars.get(i).copied();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let end = if c == '/' && at(i + 1) == Some('/') {
            (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len())
        } else if c == '/' && at(i + 1) == Some('*') {
            // Block comments nest.
            let (mut depth, mut j) = (0usize, i);
            while j < chars.len() {
                if chars[j] == '/' && at(j + 1) == Some('*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && at(j + 1) == Some('/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j.min(chars.len())
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() {
                match chars[j] {
                    '\\' => j += 2,
                    '"' => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            j.min(chars.len())
        } else if let Some(end) = raw_string_end(&chars, i).filter(|_| {
            // `r"…"`, `r#"…"#`, also as `br`/`cr`.
            starts_token(i) || (i > 0 && matches!(chars[i - 1], 'b' | 'c') && starts_token(i - 1))
        }) {
            end
        } else if c == '\'' && at(i + 1) == Some('\\') {
            // An escaped character: '\n', '\'', '\u{…}'.
            (i + 3..chars.len())
                .find(|&j| chars[j] == '\'')
                .map_or(chars.len(), |j| j + 1)
        } else if c == '\'' && at(i + 2) == Some('\'') {
            i + 3
        } else {
            // Code, and the quote of a lifetime or label.
            out.push(c);
            i += 1;
            continue;
        };
        out.extend(
            chars[i..end]
                .iter()
                .map(|&c| if c == '\n' { '\n' } else { ' ' }),
        );
        i = end;
    }
    out
}

/// Where the raw string starting with the `r` at `i` ends, if one does.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if chars[i] != 'r' {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    let open = i + 1 + hashes;
    if chars.get(open) != Some(&'"') {
        return None;
    }
    let closes = |j: usize| chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#'));
    Some(
        (open + 1..chars.len())
            .find(|&j| closes(j))
            .map_or(chars.len(), |j| j + 1 + hashes),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    PathSep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
}

/// Words (identifiers, keywords, numbers; `r#name` as `name`), `::`, and
/// single punctuation characters, each with its line (from 1).
fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let mut word: String = chars[start..i].iter().collect();
            let raw = word == "r" && chars.get(i) == Some(&'#');
            if raw && chars.get(i + 1).is_some_and(|&c| is_ident(c)) {
                let start = i + 1;
                i = start;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                word = chars[start..i].iter().collect();
            }
            tokens.push(Token {
                kind: Kind::Word(word),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token {
                kind: Kind::PathSep,
                line,
            });
            i += 2;
        } else {
            tokens.push(Token {
                kind: Kind::Punct(c),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// The tokens without inline `#[cfg(test)] mod NAME { … }` modules (the
/// attribute, any attributes after it, a `pub`/`pub(…)`, and the module up
/// to its closing brace), and the names of `#[cfg(test)] mod NAME;`.
fn without_test_modules(tokens: Vec<Token>) -> (Vec<Token>, Vec<String>) {
    let is = |i: usize, kind: &Kind| tokens.get(i).is_some_and(|token| token.kind == *kind);
    let word = |text: &str| Kind::Word(text.to_string());
    let mut kept = Vec::new();
    let mut test_modules = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let cfg_test = [
            Kind::Punct('#'),
            Kind::Punct('['),
            word("cfg"),
            Kind::Punct('('),
            word("test"),
            Kind::Punct(')'),
            Kind::Punct(']'),
        ];
        if !cfg_test.iter().enumerate().all(|(k, kind)| is(i + k, kind)) {
            kept.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let mut j = i + cfg_test.len();
        // Further attributes.
        while is(j, &Kind::Punct('#')) && is(j + 1, &Kind::Punct('[')) {
            j = after_group(&tokens, j + 1, '[', ']');
        }
        if is(j, &word("pub")) {
            j += 1;
            if is(j, &Kind::Punct('(')) {
                j = after_group(&tokens, j, '(', ')');
            }
        }
        let name = match tokens.get(j + 1).map(|token| &token.kind) {
            Some(Kind::Word(name)) if is(j, &word("mod")) => name.clone(),
            _ => {
                // Test code that is not a module (a function, a use): kept.
                kept.push(tokens[i].clone());
                i += 1;
                continue;
            }
        };
        if is(j + 2, &Kind::Punct('{')) {
            i = after_group(&tokens, j + 2, '{', '}');
        } else if is(j + 2, &Kind::Punct(';')) {
            test_modules.push(name);
            i = j + 3;
        } else {
            kept.push(tokens[i].clone());
            i += 1;
        }
    }
    (kept, test_modules)
}

/// The index after the `close` that matches the `open` at `start`.
fn after_group(tokens: &[Token], start: usize, open: char, close: char) -> usize {
    let mut depth = 0usize;
    for (i, token) in tokens.iter().enumerate().skip(start) {
        if token.kind == Kind::Punct(open) {
            depth += 1;
        } else if token.kind == Kind::Punct(close) {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return i + 1;
            }
        }
    }
    tokens.len()
}

/// Reads the path (or `use` tree) at `i` after `prefix`, pushing every full
/// path it names with the line of its last segment; returns the index after
/// it. `a::{b, c::{d, e}}` gives `a::b`, `a::c::d`, `a::c::e`; `self` in a
/// group names the group's prefix; `as` renames and `*` end a path.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    mut path: Vec<String>,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut line = tokens.get(i).map_or(0, |token| token.line);
    loop {
        match tokens.get(i).map(|token| &token.kind) {
            Some(Kind::Word(word)) => {
                path.push(word.clone());
                line = tokens[i].line;
                i += 1;
                if tokens
                    .get(i)
                    .is_some_and(|token| token.kind == Kind::PathSep)
                {
                    i += 1;
                    continue;
                }
                out.push((path, line));
                return i;
            }
            Some(Kind::Punct('{')) => {
                i += 1;
                loop {
                    match tokens.get(i).map(|token| &token.kind) {
                        None => return i,
                        Some(Kind::Punct('}')) => return i + 1,
                        Some(Kind::Punct(',')) => i += 1,
                        Some(_) => {
                            let after = use_tree(tokens, i, path.clone(), out);
                            // Skip what a tree does not name (`as x`).
                            i = after.max(i + 1);
                            while let Some(token) = tokens.get(i) {
                                match token.kind {
                                    Kind::Punct(',') | Kind::Punct('}') => break,
                                    Kind::Punct('{') => i = after_group(tokens, i, '{', '}'),
                                    _ => i += 1,
                                }
                            }
                        }
                    }
                }
            }
            _ => {
                // `*`, or a path that ends in `::` before something else.
                out.push((path, line));
                return i;
            }
        }
    }
}

/// `segments` (starting with `crate`, `self` or `super`) as a path from the
/// crate root, seen from `module`; `None` for a `super` above the root.
fn absolute(segments: &[String], module: &[String]) -> Option<ModulePath> {
    let (first, rest) = segments.split_first()?;
    let mut path: ModulePath = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module.split_last()?.1.to_vec(),
        _ => return None,
    };
    for segment in rest {
        match segment.as_str() {
            "self" => {}
            "super" => {
                path.pop()?;
            }
            _ => path.push(segment.clone()),
        }
    }
    Some(path)
}

// ---------------------------------------------------------------------------
// References -> graphs.

/// A file's references resolved to modules of its crate.
#[derive(Debug)]
pub struct ParsedFile {
    pub path: String,
    pub module: ModulePath,
    /// `(module referred to, line)`.
    pub references: Vec<(ModulePath, usize)>,
}

/// Reads every file of one crate, drops the files of test-only modules, and
/// resolves each reference to the longest prefix that is a module.
pub fn parse_crate(files: &[SourceFile]) -> Vec<ParsedFile> {
    let facts: Vec<FileFacts> = files
        .iter()
        .map(|file| file_facts(&file.text, &file.module))
        .collect();
    let test_only: Vec<ModulePath> = files
        .iter()
        .zip(&facts)
        .flat_map(|(file, facts)| {
            facts.test_modules.iter().map(|name| {
                let mut module = file.module.clone();
                module.push(name.clone());
                module
            })
        })
        .collect();
    let is_test = |module: &ModulePath| test_only.iter().any(|test| module.starts_with(test));
    let modules: BTreeSet<&ModulePath> = files
        .iter()
        .map(|file| &file.module)
        .filter(|module| !is_test(module))
        .collect();
    let resolve = |path: &ModulePath| -> ModulePath {
        (0..=path.len())
            .rev()
            .map(|length| path[..length].to_vec())
            .find(|prefix| modules.contains(prefix))
            .unwrap_or_default()
    };
    files
        .iter()
        .zip(facts)
        .filter(|(file, _)| !is_test(&file.module))
        .map(|(file, facts)| ParsedFile {
            path: file.path.clone(),
            module: file.module.clone(),
            references: facts
                .references
                .iter()
                .map(|reference| (resolve(&reference.path), reference.line))
                .collect(),
        })
        .collect()
}

/// Where an edge comes from: the first reference that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub file: String,
    pub line: usize,
}

/// Directed graph, node names to the nodes they refer to (with an example
/// site); ordered maps so that output is stable.
pub type Graph = BTreeMap<String, BTreeMap<String, Site>>;

/// How a module is shown: `crate` for the root, else `a::b`.
pub fn module_name(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_string()
    } else {
        module.join("::")
    }
}

/// Module → module edges (no self-edges).
pub fn module_graph(files: &[ParsedFile]) -> Graph {
    let mut graph = Graph::new();
    for file in files {
        let from = module_name(&file.module);
        for (target, line) in &file.references {
            let to = module_name(target);
            if to != from {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert(Site {
                        file: file.path.clone(),
                        line: *line,
                    });
            }
        }
    }
    graph
}

/// The module graph with each module replaced by its first segment below
/// the crate root (`crate` for the root), without self-edges.
pub fn top_level_graph(modules: &Graph) -> Graph {
    let top = |name: &str| name.split("::").next().unwrap_or(name).to_string();
    let mut graph = Graph::new();
    for (from, targets) in modules {
        for (to, site) in targets {
            let (from, to) = (top(from), top(to));
            if from != to {
                graph
                    .entry(from)
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| site.clone());
            }
        }
    }
    graph
}

// ---------------------------------------------------------------------------
// Graph -> cycles.

/// The strongly connected components of more than one node (the cycles),
/// each sorted, in a stable order.
pub fn cycles_of(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = graph
        .iter()
        .flat_map(|(from, targets)| std::iter::once(from).chain(targets.keys()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let index_of: BTreeMap<&String, usize> =
        nodes.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let adjacency: Vec<Vec<usize>> = nodes
        .iter()
        .map(|node| {
            graph
                .get(*node)
                .map(|targets| targets.keys().map(|to| index_of[to]).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut cycles: Vec<Vec<String>> = strongly_connected_components(&adjacency)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            let mut names: Vec<String> = component.iter().map(|&i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    cycles.sort();
    cycles
}

/// Tarjan's algorithm over nodes `0..adjacency.len()`. Written here rather
/// than taken from `petgraph`: it is thirty lines over graphs of a few dozen
/// nodes, and xtask's dependencies are kept to what it cannot do without.
fn strongly_connected_components(adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        adjacency: &'a [Vec<usize>],
        next_index: usize,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        components: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next_index);
            self.low[v] = self.next_index;
            self.next_index += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            let adjacency = self.adjacency;
            for &w in &adjacency[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(index) if self.on_stack[w] => self.low[v] = self.low[v].min(index),
                    Some(_) => {}
                }
            }
            if self.index[v] == Some(self.low[v]) {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let count = adjacency.len();
    let mut tarjan = Tarjan {
        adjacency,
        next_index: 0,
        index: vec![None; count],
        low: vec![0; count],
        on_stack: vec![false; count],
        stack: Vec::new(),
        components: Vec::new(),
    };
    for v in 0..count {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    tarjan.components
}

/// A cycle and, for each edge inside it, where it comes from.
fn describe_cycle(level: &str, graph: &Graph, component: &[String]) -> String {
    let mut text = format!("  {level} cycle: {}\n", component.join(", "));
    for from in component {
        for (to, site) in graph.get(from).into_iter().flatten() {
            if component.contains(to) {
                text += &format!("    {from} -> {to}  ({}:{})\n", site.file, site.line);
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str) -> ModulePath {
        if path.is_empty() {
            Vec::new()
        } else {
            path.split("::").map(str::to_string).collect()
        }
    }

    /// The references of `text` seen from `at`, as `(path, line)`.
    fn references(text: &str, at: &str) -> Vec<(String, usize)> {
        file_facts(text, &module(at))
            .references
            .into_iter()
            .map(|reference| (reference.path.join("::"), reference.line))
            .collect()
    }

    fn assert_references(text: &str, at: &str, expected: &[(&str, usize)]) {
        let expected: Vec<(String, usize)> = expected
            .iter()
            .map(|&(path, line)| (path.to_string(), line))
            .collect();
        assert_eq!(references(text, at), expected, "{text}");
    }

    /// A crate from `(module, text)` pairs; each file is where its module would be.
    fn crate_of(modules: &[(&str, &str)]) -> Vec<SourceFile> {
        modules
            .iter()
            .map(|&(at, text)| SourceFile {
                path: if at.is_empty() {
                    "src/main.rs".to_string()
                } else {
                    format!("src/{}.rs", at.replace("::", "/"))
                },
                module: module(at),
                text: text.to_string(),
            })
            .collect()
    }

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut graph = Graph::new();
        for (line, (from, to)) in edges.iter().enumerate() {
            graph.entry(from.to_string()).or_default().insert(
                to.to_string(),
                Site {
                    file: "f.rs".to_string(),
                    line,
                },
            );
        }
        graph
    }

    #[test]
    fn files_map_to_modules() {
        assert_eq!(
            module_of(Path::new("images/debian.rs")),
            module("images::debian")
        );
        assert_eq!(module_of(Path::new("images/mod.rs")), module("images"));
        assert_eq!(module_of(Path::new("main.rs")), module(""));
        assert_eq!(module_of(Path::new("lib.rs")), module(""));
        assert_eq!(module_of(Path::new("swarm/main.rs")), module("swarm::main"));
    }

    #[test]
    fn grouped_uses_expand_with_nested_braces_self_and_renames() {
        let text = "use crate::{stack::{self, Service as S}, docker::{model::{Image, Tag}, *}};\n\
                    use crate::render;";
        assert_references(
            text,
            "swarm",
            &[
                ("stack", 1),
                ("stack::Service", 1),
                ("docker::model::Image", 1),
                ("docker::model::Tag", 1),
                ("docker", 1),
                ("render", 2),
            ],
        );
    }

    #[test]
    fn multi_line_groups_give_each_path_its_line() {
        let text = "use super::{\n    BuiltImage,\n    layer::Rootfs,\n};";
        assert_references(
            text,
            "images::oci",
            &[("images::BuiltImage", 2), ("images::layer::Rootfs", 3)],
        );
    }

    #[test]
    fn super_and_self_are_relative_to_the_file_module() {
        let text =
            "fn f() { super::super::layer::gzip(x); self::inner::g(); super::docker::id(); }";
        assert_references(
            text,
            "images::oci::sub",
            &[
                ("images::layer::gzip", 1),
                ("images::oci::sub::inner::g", 1),
                ("images::oci::docker::id", 1),
            ],
        );
        // Above the root is no reference; `Self::` is none either.
        assert!(references("use super::x; Self::new();", "").is_empty());
    }

    #[test]
    fn expression_paths_count_and_stop_at_generics_and_struct_literals() {
        let text = "let x = crate::stack::Stack::<u8>::new(); let y = crate::poll::Look { a: 1 };";
        assert_references(text, "cluster", &[("stack::Stack", 1), ("poll::Look", 1)]);
    }

    #[test]
    fn comments_and_literals_are_not_read() {
        let text = r##"
// use crate::a;
/* use crate::b; /* nested */ use crate::c; */
/// [`crate::d`]
let s = "crate::e \" crate::f";
let r = r#"crate::g " crate::h"#;
let q = '"'; let brace = '{'; let l: &'static str = "x";
use crate::kept;
"##;
        assert_references(text, "m", &[("kept", 8)]);
    }

    #[test]
    fn cfg_test_modules_are_skipped_and_file_test_modules_named() {
        let text = "use crate::a;\n\
                    #[cfg(test)]\n\
                    mod tests {\n    use crate::b;\n    fn f() { if x { crate::c::f() } }\n}\n\
                    #[cfg(test)]\n#[path = \"x.rs\"]\nmod fetch_tests;\n\
                    #[cfg(test)]\nfn helper() { crate::d::f(); }\n\
                    use crate::e;";
        let facts = file_facts(text, &module("m"));
        let paths: Vec<String> = facts
            .references
            .iter()
            .map(|reference| reference.path.join("::"))
            .collect();
        assert_eq!(paths, ["a", "d::f", "e"]);
        assert_eq!(facts.test_modules, ["fetch_tests"]);
    }

    #[test]
    fn references_resolve_to_the_longest_module_prefix() {
        let files = crate_of(&[
            ("", "mod images; mod stack; #[cfg(test)] mod tests;"),
            (
                "images",
                "use crate::stack::Service; fn f() { crate::project_root(); }",
            ),
            (
                "images::debian",
                "use super::{oci::Manifest, Built}; use crate::nowhere::X;",
            ),
            ("images::oci", ""),
            ("stack", ""),
            ("tests", "use crate::images::debian::x;"),
            ("tests::more", "use crate::images::oci::y;"),
        ]);
        let resolved: Vec<String> = parse_crate(&files)
            .iter()
            .map(|file| {
                let targets: Vec<String> = file
                    .references
                    .iter()
                    .map(|(target, _)| module_name(target))
                    .collect();
                format!("{} -> {}", module_name(&file.module), targets.join(", "))
            })
            .collect();
        assert_eq!(
            resolved,
            [
                "crate -> ",
                "images -> stack, crate",
                "images::debian -> images::oci, images, crate",
                "images::oci -> ",
                "stack -> ",
            ]
        );
    }

    #[test]
    fn a_three_module_cycle_is_found_at_both_levels() {
        let files = crate_of(&[
            ("render", "use crate::swarm::render::yaml;"),
            ("swarm::render", "fn f() {\n crate::stack::model(); }"),
            ("swarm", "pub mod render;"),
            ("stack", "use crate::render::{self};"),
            ("poll", "use crate::stack;"),
        ]);
        let modules = module_graph(&parse_crate(&files));
        assert_eq!(
            cycles_of(&modules),
            [vec![
                "render".to_string(),
                "stack".to_string(),
                "swarm::render".to_string()
            ]]
        );
        assert_eq!(
            modules["swarm::render"]["stack"],
            Site {
                file: "src/swarm/render.rs".to_string(),
                line: 2
            }
        );
        let top = top_level_graph(&modules);
        assert_eq!(
            cycles_of(&top),
            [vec![
                "render".to_string(),
                "stack".to_string(),
                "swarm".to_string()
            ]]
        );
        let text = describe_cycle("module", &modules, &cycles_of(&modules)[0]);
        assert!(
            text.contains("swarm::render -> stack  (src/swarm/render.rs:2)"),
            "{text}"
        );
    }

    #[test]
    fn an_acyclic_graph_passes_and_components_are_separate() {
        let acyclic = graph(&[("a", "b"), ("b", "c"), ("a", "c"), ("d", "a")]);
        assert!(cycles_of(&acyclic).is_empty());
        let two = graph(&[
            ("a", "b"),
            ("b", "a"),
            ("b", "c"),
            ("c", "d"),
            ("d", "c"),
            ("e", "e"),
        ]);
        assert_eq!(
            cycles_of(&two),
            [
                vec!["a".to_string(), "b".to_string()],
                vec!["c".to_string(), "d".to_string()]
            ]
        );
    }

    #[test]
    fn self_edges_are_dropped_at_the_top_level() {
        let modules = graph(&[("images::oci", "images"), ("images", "images::oci")]);
        assert_eq!(cycles_of(&modules).len(), 1);
        assert!(top_level_graph(&modules).is_empty());
    }

    #[test]
    fn manifests_name_members_and_packages() {
        let workspace = "[workspace]\nresolver = \"2\"\nmembers = [\"webapp\", \"nginx/proxy\", \"xtask\",\n \"tests\"]\n";
        assert_eq!(
            workspace_members(workspace),
            ["webapp", "nginx/proxy", "xtask", "tests"]
        );
        let package =
            "[package]\nversion = \"1\"\nname = \"stack-tests\"\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(package).as_deref(), Some("stack-tests"));
    }
}
