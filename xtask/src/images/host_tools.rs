//! redis-server, redis-cli and nginx from the images' pinned Debian packages,
//! runnable on any x86_64 glibc Linux without installing anything: each runs
//! through the unpacked tree's own dynamic loader with `--library-path` (the
//! tree holds exactly the libraries the image has, found by ELF `NEEDED`) and
//! `--inhibit-cache`, so neither the host's libraries, its ld.so.cache nor
//! `LD_LIBRARY_PATH` matter.
//!
//! The wrappers are two-line `/bin/sh` scripts under target/tools/bin: a
//! path to an executable is what `REDIS_SERVER_BIN` and the tests expect, and
//! every Linux host has /bin/sh (the images, which have none, never see them).
//!
//! [`pinned_nix`] does the same for Debian's `nix-bin`: a `nix-instantiate`
//! for the flake checks, which needs neither root, /nix nor a daemon, since
//! it only parses and evaluates (its store is `dummy://`, and every other
//! directory Nix may touch is under target/tools/nix/).

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use xshell::Shell;
use xtask_fetch::staging;
use xtask_oci::{Digest, FileContents, Rootfs, RootfsEntry};

use super::{
    debian::{self, DebianContents},
    BuildLayout, DB_CONTENTS, NIX_CONTENTS, PROXY_CONTENTS,
};

/// Wrapper scripts in `bin_dir` (target/tools/bin), one per tool.
#[derive(Clone, Debug)]
pub struct HostTools {
    pub bin_dir: PathBuf,
    pub redis_server: PathBuf,
    pub redis_cli: PathBuf,
    pub nginx: PathBuf,
}

