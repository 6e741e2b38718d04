# flake.nix's dev shell and images, evaluated against stand-in inputs
# (stand-in-nixpkgs.nix and an overlay in rust-overlay's place), as JSON for
# the tests in xtask/src/flake.rs:
#
#   nix-instantiate --eval --strict --json xtask/nix/eval-flake.nix \
#     --argstr toolNamesJSON '["rust-toolchain","nginx",…]' -A devShell   # or -A images
#
# toolNamesJSON: the tools docs/nix.md lists, the only packages the stand-in
# nixpkgs has.
{
  toolNamesJSON,
  flake ? ../../flake.nix,
  system ? "x86_64-linux",
  # docs/nix.md's name for the toolchain rust-overlay builds.
  toolchainEntry ? "rust-toolchain",
}:
let
  toolNames = builtins.fromJSON toolNamesJSON;

  stubPackage = name: {
    stubName = name;
    outPath = "/nix/store/stub-${name}";
  };

  genAttrs =
    names: makeValue:
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = makeValue name;
      }) names
    );

  standInNixpkgs = {
    # A string, so importing it copies nothing into a store.
    outPath = toString ./stand-in-nixpkgs.nix;
    lib = { inherit genAttrs; };
  };

  # In rust-overlay's place: the documented tools, and the toolchain built
  # from the file flake.nix hands to rust-bin.fromRustupToolchainFile.
  standInOverlay =
    final: previous:
    genAttrs toolNames stubPackage
    // {
      rust-bin.fromRustupToolchainFile =
        file:
        stubPackage toolchainEntry
        // {
          toolchainFile = toString file;
          toolchainChannel = (builtins.fromTOML (builtins.readFile file)).toolchain.channel;
        };
    };

  outputs = (import flake).outputs {
    self = outputs;
    nixpkgs = standInNixpkgs;
    rust-overlay = {
      overlays.default = standInOverlay;
    };
  };

  packages = outputs.packages.${system};
  shell = outputs.devShells.${system}.default;
  imageAttributes = builtins.filter (name: builtins.match ".*-image" name != null) (
    builtins.attrNames packages
  );
in
{
  devShell = {
    # nixpkgs attribute names, in the order of the shell's `packages`.
    packageNames = map (package: package.stubName) shell.packages;
    # Every toolchain in the shell: the file each was built from and the
    # channel that file pins.
    toolchains = map (package: {
      file = package.toolchainFile;
      channel = package.toolchainChannel;
    }) (builtins.filter (package: package.stubName == toolchainEntry) shell.packages);
  };

  # Each `*-image` package: the arguments of dockerTools.streamLayeredImage
  # that end up in the image's name and config.
  images = genAttrs imageAttributes (
    attribute:
    let
      image = packages.${attribute};
    in
    {
      inherit (image) name tag config;
    }
  );
}
