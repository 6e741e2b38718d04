# The URL of each of flake.nix's inputs, by input name, as JSON for
# xtask/src/flake.rs:
#
#   nix-instantiate --eval --strict --json xtask/nix/flake-inputs.nix -A urls
{
  flake ? ../../flake.nix,
}:
{
  urls = builtins.mapAttrs (name: input: input.url) (import flake).inputs;
}