/// Unpacks the db and proxy packages (once per lock content) under
/// target/tools/rootfs/ and writes the wrapper scripts.
pub fn host_tools(_sh: &Shell) -> anyhow::Result<HostTools> {
    let root = crate::project_root();
    let tools_dir = crate::clone_tools_dir();
    let bin_dir = tools_dir.join("bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("create {}", bin_dir.display()))?;
    let cache = BuildLayout::regular(&root).cache;

    let db_root = materialise(&root, &tools_dir, &cache, &DB_CONTENTS)?;
    let proxy_root = materialise(&root, &tools_dir, &cache, &PROXY_CONTENTS)?;
    Ok(HostTools {
        redis_server: write_wrapper(
            &bin_dir,
            "redis-server",
            &db_root,
            "usr/bin/redis-server",
            "",
        )?,
        redis_cli: write_wrapper(&bin_dir, "redis-cli", &db_root, "usr/bin/redis-cli", "")?,
        nginx: write_wrapper(&bin_dir, "nginx", &proxy_root, "usr/sbin/nginx", "")?,
        bin_dir,
    })
}

/// The pinned `nix-instantiate` wrapper (target/tools/bin/nix-instantiate).
#[derive(Clone, Debug)]
pub struct PinnedNix {
    pub nix_instantiate: PathBuf,
    /// `nix-bin 2.26.3+dfsg-1`: what the lock pins, for messages.
    pub package: String,
}

/// The lock's name for the Nix package.
const NIX_PACKAGE: &str = "nix-bin";

/// Unpacks the pinned `nix-bin` and its libraries (once per lock content)
/// under target/tools/rootfs/ and writes target/tools/bin/nix-instantiate,
/// which evaluates with `store = dummy://` and keeps Nix's configuration,
/// state, logs, caches and home under target/tools/nix/, ignoring the
/// caller's Nix settings (`NIX_REMOTE`, `NIX_PATH`, `NIX_CONFIG`, nix.conf).
pub fn pinned_nix() -> anyhow::Result<PinnedNix> {
    let root = crate::project_root();
    let lock = debian::LockFile::read(&root)?;
    let package = lock
        .image_package(NIX_CONTENTS.image, NIX_PACKAGE)
        .map(|locked| format!("{} {}", locked.package, locked.version))
        .with_context(|| {
            format!(
                "{} pins no {NIX_PACKAGE} in images.{}: run `cargo xtask images --update-lock`",
                debian::LOCK_PATH,
                NIX_CONTENTS.image
            )
        })?;
    let tools_dir = crate::clone_tools_dir();
    let bin_dir = tools_dir.join("bin");
    fs::create_dir_all(&bin_dir).with_context(|| format!("create {}", bin_dir.display()))?;
    let cache = BuildLayout::regular(&root).cache;
    let tree = materialise(&root, &tools_dir, &cache, &NIX_CONTENTS)
        .with_context(|| format!("unpack the pinned {package}"))?;

    let nix_dir = tools_dir.join("nix");
    let conf_dir = nix_dir.join("etc");
    fs::create_dir_all(&conf_dir).with_context(|| format!("create {}", conf_dir.display()))?;
    let conf_file = conf_dir.join("nix.conf");
    let conf = "# Written by `cargo xtask` (images::host_tools): evaluation only, nothing is\n\
                # built or stored, so no /nix, daemon, root or build users are needed.\n\
                store = dummy://\n\
                build-users-group =\n";
    // Several tests may get here at once while another's nix reads the file:
    // replace it whole, and only when it differs.
    if fs::read_to_string(&conf_file).ok().as_deref() != Some(conf) {
        staging::write_atomically(&conf_file, conf.as_bytes(), 0o666)?;
    }
    let mut environment = String::from(
        "# Evaluation only (store = dummy://); Nix's own directories are under target/tools/nix/.\n\
         unset NIX_REMOTE NIX_PATH NIX_CONFIG\n",
    );
    for (variable, value) in [
        ("NIX_CONF_DIR", conf_dir.clone()),
        ("NIX_USER_CONF_FILES", conf_file.clone()),
        ("NIX_STATE_DIR", nix_dir.join("state")),
        ("NIX_LOG_DIR", nix_dir.join("log")),
        ("HOME", nix_dir.join("home")),
        ("XDG_CACHE_HOME", nix_dir.join("cache")),
        ("XDG_CONFIG_HOME", nix_dir.join("config")),
        ("XDG_DATA_HOME", nix_dir.join("data")),
        ("XDG_STATE_HOME", nix_dir.join("xdg-state")),
    ] {
        environment.push_str(&format!(
            "{variable}={}; export {variable}\n",
            shell_quote(&value)
        ));
    }
    let nix_instantiate = write_wrapper(
        &bin_dir,
        "nix-instantiate",
        &tree,
        "usr/bin/nix-instantiate",
        &environment,
    )?;
    Ok(PinnedNix {
        nix_instantiate,
        package,
    })
}

struct MaterialisedRootfs {
    directory: PathBuf,
    rootfs: Rootfs,
}

/// The image's Debian files as a real tree under target/tools/rootfs/.
fn materialise(
    root: &Path,
    tools_dir: &Path,
    cache: &debian::DebianCache,
    contents: &DebianContents,
) -> anyhow::Result<MaterialisedRootfs> {
    let platform = super::host_platform()?;
    let rootfs = super::debian_rootfs(root, cache, contents, platform)?;
    let lock = debian::LockFile::read(root)?;
    // Keyed by the pins and the chosen paths: a lock or selection change
    // gives a new tree, an unchanged one reuses the old tree.
    let paths: Vec<&String> = rootfs.entries().keys().collect();
    let key = Digest::sha256(
        serde_json::to_string(&(lock.packages_for(contents.image, platform)?, paths))
            .context("serialise lock entries")?
            .as_bytes(),
    );
    let rootfs_parent = tools_dir.join("rootfs");
    let directory = rootfs_parent.join(format!("{}-{}", contents.image, &key.hex()[..16]));
    if !directory.exists() {
        fs::create_dir_all(&rootfs_parent)
            .with_context(|| format!("create {}", rootfs_parent.display()))?;
        let temporary = staging::temporary_dir(&rootfs_parent, contents.image)?;
        write_tree(&rootfs, temporary.path())?;
        // A concurrent caller may have written the same tree first.
        staging::persist_dir(temporary, &directory);
    }
    Ok(MaterialisedRootfs { directory, rootfs })
}

/// Writes `rootfs` as a real tree under `root` (which must not exist yet)
/// with the same modes; owners are left as they come (host tools run as
/// the caller).
fn write_tree(rootfs: &Rootfs, root: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
    for (path, entry) in rootfs.entries() {
        let destination = root.join(path);
        match entry {
            RootfsEntry::Directory { .. } => fs::create_dir_all(&destination)
                .with_context(|| format!("create {}", destination.display()))?,
            RootfsEntry::File { contents, mode } => {
                match contents {
                    FileContents::Path(source) => fs::copy(source, &destination).map(|_| ()),
                    FileContents::Bytes(bytes) => fs::write(&destination, bytes),
                }
                .with_context(|| format!("write {}", destination.display()))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&destination, fs::Permissions::from_mode(*mode))
                    .with_context(|| format!("chmod {}", destination.display()))?;
            }
            RootfsEntry::Symlink { target } => std::os::unix::fs::symlink(target, &destination)
                .with_context(|| format!("symlink {}", destination.display()))?,
        }
    }
    Ok(())
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

fn write_wrapper(
    bin_dir: &Path,
    name: &str,
    materialised: &MaterialisedRootfs,
    program: &str,
    environment: &str,
) -> anyhow::Result<PathBuf> {
    let tree = &materialised.directory;
    // Followed inside the tree: on Debian 13 /lib64 itself is a link to
    // usr/lib64, and an absolute link must not lead to the host's files.
    let loader = tree.join(materialised.rootfs.resolve("lib64/ld-linux-x86-64.so.2"));
    let library_path = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"]
        .iter()
        .map(|directory| tree.join(directory).display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let script = format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask` (images::host_tools): {name} from the Debian packages pinned in\n\
         # deploy/images.lock.json, run with their own loader and libraries.\n\
         {environment}\
         exec {} --inhibit-cache --library-path {} {} \"$@\"\n",
        shell_quote(&loader),
        shell_quote(Path::new(&library_path)),
        shell_quote(&tree.join(program)),
    );
    let wrapper = bin_dir.join(name);
    let mut temporary = staging::temporary_file(bin_dir, name, 0o755)?;
    temporary
        .write_all(script.as_bytes())
        .with_context(|| format!("write {}", temporary.path().display()))?;
    // Executable whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    temporary
        .as_file()
        .set_permissions(fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", temporary.path().display()))?;
    staging::persist(temporary, &wrapper)?;
    Ok(wrapper)
}
