use super::graph::*;
use super::parse::*;
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
    let text = "fn f() { super::super::layer::gzip(x); self::inner::g(); super::docker::id(); }";
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

#[test]
fn layers_put_each_module_above_everything_it_refers_to() {
    let acyclic = graph(&[
        ("crate", "e2e"),
        ("e2e", "compose"),
        ("e2e", "stack"),
        ("compose", "docker"),
        ("docker", "stack"),
        ("render", "stack"),
    ]);
    let names = |layer: &[&str]| {
        layer
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        layers_of(&acyclic),
        Some(vec![
            names(&["stack"]),
            names(&["docker", "render"]),
            names(&["compose"]),
            names(&["e2e"]),
            names(&["crate"]),
        ])
    );
    let cyclic = graph(&[("a", "b"), ("b", "a"), ("c", "a")]);
    assert_eq!(layers_of(&cyclic), None);
}
