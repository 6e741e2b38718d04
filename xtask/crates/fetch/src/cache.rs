//! The tool cache: where what is fetched or built once per machine is kept
//! across clones (the load tool, cargo-auditable, Rust's standard library
//! of other targets).

use std::path::{Path, PathBuf};

/// Overrides where tools fetched or built once per machine are kept (the
/// load tool, the Rust standard library of other targets); default: the
/// user's cache directory.
pub const TOOL_CACHE_VARIABLE: &str = "WEBSTACK_TOOL_CACHE";

/// `$WEBSTACK_TOOL_CACHE`, else `$XDG_CACHE_HOME/webstack`, else
/// `$HOME/.cache/webstack`; `fallback` (inside the clone) only when none is
/// set. `variable` reads the environment (a table in tests).
pub fn tool_cache_dir(variable: impl Fn(&str) -> Option<String>, fallback: &Path) -> PathBuf {
    let non_empty = |name: &str| variable(name).filter(|value| !value.is_empty());
    if let Some(dir) = non_empty(TOOL_CACHE_VARIABLE) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = non_empty("XDG_CACHE_HOME") {
        return Path::new(&dir).join("webstack");
    }
    if let Some(home) = non_empty("HOME") {
        return Path::new(&home).join(".cache").join("webstack");
    }
    fallback.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tool_cache_is_outside_the_clone_unless_nothing_names_a_place() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let fallback = Path::new("/clone/target/tools");
        assert_eq!(
            tool_cache_dir(
                lookup(&[(TOOL_CACHE_VARIABLE, "/srv/tools"), ("HOME", "/h")]),
                fallback
            ),
            PathBuf::from("/srv/tools")
        );
        assert_eq!(
            tool_cache_dir(
                lookup(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]),
                fallback
            ),
            PathBuf::from("/x/webstack")
        );
        assert_eq!(
            tool_cache_dir(lookup(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")]), fallback),
            PathBuf::from("/h/.cache/webstack")
        );
        assert_eq!(tool_cache_dir(lookup(&[]), fallback), fallback);
    }
}
