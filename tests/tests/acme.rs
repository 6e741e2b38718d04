//! HTTPS with a certificate from an ACME CA: the stack deployed with `--tls acme` against
//! pebble, Let's Encrypt's test CA, by the ACME pass of `cargo xtask e2e`
//! (xtask/src/e2e/acme.rs), whose certificates live for half a minute. Run without its
//! variables, the test fails saying so.
//!
//! One test, in the order a server lives through: the first certificate, renewals under a
//! steady load, a domain the CA refuses, and the CA gone when a renewal is due.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stack_contract::netguard;
use stack_contract::variables::acme::{
    ACME_CONTAINER_VARIABLE, DOMAIN_VARIABLE, HTTPS_PORT_VARIABLE, PEBBLE_CONTAINER_VARIABLE,
    PEBBLE_LISTENER_CA_VARIABLE, PEBBLE_MANAGEMENT_URL_VARIABLE, REFUSED_DOMAIN_VARIABLE,
    VALIDITY_SECS_VARIABLE,
};
use stack_tests::harness::{docker, docker_output, http_client_builder};
use tokio::sync::Mutex;

/// The stack as the ACME pass deployed it.
struct AcmeStack {
    https_port: u16,
    domain: String,
    refused_domain: String,
    pebble_management_url: String,
    listener_ca: String,
    pebble_container: String,
    acme_container: String,
    validity: Duration,
}

impl AcmeStack {
    fn from_environment() -> AcmeStack {
        let read = |variable: &str| {
            std::env::var(variable).unwrap_or_else(|_| {
                panic!("{variable} is not set: this test needs a stack deployed with --tls acme and pebble; `cargo xtask e2e` runs it")
            })
        };
        let stack = AcmeStack {
            https_port: read(HTTPS_PORT_VARIABLE).parse().expect("a port"),
            domain: read(DOMAIN_VARIABLE),
            refused_domain: read(REFUSED_DOMAIN_VARIABLE),
            pebble_management_url: read(PEBBLE_MANAGEMENT_URL_VARIABLE),
            listener_ca: read(PEBBLE_LISTENER_CA_VARIABLE),
            pebble_container: read(PEBBLE_CONTAINER_VARIABLE),
            acme_container: read(ACME_CONTAINER_VARIABLE),
            validity: Duration::from_secs(read(VALIDITY_SECS_VARIABLE).parse().expect("seconds")),
        };
        netguard::check_url(&stack.pebble_management_url, &[])
            .unwrap_or_else(|refused| panic!("{refused}"));
        stack
    }

    fn url(&self) -> String {
        format!("https://{}:{}/", self.domain, self.https_port)
    }

    /// pebble's root, from its management interface (which pebble's own CA signs).
    async fn pebble_root(&self) -> reqwest::Certificate {
        let listener_ca = std::fs::read(&self.listener_ca).expect("the listener CA");
        let client = http_client_builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&listener_ca).expect("PEM")])
            .build()
            .expect("a client");
        let root = client
            .get(format!("{}/roots/0", self.pebble_management_url))
            .send()
            .await
            .and_then(|answer| answer.error_for_status())
            .expect("pebble's root")
            .bytes()
            .await
            .expect("pebble's root");
        reqwest::Certificate::from_pem(&root).expect("pebble's root is PEM")
    }

    /// A client that trusts pebble's root alone, finds the domain on loopback, and opens a new
    /// connection for every request (so each one sees the certificate served at that moment).
    fn client(&self, root: &reqwest::Certificate) -> reqwest::Client {
        http_client_builder()
            .tls_certs_only([root.clone()])
            .resolve(
                &self.domain,
                SocketAddr::from((Ipv4Addr::LOCALHOST, self.https_port)),
            )
            .pool_max_idle_per_host(0)
            .tls_info(true)
            .build()
            .expect("an HTTPS client")
    }

    fn acme_log(&self) -> String {
        let output = docker_output(&["logs", &self.acme_container]);
        String::from_utf8_lossy(&output.stderr).into_owned()
            + &String::from_utf8_lossy(&output.stdout)
    }
}

