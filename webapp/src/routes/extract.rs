//! Extractors that check a request's path, query and headers before its handler runs, so each
//! rule is written once: [`CacheKey`] for the key in the path, [`StrictQuery`] for the query
//! string, [`ClientAddress`] for the client nginx names. The first two reject with the
//! [`AppError`] the client gets (400 and a JSON body naming what is wrong); the last never
//! rejects.

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::HeaderMap;

use crate::error::AppError;

/// Longest cache key, in characters (all of them ASCII).
pub const MAX_KEY_CHARACTERS: usize = 128;

/// Most characters of an unknown parameter's name that an error message repeats.
const SHOWN_NAME_CHARACTERS: usize = 64;

/// The header in which the front nginx states the connecting client's address
/// (`proxy_set_header X-Real-IP $remote_addr`, replacing whatever the client sent).
pub const REAL_IP_HEADER: &str = "x-real-ip";

/// The `{key}` of `/api/cache/{key}`: 1 to [`MAX_KEY_CHARACTERS`] characters of
/// `[A-Za-z0-9._:-]`, after percent-decoding, other than `.` and `..` (nginx and the router
/// would read those as path segments differently: `/api/cache/..` or `/api/cache/%2e%2e` must
/// not reach a route the proxy did not mean). Anything else, a key that does not decode to
/// UTF-8 or decodes to a `/` among them, is [`AppError::InvalidKey`]; `...` is a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    pub fn new(key: String) -> Result<CacheKey, AppError> {
        if CacheKey::is_valid(&key) {
            Ok(CacheKey(key))
        } else {
            Err(AppError::InvalidKey)
        }
    }

    /// Whether `key` (already percent-decoded) is a valid cache key; the counter takes
    /// idempotency keys by the same rule.
    pub fn is_valid(key: &str) -> bool {
        let allowed =
            |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'-');
        (1..=MAX_KEY_CHARACTERS).contains(&key.len())
            && key.bytes().all(allowed)
            && !matches!(key, "." | "..")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CacheKey {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<CacheKey, AppError> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::InvalidKey)?;
        CacheKey::new(key)
    }
}

/// The client a request comes from, as the front nginx states it in `X-Real-IP`
/// ([`REAL_IP_HEADER`]): the webapp is reachable only through nginx, which sets that header to
/// the connecting address whatever the client sent. A missing, repeated or unparsable header is
/// [`ClientAddress::Unknown`], one bucket that every such request shares. An IPv4-mapped IPv6
/// address is its IPv4 address, and an address is written canonically ([`fmt::Display`]), so
/// one client has one name however it was spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    Ip(IpAddr),
    Unknown,
}

impl ClientAddress {
    pub fn from_headers(headers: &HeaderMap) -> ClientAddress {
        let mut values = headers.get_all(REAL_IP_HEADER).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return ClientAddress::Unknown;
        };
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<IpAddr>().ok())
            .map_or(ClientAddress::Unknown, |address| {
                ClientAddress::Ip(address.to_canonical())
            })
    }
}

/// The address as Redis key names use it: `192.0.2.7`, `2001:db8::1`, or `unknown`.
impl fmt::Display for ClientAddress {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddress::Ip(address) => address.fmt(formatter),
            ClientAddress::Unknown => formatter.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<ClientAddress, Infallible> {
        Ok(ClientAddress::from_headers(&parts.headers))
    }
}

/// The query parameters one route takes; [`StrictQuery`] refuses any other.
pub trait QueryParameters: Sized {
    /// The names the route takes.
    const NAMES: &'static [&'static str];

    /// The parameters from those `given`: each name is one of [`Self::NAMES`] and comes at
    /// most once; values are as written.
    fn from_given(given: &[(&str, &str)]) -> Result<Self, AppError>;
}

/// A route's query string as `P`. An unknown or repeated name is [`AppError::InvalidQuery`],
/// whose message names it; names are compared as written, so `TTL` and `ttl[]` are unknown.
/// Values are not percent-decoded: every value this API takes is plain digits.
#[derive(Debug, PartialEq, Eq)]
pub struct StrictQuery<P>(pub P);

impl<P: QueryParameters> StrictQuery<P> {
    pub fn parse(raw: Option<&str>) -> Result<StrictQuery<P>, AppError> {
        let given = known_parameters(raw.unwrap_or(""), P::NAMES)?;
        P::from_given(&given).map(StrictQuery)
    }
}

impl<S: Send + Sync, P: QueryParameters> FromRequestParts<S> for StrictQuery<P> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<StrictQuery<P>, AppError> {
        StrictQuery::parse(parts.uri.query())
    }
}

/// What a route that takes no query parameters takes.
#[derive(Debug, PartialEq, Eq)]
pub struct NoParameters;

