//! The front on HTTPS for the bench's HTTPS rows: the project under test
//! deployed again as `cargo xtask up --tls self-signed` would (only the proxy
//! is recreated), with a CA and certificate of the run's own in a temporary
//! directory (never the user's CA), on a free host port. The plain rows are
//! measured before, since the plain port then only redirects; the bench puts
//! the front back as it was afterwards (`undo_preparation`).

use std::{path::Path, time::Duration, time::Instant};

use anyhow::Context;
use xshell::Shell;

use crate::compose::{ComposeProject, Front};
use crate::docker::HEALTHY_TIMEOUT_SECS;
use crate::tls::ScratchTls;

/// The project's front serving HTTPS with the run's own certificate.
pub(super) struct HttpsFront {
    /// Holds the CA and certificate: the files go when the bench ends.
    scratch: ScratchTls,
    /// `https://127.0.0.1:PORT`.
    pub base_url: String,
}

impl HttpsFront {
    /// The CA the front's certificate chains to, for oha and the counter reads.
    pub fn ca_certificate(&self) -> &Path {
        self.scratch.ca_certificate()
    }
}

/// Deploys `compose_project` (its plain front on host port `plain_port`)
/// again with its front on HTTPS, and waits until every replica serves
/// through it.
pub(super) fn redeploy_on_https(
    sh: &Shell,
    compose_project: &str,
    plain_port: u16,
) -> anyhow::Result<HttpsFront> {
    let scratch = ScratchTls::new()?;
    let mut project = ComposeProject::new(sh, compose_project, plain_port)?;
    let port = crate::docker::free_host_port()?;
    eprintln!(
        "bench: deploying project {compose_project} again with its front on HTTPS (port {port}, a CA of this run's own) for the HTTPS rows"
    );
    let started = Instant::now();
    project
        .redeploy_front(
            sh,
            Front::Https {
                port,
                tls_dir: Some(scratch.tls_dir()),
            },
            Duration::from_secs(HEALTHY_TIMEOUT_SECS),
        )
        .with_context(|| format!("deploy project {compose_project} with its front on HTTPS"))?;
    eprintln!(
        "bench: HTTPS serves after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let base_url = format!("https://127.0.0.1:{port}");
    // Test traffic stays on this machine, over TLS too.
    stack_contract::netguard::check_url(&base_url, &[]).map_err(anyhow::Error::msg)?;
    Ok(HttpsFront { scratch, base_url })
}
