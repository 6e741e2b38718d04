//! One certificate from the CA (RFC 8555, HTTP-01), by instant-acme: the account (made once,
//! then reused from `account.json`), an order for the domains, each authorization's HTTP-01
//! answer written where the front serves it, finalising with a new key, and the chain.

use std::fs;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier,
    NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use crate::config::Settings;
use crate::store::Store;

/// How long the CA may take to check the challenges, and then to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// An error with the chain of causes instant-acme and hyper keep apart, on one line.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Whether the contents of `ACME_CA_FILE` name no root of their own: nothing but whitespace.
fn names_no_root(contents: &[u8]) -> bool {
    contents.iter().all(u8::is_ascii_whitespace)
}

fn acme_error(doing: &str) -> impl Fn(instant_acme::Error) -> String + '_ {
    move |error| format!("{doing}: {}", describe(&error))
}

/// The account on the configured CA: the stored one if it is for that directory, or a new one.
pub async fn account(settings: &Settings, store: &Store) -> Result<Account, String> {
    // The stack always mounts ACME_CA_FILE (a secret); empty or only whitespace (a Swarm
    // secret cannot be empty), it means Mozilla's roots.
    let ca_file = match &settings.ca_file {
        Some(path) => match fs::read(path) {
            Ok(contents) if names_no_root(&contents) => None,
            Ok(_) => Some(path),
            Err(error) => return Err(format!("ACME_CA_FILE={}: {error}", path.display())),
        },
        None => None,
    };
    let builder = || -> Result<_, String> {
        match ca_file {
            Some(ca_file) => Account::builder_with_root(ca_file).map_err(|error| {
                format!("ACME_CA_FILE={}: {}", ca_file.display(), describe(&error))
            }),
            None => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_only()
                    .enable_http1()
                    .enable_http2()
                    .build();
                let client: HyperClient<_, BodyWrapper<Bytes>> =
                    HyperClient::builder(TokioExecutor::new()).build(connector);
                Ok(Account::builder_with_http(Box::new(client)))
            }
        }
    };
    let path = store.account_file();
    if let Ok(text) = fs::read(&path) {
        let stored: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        if stored["directory"].as_str() == Some(settings.directory.as_str()) {
            let credentials: AccountCredentials = serde_json::from_value(stored)
                .map_err(|error| format!("{}: {error}", path.display()))?;
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(acme_error("restore the ACME account"));
        }
        eprintln!(
            "acme: {} is an account on another CA; making one on {}",
            path.display(),
            settings.directory
        );
    }
    let contact = settings
        .email
        .as_ref()
        .map(|email| format!("mailto:{email}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            None,
        )
        .await
        .map_err(acme_error(&format!(
            "create an account on {}",
            settings.directory
        )))?;
    let text = serde_json::to_vec_pretty(&credentials)
        .map_err(|error| format!("serialise the account: {error}"))?;
    Store::write_atomically(&path, &text, 0o600)?;
    eprintln!(
        "acme: made an account on {} ({})",
        settings.directory,
        account.id()
    );
    Ok(account)
}

/// A certificate chain and its key (PEM) for the configured domains.
pub async fn certificate(
    account: &Account,
    settings: &Settings,
    store: &Store,
) -> Result<(String, String), String> {
    let identifiers: Vec<Identifier> = settings
        .domains
        .iter()
        .map(|name| Identifier::Dns(name.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme_error(&format!(
            "order a certificate for {}",
            settings.domains.join(", ")
        )))?;

    let mut answers = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(acme_error("read an authorization"))?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            status => {
                return Err(format!(
                    "the authorization for {} is {status:?}",
                    authorization.identifier()
                ))
            }
        }
        let identifier = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| format!("the CA offers no HTTP-01 challenge for {identifier}"))?;
        let path = store.challenge_path(&challenge.token)?;
        Store::write_atomically(
            &path,
            challenge.key_authorization().as_str().as_bytes(),
            0o644,
        )?;
        answers.push(path);
        challenge.set_ready().await.map_err(acme_error(&format!(
            "answer the challenge for {identifier}"
        )))?;
    }

    let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await;
    let outcome = match status {
        Ok(OrderStatus::Ready) => Ok(()),
        Ok(_) => Err(why_invalid(&mut order).await),
        Err(error) => Err(format!(
            "wait for the CA to check the challenges: {}",
            describe(&error)
        )),
    };
    for path in answers {
        let _ = fs::remove_file(path);
    }
    outcome?;
    let key = order
        .finalize()
        .await
        .map_err(acme_error("finalise the order"))?;
    let chain = order
        .poll_certificate(&retries)
        .await
        .map_err(acme_error("download the certificate"))?;
    Ok((chain, key))
}

/// What the CA said about the challenges of an order that became invalid.
async fn why_invalid(order: &mut instant_acme::Order) -> String {
    let mut problems = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let Ok(mut authorization) = authorization else {
            continue;
        };
        let identifier = authorization.identifier().to_string();
        if let Ok(state) = authorization.refresh().await {
            for challenge in &state.challenges {
                if let Some(problem) = &challenge.error {
                    problems.push(format!("{identifier}: {problem}"));
                }
            }
        }
    }
    if problems.is_empty() {
        "the CA found the order invalid and gave no reason".to_owned()
    } else {
        format!("the CA refused the challenges: {}", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::names_no_root;

    #[test]
    fn an_empty_or_blank_ca_file_means_mozillas_roots_and_a_pem_does_not() {
        assert!(names_no_root(b""));
        assert!(names_no_root(b"\n"));
        assert!(names_no_root(b" \r\n\t\n"));
        assert!(!names_no_root(b"-----BEGIN CERTIFICATE-----\n"));
    }
}
