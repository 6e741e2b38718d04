# flake.nix: the Nix way to work on webstack, next to the plain `cargo xtask` one.
#
# - `nix develop`: the Rust toolchain rust-toolchain.toml pins (with clippy and
#   rustfmt), nginx, redis, the Docker client, docker-compose, oha, and what
#   `cargo xtask` shells out to (git, dpkg-deb).
# - `nix build` (= `.#webapp`): the webapp, httpcheck, proxy-init and acme binaries.
# - `.#webapp-image`, `.#db-image`, `.#proxy-image`: scripts that stream the
#   three images into `docker load`, a Nix alternative to `cargo xtask images`.
# - `nix flake check`: clippy over the workspace, the webapp's and the proxy's tests.
# - `nix fmt`: formats this file.
#
# Every input is pinned to a commit in its URL; the first `nix develop` (or any
# other flake command) writes flake.lock with the matching content hashes.
{
  description = "webstack: nginx in front of an axum webapp backed by Redis";

  inputs = {
    # nixos-26.05, the current NixOS release branch, at a fixed commit.
    nixpkgs.url = "github:NixOS/nixpkgs/7c8764b7c7b09b34f632464276218ef9090eaa11";

    # rust-overlay turns rust-toolchain.toml into a toolchain. Pinned to a commit
    # that already carries the Rust 1.95.0 manifest (released 2026-04-16).
    rust-overlay = {
      url = "github:oxalica/rust-overlay/62e3b8aedabc240e5b0cc9fae003bc9edfebbc9b";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      rust-overlay,
    }:
    let
      # The images are Linux images and the stack is tested on Linux only.
      supportedSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      forEachSupportedSystem =
        makeOutputs:
        nixpkgs.lib.genAttrs supportedSystems (
          system:
          makeOutputs (
            import nixpkgs {
              inherit system;
              overlays = [ rust-overlay.overlays.default ];
            }
          )
        );

      # Everything per system is built from this one function, so packages,
      # checks and the dev shell all use the same toolchain and package set.
      projectFor =
        pkgs:
        let
          lib = pkgs.lib;

          # The same compiler as outside Nix: rust-toolchain.toml names the
          # channel (1.95.0), the profile and the clippy/rustfmt components.
          rustToolchain = pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml;

          rustPlatform = pkgs.makeRustPlatform {
            cargo = rustToolchain;
            rustc = rustToolchain;
          };

          webappManifest = lib.importTOML ./webapp/Cargo.toml;

          # Only what cargo needs, so editing the README, deploy files or the
          # nginx configuration does not rebuild the binaries. All workspace
          # members must be present for cargo to load the workspace, even
          # though only webapp and proxy are built.
          workspaceSource = lib.fileset.toSource {
            root = ./.;
            fileset = lib.fileset.unions [
              ./Cargo.toml
              ./Cargo.lock
              ./webapp
              ./nginx/proxy
              ./nginx/acme
              ./xtask
              ./tests
            ];
          };

          # Same search path as the Debian-based images, for `docker exec`.
          searchPath = [ "PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin" ];

          # The Healthcheck of an image config, with the timings the images of
          # `cargo xtask images` use. Docker stores durations as integer
          # nanoseconds; StartPeriod is read by Docker Engine like the others.
          second = 1000000000;
          healthcheckRunning = command: {
            Test = [ "CMD" ] ++ command;
            Interval = 10 * second;
            Timeout = 3 * second;
            StartPeriod = 5 * second;
            Retries = 3;
          };

          webapp = rustPlatform.buildRustPackage {
            pname = "webapp";
            version = webappManifest.package.version;
            src = workspaceSource;
            cargoLock.lockFile = ./Cargo.lock;

            # The webapp and the proxy image's programs (nginx/proxy/, nginx/acme/). The
            # workspace also holds xtask and the end-to-end suite; neither
            # belongs in the package, and the end-to-end suite needs Docker.
            cargoBuildFlags = [
              "-p"
              "webapp"
              "-p"
              "proxy"
              "-p"
              "acme"
            ];
            cargoTestFlags = [
              "-p"
              "webapp"
              "-p"
              "proxy"
              "-p"
              "acme"
            ];

            # The webapp's integration tests start a real redis-server; they
            # look for it in REDIS_SERVER_BIN first.
            nativeCheckInputs = [ pkgs.redis ];
            env.REDIS_SERVER_BIN = "${pkgs.redis}/bin/redis-server";

            meta = {
              description = "axum web app of the webstack demo: hit counter and cache in Redis";
              mainProgram = "webapp";
            };
          };

          # The images' only account, as in the Debian-based images: uid and
          # gid 65532, named "nonroot". No shell exists, hence nologin.
          nonrootAccount = pkgs.fakeNss.override {
            extraPasswdLines = [ "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" ];
            extraGroupLines = [ "nonroot:x:65532:" ];
          };

          # As in the Debian-based images: /tmp exists, world-writable and
          # sticky, as the mount point for `--tmpfs /tmp` on a read-only root.
          makeTemporaryDirectory = ''
            mkdir -m 1777 tmp
          '';

          # Each image exposes its programs at the same absolute paths as the
          # images `cargo xtask images` builds, so deploy files, entrypoints
          # and healthchecks are the same for both.
          webappPaths = pkgs.runCommand "webstack-webapp-paths" { } ''
            mkdir -p $out/usr/local/bin
            ln -s ${webapp}/bin/webapp $out/usr/local/bin/webapp
          '';

          dbPaths = pkgs.runCommand "webstack-db-paths" { } ''
            mkdir -p $out/usr/bin
            ln -s ${pkgs.redis}/bin/redis-server $out/usr/bin/redis-server
            ln -s ${pkgs.redis}/bin/redis-cli $out/usr/bin/redis-cli
          '';

          proxyPaths = pkgs.runCommand "webstack-proxy-paths" { } ''
            mkdir -p $out/usr/sbin $out/usr/local/bin $out/etc/nginx/errors
            ln -s ${pkgs.nginx}/bin/nginx $out/usr/sbin/nginx
            ln -s ${webapp}/bin/httpcheck $out/usr/local/bin/httpcheck
            ln -s ${webapp}/bin/proxy-init $out/usr/local/bin/proxy-init
            ln -s ${webapp}/bin/acme $out/usr/local/bin/acme
            cp ${pkgs.nginx}/conf/mime.types $out/etc/nginx/mime.types
            # The configuration and the front's error answers only: nginx/
            # also holds the proxy crate.
            cp ${./nginx}/*.conf $out/etc/nginx/
            cp ${./nginx/errors}/*.json $out/etc/nginx/errors/
          '';

          webappImage = pkgs.dockerTools.streamLayeredImage {
            name = "webstack/webapp";
            tag = "local";
            contents = [
              nonrootAccount
              webappPaths
            ];
            extraCommands = makeTemporaryDirectory;
            config = {
              User = "65532:65532";
              Env = searchPath;
              Entrypoint = [ "/usr/local/bin/webapp" ];
              StopSignal = "SIGTERM";
              ExposedPorts = {
                "5000/tcp" = { };
              };
              Healthcheck = healthcheckRunning [
                "/usr/local/bin/webapp"
                "healthcheck"
              ];
            };
          };

          dbImage = pkgs.dockerTools.streamLayeredImage {
            name = "webstack/db";
            tag = "local";
            contents = [
              nonrootAccount
              dbPaths
            ];
            extraCommands = makeTemporaryDirectory;
            # Named volumes copy the ownership of the directory they are
            # mounted over, so /data must already belong to nonroot.
            fakeRootCommands = ''
              mkdir -p ./data
              chown 65532:65532 ./data
            '';
            config = {
              User = "65532:65532";
              Env = searchPath;
              WorkingDir = "/data";
              Entrypoint = [ "/usr/bin/redis-server" ];
              StopSignal = "SIGTERM";
              ExposedPorts = {
                "6379/tcp" = { };
              };
              # NOAUTH is an answer: it proves redis-server is alive without
              # the password.
              Healthcheck = healthcheckRunning [
                "/usr/bin/redis-cli"
                "ping"
              ];
            };
          };

          proxyImage = pkgs.dockerTools.streamLayeredImage {
            name = "webstack/proxy";
            tag = "local";
            contents = [
              nonrootAccount
              proxyPaths
            ];
            extraCommands = makeTemporaryDirectory;
            config = {
              User = "65532:65532";
              Env = searchPath;
              # SIGQUIT is nginx's graceful shutdown: open requests finish.
              StopSignal = "SIGQUIT";
              # proxy-init runs the front or the back nginx (the deploy
              # files' `front`, `back`) with `-c`
              # /etc/nginx/{nginx,back}.conf named, so nixpkgs' nginx (whose
              # default path is in the store) reads the same files as Debian's.
              Entrypoint = [ "/usr/local/bin/proxy-init" ];
              ExposedPorts = {
                "80/tcp" = { };
              };
              Healthcheck = healthcheckRunning [
                "/usr/local/bin/httpcheck"
                "http://127.0.0.1/nginx/health"
              ];
            };
          };

          # Clippy over the whole workspace, as `cargo xtask ci` runs it, with
          # the dependencies buildRustPackage has already vendored.
          clippyCheck = webapp.overrideAttrs (previousAttrs: {
            pname = "${previousAttrs.pname}-clippy";
            doCheck = false;
            buildPhase = ''
              runHook preBuild
              # The toolchain's own cargo: buildRustPackage may put a
              # cargo-auditable wrapper first on PATH, meant for `cargo build`.
              ${rustToolchain}/bin/cargo clippy --workspace --all-targets --offline -- -D warnings
              runHook postBuild
            '';
            installPhase = ''
              runHook preInstall
              mkdir -p $out
              runHook postInstall
            '';
          });
        in
        {
          packages = {
            inherit webapp;
            default = webapp;
            webapp-image = webappImage;
            db-image = dbImage;
            proxy-image = proxyImage;
          };

          checks = {
            # Building the package runs its tests (doCheck defaults to true).
            webapp-tests = webapp;
            clippy = clippyCheck;
          };

          devShell = pkgs.mkShell {
            # Keep this list in step with docs/nix.md: a test in
            # xtask/src/flake.rs compares the two.
            packages = [
              rustToolchain
              pkgs.nginx
              pkgs.redis
              pkgs.docker-client
              pkgs.docker-compose
              pkgs.oha
              pkgs.git
              pkgs.dpkg
            ];
            # The webapp's integration tests find this redis-server without
            # `cargo xtask` unpacking the Debian one.
            REDIS_SERVER_BIN = "${pkgs.redis}/bin/redis-server";
          };

          formatter = pkgs.nixfmt-tree;
        };
    in
    {
      packages = forEachSupportedSystem (pkgs: (projectFor pkgs).packages);
      checks = forEachSupportedSystem (pkgs: (projectFor pkgs).checks);
      devShells = forEachSupportedSystem (pkgs: {
        default = (projectFor pkgs).devShell;
      });
      formatter = forEachSupportedSystem (pkgs: (projectFor pkgs).formatter);
    };
}
