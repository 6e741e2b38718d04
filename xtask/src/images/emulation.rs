//! Running another platform's images on this machine: Debian 13's static
//! user-mode emulator (`qemu-user`, pinned in the lock's `tools` part),
//! registered with the kernel's binfmt_misc for as long as a [`Registration`]
//! lives.
//!
//! The handler carries the `F` flag: the kernel opens the emulator when it is
//! registered, so a container finds it although its filesystem has no qemu.
//! A handler the host already has for the platform (with `F`) is used as it
//! is; ours goes in beside it otherwise, under a name with our pid, and is
//! removed on drop (also when the test failed or panicked). Entries a killed
//! xtask left behind are removed on the next registration.

use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use super::pins::{self, Pin, QEMU_TOOL};
use super::Platform;
/// Where the kernel's binfmt_misc filesystem is mounted.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Our handlers' names: this prefix, the machine, `-`, the pid.
const NAME_PREFIX: &str = "webstack-qemu-";

/// The pinned static emulator for `platform` (`usr/bin/qemu-aarch64`),
/// downloading and unpacking the package on first use.
fn pinned_qemu(platform: Platform) -> anyhow::Result<PathBuf> {
    let path = format!("usr/bin/qemu-{}", platform.machine());
    let pin = Pin::Tool {
        name: QEMU_TOOL,
        path: &path,
    };
    let program = pins::ensure(&pin)?;
    let facts = xtask_debian::elf::elf_facts(&program)
        .with_context(|| format!("{} is no usable emulator", program.display()))?;
    if let Some(interpreter) = facts.interpreter {
        anyhow::bail!(
            "{} is dynamically linked ({interpreter}): a container cannot load it; pin a static qemu-user",
            program.display()
        );
    }
    Ok(program)
}

/// The binfmt_misc match of a platform's ELF executables: `magic` and `mask`
/// over the first bytes of the file, from qemu's `scripts/qemu-binfmt-conf.sh`.
struct ElfMatch {
    magic: &'static [u8],
    mask: &'static [u8],
}

/// The ELF header of an executable for `platform`, as qemu registers it:
/// class, data and version, then e_type EXEC or DYN, then e_machine.
fn elf_match(platform: Platform) -> Option<ElfMatch> {
    match platform {
        Platform::Amd64 => None,
        Platform::Arm64 => Some(ElfMatch {
            magic: b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00",
            mask:
                b"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff",
        }),
    }
}

/// `\x7f\x45…`: bytes as binfmt_misc's register line spells them.
fn escaped(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("\\x{byte:02x}")).collect()
}

/// The line written to `register`: `:name:M::magic:mask:interpreter:flags`.
/// `F` (fix binary): the kernel opens the interpreter now, so it works in
/// containers whose filesystem has no such path.
fn register_line(name: &str, matching: &ElfMatch, interpreter: &Path) -> anyhow::Result<String> {
    let path = interpreter.to_str().filter(|path| !path.contains(':'));
    let path = path.with_context(|| {
        format!(
            "{} cannot be a binfmt_misc interpreter (not UTF-8, or it has a `:`)",
            interpreter.display()
        )
    })?;
    Ok(format!(
        ":{name}:M::{}:{}:{path}:F",
        escaped(matching.magic),
        escaped(matching.mask)
    ))
}

/// Why this machine cannot run another platform's images.
#[derive(Debug)]
pub enum Unavailable {
    /// The kernel or our permissions do not allow a handler: the caller
    /// says so in one line and skips.
    Impossible(String),
    /// Something that should have worked did not (fetching the emulator).
    Failed(anyhow::Error),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Impossible(reason) => formatter.write_str(reason),
            Unavailable::Failed(error) => write!(formatter, "{error:#}"),
        }
    }
}

/// Registers emulators with binfmt_misc.
pub struct Emulation;

/// Executables of a platform run on this machine while it lives.
#[derive(Debug)]
pub struct Registration {
    how: How,
    /// We mounted binfmt_misc: unmount it on drop (if nothing else is left).
    mounted: bool,
}

#[derive(Debug)]
enum How {
    /// The platform is this machine's own.
    Native,
    /// The host's own handler, left as it is.
    Host { name: String, interpreter: String },
    /// Ours, removed on drop.
    Ours { name: String, interpreter: PathBuf },
}

