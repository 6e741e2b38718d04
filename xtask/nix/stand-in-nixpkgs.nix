# A stand-in for nixpkgs, so xtask/src/flake.rs can evaluate flake.nix where
# nixpkgs cannot be fetched. flake.nix imports it as `import nixpkgs { … }`.
#
# It holds only the functions flake.nix builds its dev shell and images with,
# each returning its arguments so the tests can read them, and no packages:
# those come from the overlays, as rust-overlay's `rust-bin` does in the real
# nixpkgs. eval-flake.nix passes one with exactly the tools docs/nix.md lists,
# so a package the docs do not list fails with "attribute … missing".
{
  system,
  overlays ? [ ],
}:
let
  base = {
    inherit system;
    mkShell = arguments: arguments;
    dockerTools.streamLayeredImage = arguments: arguments;
  };
  # As nixpkgs applies overlays: each sees the final set and the one before it.
  applyOverlay = previous: overlay: previous // overlay final previous;
  final = builtins.foldl' applyOverlay base overlays;
in
final