/// When a request of the load finished, and the certificate it was served with or its error.
type Served = (Instant, Result<Vec<u8>, String>);

/// One GET /: the HTTP version and status, and the server's certificate (DER).
async fn get_root(
    client: &reqwest::Client,
    url: &str,
) -> Result<(reqwest::Version, u16, Vec<u8>), String> {
    let answer = client
        .get(url)
        .send()
        .await
        .map_err(|error| format!("{error:?}"))?;
    let certificate = answer
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or("no peer certificate")?;
    let version = answer.version();
    let status = answer.status().as_u16();
    answer.bytes().await.map_err(|error| error.to_string())?;
    Ok((version, status, certificate))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs a stack deployed with --tls acme and pebble; `cargo xtask e2e` starts them and runs it"]
async fn the_stack_gets_its_certificate_renews_it_under_load_and_outlives_the_ca() {
    let stack = AcmeStack::from_environment();
    let root = stack.pebble_root().await;
    let client = stack.client(&root);
    let url = stack.url();

    // 1. The first certificate: until it comes, the front serves the provisional self-signed
    //    one, which a client that trusts pebble's root alone refuses.
    let started = Instant::now();
    let first = loop {
        match get_root(&client, &url).await {
            Ok((version, status, certificate)) => {
                assert_eq!(version, reqwest::Version::HTTP_2, "ALPN chose HTTP/2");
                assert_eq!(status, 200);
                break certificate;
            }
            Err(error) if started.elapsed() < Duration::from_secs(90) => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => panic!(
                "no certificate from pebble after 90 s: {error}\nthe acme service said:\n{}",
                stack.acme_log()
            ),
        }
    };
    eprintln!(
        "[e2e] the first certificate from pebble served after {:.1}s: GET / answers 200 over HTTP/2, the chain checks against pebble's root for {}",
        started.elapsed().as_secs_f64(),
        stack.domain
    );

    // 2. Renewal under a steady load: eight clients, a new connection for every request,
    //    until a renewal has been served; no request may fail.
    let outcomes: Arc<Mutex<Vec<Served>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, url, outcomes, stop) =
                (client.clone(), url.clone(), outcomes.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let outcome = match get_root(&client, &url).await {
                        Ok((_, 200, certificate)) => Ok(certificate),
                        Ok((_, status, _)) => Err(format!("status {status}")),
                        Err(error) => Err(error),
                    };
                    outcomes.lock().await.push((Instant::now(), outcome));
                }
            })
        })
        .collect();
    let load_started = Instant::now();
    let deadline = load_started + stack.validity * 2;
    let mut seen: Vec<(Instant, Vec<u8>)> = vec![(load_started, first.clone())];
    while seen.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for (at, outcome) in outcomes.lock().await.iter() {
            if let Ok(certificate) = outcome {
                if !seen.iter().any(|(_, known)| known == certificate) {
                    seen.push((*at, certificate.clone()));
                }
            }
        }
    }
    // Requests already on their way finish on whichever certificate they started with.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker");
    }
    let outcomes = outcomes.lock().await;
    let failed: Vec<&String> = outcomes
        .iter()
        .filter_map(|(_, outcome)| outcome.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while the certificate was renewed: {:?}",
        failed.len(),
        outcomes.len(),
        failed.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        seen.len() >= 2,
        "within {:?} of load the clients saw {} certificate(s), not the first and its renewal\nthe acme service said:\n{}",
        stack.validity * 2,
        seen.len(),
        stack.acme_log()
    );
    // Once a renewal has been served, every connection opened a second later gets it or a
    // newer one, never an older one.
    let (renewed_at, _) = &seen[1];
    let older_after: Vec<_> = outcomes
        .iter()
        .filter(|(at, outcome)| {
            *at > *renewed_at + Duration::from_secs(1)
                && outcome
                    .as_ref()
                    .is_ok_and(|certificate| *certificate == first)
        })
        .collect();
    assert!(
        older_after.is_empty(),
        "{} requests still got the first certificate more than a second after its renewal was served",
        older_after.len()
    );
    let renewals = stack.acme_log().matches("acme: new certificate").count();
    eprintln!(
        "[e2e] renewal under load: {} requests on new connections over {:.1}s, 0 failed; the renewed certificate first served {:.1}s after the first one ({} issued by the acme service so far)",
        outcomes.len(),
        load_started.elapsed().as_secs_f64(),
        (seen[1].0 - started).as_secs_f64(),
        renewals
    );
    drop(outcomes);

    // 3. A domain the CA refuses: the acme program (the same image, a container of the test's
    //    own) says so, naming the domain and the CA's reason.
    refused_domain_is_logged(&stack);

    // 4. The CA gone when a renewal comes due: the current certificate keeps serving, and the
    //    acme service logs the failure.
    docker(&["stop", "--time", "1", &stack.pebble_container]);
    let stopped = Instant::now();
    let failures_before = stack.acme_log().matches("renewal failed").count();
    // A renewal the CA finished just before it stopped is served within proxy-init's look
    // every second; after that the certificate can no longer change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, _, before) = get_root(&client, &url)
        .await
        .expect("GET / after pebble stopped");
    let line = loop {
        let log = stack.acme_log();
        let failures: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("renewal failed"))
            .collect();
        if failures.len() > failures_before {
            break failures[failures.len() - 1].to_owned();
        }
        assert!(
            stopped.elapsed() < stack.validity * 2,
            "no renewal failure logged within {:?} of stopping pebble:\n{log}",
            stack.validity * 2
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        line.contains("still serving") && line.contains("next try in"),
        "{line}"
    );
    let (_, status, during) = get_root(&client, &url)
        .await
        .expect("GET / while the CA is gone");
    assert_eq!(status, 200);
    assert_eq!(
        during, before,
        "the certificate served changed while the CA was gone"
    );
    eprintln!(
        "[e2e] with pebble stopped, the renewal failed {:.1}s later and the old certificate kept serving; the acme service said: {line}",
        stopped.elapsed().as_secs_f64()
    );
}