impl Emulation {
    /// Makes `platform`'s executables run here: the host's own handler if it
    /// has one with `F`, else the pinned qemu under a handler of our own.
    pub fn register(platform: Platform) -> Result<Registration, Unavailable> {
        let Some(matching) = elf_match(platform) else {
            return Ok(Registration {
                how: How::Native,
                mounted: false,
            });
        };
        let dir = Path::new(BINFMT_DIR);
        let mounted = mount_if_needed(dir)?;
        // From here on the guard exists, so an early return unmounts again.
        let mut registration = Registration {
            how: How::Native,
            mounted,
        };
        if fs::read_to_string(dir.join("status")).is_ok_and(|status| status.trim() == "disabled") {
            return Err(Unavailable::Impossible(format!(
                "binfmt_misc is disabled ({BINFMT_DIR}/status)"
            )));
        }
        remove_stale_entries(dir);
        if let Some((name, interpreter)) = host_handler(dir, &matching) {
            registration.how = How::Host { name, interpreter };
            return Ok(registration);
        }
        let interpreter = pinned_qemu(platform).map_err(Unavailable::Failed)?;
        let name = format!("{NAME_PREFIX}{}-{}", platform.machine(), std::process::id());
        let line = register_line(&name, &matching, &interpreter).map_err(Unavailable::Failed)?;
        // One write: the kernel parses each write to `register` on its own.
        if let Err(error) = fs::write(dir.join("register"), line.as_bytes()) {
            return Err(Unavailable::Impossible(format!(
                "cannot register a binfmt_misc handler in {BINFMT_DIR}: {error}"
            )));
        }
        registration.how = How::Ours { name, interpreter };
        Ok(registration)
    }
}

impl Registration {
    /// One line for the log: which handler runs the platform's executables.
    pub fn describe(&self) -> String {
        match &self.how {
            How::Native => "native, no emulation".to_string(),
            How::Host { name, interpreter } => {
                format!("the host's binfmt_misc handler {name} ({interpreter})")
            }
            How::Ours { name, interpreter } => format!(
                "binfmt_misc handler {name} ({}, flag F){}",
                interpreter.display(),
                if self.mounted {
                    ", binfmt_misc mounted for it"
                } else {
                    ""
                }
            ),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let dir = Path::new(BINFMT_DIR);
        if let How::Ours { name, .. } = &self.how {
            if let Err(error) = unregister(dir, name) {
                eprintln!("emulation: could not remove binfmt_misc handler {name}: {error}");
            }
        }
        if self.mounted && handler_names(dir).is_empty() {
            if let Err(error) = run_quietly("umount", &[BINFMT_DIR]) {
                eprintln!("emulation: could not unmount {BINFMT_DIR}: {error}");
            }
        }
    }
}

/// Mounts binfmt_misc unless it is; whether it mounted it.
fn mount_if_needed(dir: &Path) -> Result<bool, Unavailable> {
    if dir.join("register").exists() {
        return Ok(false);
    }
    if !dir.is_dir() {
        return Err(Unavailable::Impossible(format!(
            "the kernel has no binfmt_misc ({BINFMT_DIR} does not exist)"
        )));
    }
    run_quietly("mount", &["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR]).map_err(|error| {
        Unavailable::Impossible(format!("cannot mount binfmt_misc on {BINFMT_DIR}: {error}"))
    })?;
    if !dir.join("register").exists() {
        return Err(Unavailable::Impossible(format!(
            "binfmt_misc mounted on {BINFMT_DIR}, but it has no register file"
        )));
    }
    Ok(true)
}

/// Runs a program, its first line of stderr as the error.
fn run_quietly(program: &str, args: &[&str]) -> Result<(), String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    match stderr.lines().map(str::trim).find(|line| !line.is_empty()) {
        Some(line) => Err(line.to_string()),
        None => Err(format!("{program} {}: {}", args.join(" "), output.status)),
    }
}

/// The handlers registered now (every file but `register` and `status`).
fn handler_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name != "register" && name != "status")
        .collect()
}

