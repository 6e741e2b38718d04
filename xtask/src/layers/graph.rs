//! References to graphs, graphs to cycles: each file's references resolved
//! to the crate's modules, the module and top-level graphs, and their
//! strongly connected components.

use std::collections::{BTreeMap, BTreeSet};

use super::parse::{file_facts, FileFacts, ModulePath, SourceFile};

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
// Graph -> layers.

/// The layers of an acyclic graph, bottom first: a node's layer is one above
/// the highest layer of anything it refers to, so no node refers to one in
/// its own layer or above. `None` when the graph has a cycle.
pub fn layers_of(graph: &Graph) -> Option<Vec<Vec<String>>> {
    let nodes: BTreeSet<&String> = graph
        .iter()
        .flat_map(|(from, targets)| std::iter::once(from).chain(targets.keys()))
        .collect();
    let mut layer_of: BTreeMap<&String, usize> = BTreeMap::new();
    // Each round places the nodes whose references are all placed; a round
    // that places none means what is left is, or reaches, a cycle.
    while layer_of.len() < nodes.len() {
        let placed: Vec<(&String, usize)> = nodes
            .iter()
            .filter(|node| !layer_of.contains_key(*node))
            .filter_map(|&node| {
                let targets = graph.get(node).map(|targets| targets.keys());
                let mut layer = 0;
                for target in targets.into_iter().flatten() {
                    layer = layer.max(layer_of.get(target)? + 1);
                }
                Some((node, layer))
            })
            .collect();
        if placed.is_empty() {
            return None;
        }
        layer_of.extend(placed);
    }
    let mut layers: Vec<Vec<String>> = Vec::new();
    for (node, layer) in layer_of {
        if layers.len() <= layer {
            layers.resize(layer + 1, Vec::new());
        }
        layers[layer].push(node.clone());
    }
    Some(layers)
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
pub fn describe_cycle(level: &str, graph: &Graph, component: &[String]) -> String {
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
