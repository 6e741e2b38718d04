//! File text to references: the `crate::`, `super::` and `self::` paths of
//! one file, outside comments, literals and test modules, made absolute.

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
