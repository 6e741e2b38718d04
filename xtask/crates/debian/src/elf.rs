//! What the dynamic loader needs of an ELF file, read in Rust (no `readelf`).

use std::{fs, path::Path};

use anyhow::Context;

/// What the dynamic loader needs of an ELF file.
pub struct ElfFacts {
    /// `DT_NEEDED` entries, in the order of the dynamic section.
    pub needed: Vec<String>,
    /// `PT_INTERP`, the program interpreter, if any.
    pub interpreter: Option<String>,
}

pub fn elf_facts(path: &Path) -> anyhow::Result<ElfFacts> {
    let bytes = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .with_context(|| format!("{} is not an ELF file goblin can read", path.display()))?;
    Ok(ElfFacts {
        needed: elf.libraries.iter().map(|name| name.to_string()).collect(),
        interpreter: elf.interpreter.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_facts_of_this_test_binary() {
        let facts = elf_facts(&std::env::current_exe().unwrap()).unwrap();
        assert!(facts.needed.iter().any(|name| name.starts_with("libc.so")));
        assert_eq!(
            facts.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
    }
}