impl QueryParameters for NoParameters {
    const NAMES: &'static [&'static str] = &[];

    fn from_given(_: &[(&str, &str)]) -> Result<NoParameters, AppError> {
        Ok(NoParameters)
    }
}

/// The `name=value` pairs of `raw` (a name without `=` has the value ""), refusing a name
/// outside `allowed` and one given twice, in the order they come.
fn known_parameters<'query>(
    raw: &'query str,
    allowed: &[&str],
) -> Result<Vec<(&'query str, &'query str)>, AppError> {
    let mut parameters: Vec<(&str, &str)> = Vec::new();
    for part in raw.split('&').filter(|part| !part.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let shown: String = name.chars().take(SHOWN_NAME_CHARACTERS).collect();
        if !allowed.contains(&name) {
            let takes = match allowed {
                [] => "this route takes no query parameters".to_owned(),
                names => format!("this route takes only {}", names.join(", ")),
            };
            return Err(AppError::InvalidQuery(format!(
                "unknown query parameter {shown:?}: {takes}"
            )));
        }
        if parameters.iter().any(|(seen, _)| *seen == name) {
            return Err(AppError::InvalidQuery(format!(
                "query parameter {shown:?} is given more than once"
            )));
        }
        parameters.push((name, value));
    }
    Ok(parameters)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// A route that answers the key and the query it extracted, as its handler would see them.
    async fn answer(uri: &str) -> (StatusCode, String) {
        let router = Router::new().route(
            "/k/{key}",
            get(
                |key: CacheKey, StrictQuery(given): StrictQuery<AOrB>| async move {
                    format!("{} {:?}", key.as_str(), given.0)
                },
            ),
        );
        let request = Request::builder()
            .uri(uri)
            .body(Body::empty())
            .expect("a request");
        let response = router.oneshot(request).await.expect("an infallible router");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("an in-memory body");
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The parameters of a route that takes `a` and `b`, as given.
    struct AOrB(Vec<(String, String)>);

    impl QueryParameters for AOrB {
        const NAMES: &'static [&'static str] = &["a", "b"];

        fn from_given(given: &[(&str, &str)]) -> Result<Self, AppError> {
            let owned = given
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()));
            Ok(AOrB(owned.collect()))
        }
    }

    #[test]
    fn keys_of_allowed_characters_and_length_are_accepted() {
        for key in [
            "a",
            "user:42.profile_v-1",
            "A.Z_0:9-",
            "...",
            ".a",
            "..a",
            "a..",
            &"k".repeat(128),
        ] {
            let parsed = CacheKey::new(key.to_owned());
            assert_eq!(parsed.as_ref().map(CacheKey::as_str).ok(), Some(key));
        }
    }

    #[test]
    fn empty_long_or_odd_keys_are_refused() {
        for key in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "/",
            "ä",
            "a*",
            "a%20b",
            "%2e%2e",
            &"k".repeat(129),
        ] {
            assert!(!CacheKey::is_valid(key), "{key:?} should be refused");
            assert!(matches!(
                CacheKey::new(key.to_owned()),
                Err(AppError::InvalidKey)
            ));
        }
    }

    #[tokio::test]
    async fn the_key_is_percent_decoded_before_it_is_checked() {
        assert_eq!(answer("/k/%61b").await, (StatusCode::OK, "ab []".into()));
        let refused = r#"{"error":"key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, other than . and .."}"#;
        for path in ["/k/a%20b", "/k/a%2Fb", "/k/%C3%A4", "/k/%FF", "/k/star*"] {
            assert_eq!(
                answer(path).await,
                (StatusCode::BAD_REQUEST, refused.into()),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn dot_and_dot_dot_are_refused_however_they_are_spelled_and_a_decoded_slash_too() {
        let refused = r#"{"error":"key must be 1 to 128 characters of A-Z a-z 0-9 . _ : -, other than . and .."}"#;
        for path in [
            "/k/..",
            "/k/.",
            "/k/%2e%2e",
            "/k/.%2e",
            "/k/%2e.",
            "/k/%2E%2E",
            "/k/%2e",
            "/k/%2E",
            "/k/a%2fb",
            "/k/%2f",
            "/k/..%2f",
        ] {
            assert_eq!(
                answer(path).await,
                (StatusCode::BAD_REQUEST, refused.into()),
                "{path}"
            );
        }
        for (path, key) in [
            ("/k/...", "..."),
            ("/k/%2e%2e%2e", "..."),
            ("/k/.%2ea", "..a"),
        ] {
            assert_eq!(
                answer(path).await,
                (StatusCode::OK, format!("{key} []")),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn known_parameters_reach_the_handler_as_written_in_their_order() {
        assert_eq!(answer("/k/x").await, (StatusCode::OK, "x []".into()));
        assert_eq!(answer("/k/x?").await, (StatusCode::OK, "x []".into()));
        assert_eq!(
            answer("/k/x?b=2&&a").await,
            (StatusCode::OK, r#"x [("b", "2"), ("a", "")]"#.into())
        );
        assert_eq!(
            answer("/k/x?a=%20+1").await,
            (StatusCode::OK, r#"x [("a", "%20+1")]"#.into())
        );
    }

    #[tokio::test]
    async fn unknown_and_repeated_parameters_are_refused_by_name() {
        let cases = [
            (
                "/k/x?c=1",
                r#"unknown query parameter \"c\": this route takes only a, b"#,
            ),
            (
                "/k/x?A=1",
                r#"unknown query parameter \"A\": this route takes only a, b"#,
            ),
            (
                "/k/x?a[]=1",
                r#"unknown query parameter \"a[]\": this route takes only a, b"#,
            ),
            (
                "/k/x?a=1&b=2&a=1",
                r#"query parameter \"a\" is given more than once"#,
            ),
            (
                "/k/x?a&a",
                r#"query parameter \"a\" is given more than once"#,
            ),
        ];
        for (uri, message) in cases {
            let expected = format!(r#"{{"error":"{message}"}}"#);
            assert_eq!(
                answer(uri).await,
                (StatusCode::BAD_REQUEST, expected),
                "{uri}"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_key_is_reported_before_a_bad_query() {
        let (status, body) = answer("/k/a*?c=1").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("key must be"), "{body}");
    }

    fn query_error(raw: &str) -> String {
        match StrictQuery::<NoParameters>::parse(Some(raw)) {
            Err(AppError::InvalidQuery(message)) => message,
            other => panic!("{raw:?} should be refused, got {other:?}"),
        }
    }

    #[test]
    fn a_route_without_parameters_takes_an_empty_query_only() {
        for raw in [None, Some(""), Some("&"), Some("&&")] {
            assert_eq!(
                StrictQuery::<NoParameters>::parse(raw).ok(),
                Some(StrictQuery(NoParameters)),
                "{raw:?}"
            );
        }
        assert_eq!(
            query_error("x=1"),
            r#"unknown query parameter "x": this route takes no query parameters"#
        );
        let long = format!("{}=1", "n".repeat(100));
        let shown = format!("{:?}", "n".repeat(64));
        assert!(query_error(&long).contains(&format!(" {shown}: ")));
    }

    fn client_of(values: &[&str]) -> ClientAddress {
        let mut headers = HeaderMap::new();
        for value in values {
            let value = axum::http::HeaderValue::from_str(value).expect("a header value");
            headers.append(REAL_IP_HEADER, value);
        }
        ClientAddress::from_headers(&headers)
    }

    #[test]
    fn the_client_is_the_address_in_x_real_ip_written_canonically() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            (" 192.0.2.7 ", "192.0.2.7"),
            ("2001:DB8:0:0::1", "2001:db8::1"),
            ("::1", "::1"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
        ];
        for (header, name) in cases {
            let client = client_of(&[header]);
            assert!(matches!(client, ClientAddress::Ip(_)), "{header:?}");
            assert_eq!(client.to_string(), name, "{header:?}");
        }
    }

    #[test]
    fn a_missing_repeated_or_unparsable_x_real_ip_is_the_unknown_client() {
        let cases: [&[&str]; 9] = [
            &[],
            &[""],
            &["unix:"],
            &["192.0.2.7:80"],
            &["192.0.2.7, 198.51.100.1"],
            &["192.0.2.256"],
            &["[::1]"],
            &["unknown"],
            &["192.0.2.7", "198.51.100.1"],
        ];
        for values in cases {
            let client = client_of(values);
            assert_eq!(client, ClientAddress::Unknown, "{values:?}");
            assert_eq!(client.to_string(), "unknown");
        }
    }

    #[tokio::test]
    async fn the_extractor_reads_x_real_ip_and_never_refuses() {
        let router = Router::new().route(
            "/",
            get(|client: ClientAddress| async move { client.to_string() }),
        );
        for (header, expected) in [
            (Some("198.51.100.9"), "198.51.100.9"),
            (Some("x"), "unknown"),
            (None, "unknown"),
        ] {
            let mut request = Request::builder().uri("/");
            if let Some(header) = header {
                request = request.header("X-Real-IP", header);
            }
            let request = request.body(Body::empty()).expect("a request");
            let response = router
                .clone()
                .oneshot(request)
                .await
                .expect("an infallible router");
            assert_eq!(response.status(), StatusCode::OK);
            let bytes = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .expect("an in-memory body");
            assert_eq!(&bytes[..], expected.as_bytes(), "{header:?}");
        }
    }
}