/// Writes `-1` to a handler: the kernel removes it.
fn unregister(dir: &Path, name: &str) -> std::io::Result<()> {
    match fs::write(dir.join(name), b"-1") {
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The pid in one of our handlers' names, `webstack-qemu-<machine>-<pid>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    rest.rsplit_once('-')?.1.parse().ok()
}

/// Removes our handlers whose xtask is gone (killed before its drop ran).
fn remove_stale_entries(dir: &Path) {
    for name in handler_names(dir) {
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match unregister(dir, &name) {
            Ok(()) => eprintln!("emulation: removed stale binfmt_misc handler {name}"),
            Err(error) => eprintln!("emulation: could not remove stale handler {name}: {error}"),
        }
    }
}

/// What binfmt_misc shows of one handler.
#[derive(Debug, PartialEq, Eq)]
struct HandlerStatus {
    enabled: bool,
    interpreter: String,
    flags: String,
    offset: u32,
    /// Lower-case hex, as the kernel prints it.
    magic: String,
    mask: Option<String>,
}

/// Parses a handler's file: `enabled`, `interpreter …`, `flags: …`,
/// `offset …`, `magic …`, `mask …` (extension handlers have no magic).
fn parse_handler(text: &str) -> Option<HandlerStatus> {
    let mut status = HandlerStatus {
        enabled: false,
        interpreter: String::new(),
        flags: String::new(),
        offset: 0,
        magic: String::new(),
        mask: None,
    };
    for line in text.lines() {
        let line = line.trim();
        if line == "enabled" {
            status.enabled = true;
        } else if let Some(value) = line.strip_prefix("interpreter ") {
            status.interpreter = value.to_string();
        } else if let Some(value) = line.strip_prefix("flags:") {
            status.flags = value.trim().to_string();
        } else if let Some(value) = line.strip_prefix("offset ") {
            status.offset = value.parse().ok()?;
        } else if let Some(value) = line.strip_prefix("magic ") {
            status.magic = value.to_string();
        } else if let Some(value) = line.strip_prefix("mask ") {
            status.mask = Some(value.to_string());
        }
    }
    (!status.magic.is_empty()).then_some(status)
}

/// Whether a handler runs the executables `matching` describes: enabled, the
/// same magic and mask at offset 0, and `F` (else containers, which do not
/// have its interpreter, could not use it).
fn serves(status: &HandlerStatus, matching: &ElfMatch) -> bool {
    status.enabled
        && status.offset == 0
        && status.flags.contains('F')
        && status.magic == hex::encode(matching.magic)
        && status.mask.as_deref() == Some(hex::encode(matching.mask).as_str())
}

/// The host's own handler (not one of ours) for these executables, if any.
fn host_handler(dir: &Path, matching: &ElfMatch) -> Option<(String, String)> {
    handler_names(dir)
        .into_iter()
        .filter(|name| !name.starts_with(NAME_PREFIX))
        .find_map(|name| {
            let status = parse_handler(&fs::read_to_string(dir.join(&name)).ok()?)?;
            serves(&status, matching).then_some((name, status.interpreter))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aarch64_register_line_is_qemus_with_the_fix_binary_flag() -> anyhow::Result<()> {
        let matching = elf_match(Platform::Arm64).context("arm64 needs emulation")?;
        let line = register_line(
            "webstack-qemu-aarch64-42",
            &matching,
            Path::new("/cache/qemu-user/usr/bin/qemu-aarch64"),
        )?;
        assert_eq!(
            line,
            r":webstack-qemu-aarch64-42:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/cache/qemu-user/usr/bin/qemu-aarch64:F"
        );
        assert!(register_line("x", &matching, Path::new("/a:b/qemu")).is_err());
        assert!(elf_match(Platform::Amd64).is_none());
        assert_eq!(owner_pid("webstack-qemu-aarch64-42"), Some(42));
        assert_eq!(owner_pid("qemu-aarch64"), None);
        Ok(())
    }

    #[test]
    fn a_host_handler_serves_only_with_the_same_match_and_flag_f() -> anyhow::Result<()> {
        let matching = elf_match(Platform::Arm64).context("arm64 needs emulation")?;
        // What the kernel shows for Debian's qemu-user-binfmt entry.
        let shown = "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: POCF\noffset 0\n\
                     magic 7f454c460201010000000000000000000200b700\n\
                     mask ffffffffffffff00fffffffffffffffffeffffff\n";
        let status = parse_handler(shown).context("a magic handler")?;
        assert_eq!(status.interpreter, "/usr/bin/qemu-aarch64");
        assert!(serves(&status, &matching));
        let without_f = parse_handler(&shown.replace("POCF", "P")).context("parses")?;
        assert!(!serves(&without_f, &matching));
        let disabled = parse_handler(&shown.replace("enabled", "disabled")).context("parses")?;
        assert!(!serves(&disabled, &matching));
        assert_eq!(
            parse_handler("enabled\ninterpreter /x\nflags: \nextension .exe\n"),
            None
        );
        Ok(())
    }
}