/// Runs the acme program for the refused domain in a container of its own next to the stack,
/// until it logs the refusal.
fn refused_domain_is_logged(stack: &AcmeStack) {
    let acme = docker(&[
        "inspect",
        "--format",
        "{{.Config.Image}} {{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}",
        &stack.acme_container,
    ]);
    let (image, network) = acme.trim().split_once(' ').expect("image and network");
    let name = format!("{}-refused", stack.acme_container);
    let ca_mount = format!("{}:/ca.pem:ro", stack.listener_ca);
    let domains = format!("ACME_DOMAINS={}", stack.refused_domain);
    docker(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        network,
        "--read-only",
        "--user",
        "65532:65532",
        // An anonymous volume: a new one takes the image's ownership of /run/acme.
        "--volume",
        "/run/acme",
        "--volume",
        &ca_mount,
        "--env",
        &domains,
        "--env",
        "ACME_DIRECTORY=https://pebble:14000/dir",
        "--env",
        "ACME_CA_FILE=/ca.pem",
        "--env",
        "ACME_RETRY_SECS=5",
        image,
        "acme",
    ]);
    let started = Instant::now();
    let line = loop {
        let output = docker_output(&["logs", &name]);
        let log = String::from_utf8_lossy(&output.stderr).into_owned();
        if let Some(line) = log.lines().find(|line| line.contains("renewal failed")) {
            break line.to_owned();
        }
        if started.elapsed() > Duration::from_secs(30) {
            docker(&["rm", "--force", "--volumes", &name]);
            panic!("no refusal logged within 30 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    docker(&["rm", "--force", "--volumes", &name]);
    assert!(
        line.contains(&stack.refused_domain) && line.contains("rejectedIdentifier"),
        "the refusal does not name the domain and the CA's reason: {line}"
    );
    eprintln!("[e2e] a domain pebble refuses: {line}");
}
