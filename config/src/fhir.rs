//! `[fhir]`: the FHIR R4 REST gateway (reads of the current-state view,
//! ingress into `fhir.inbound`, Subscriptions) and `[fhir.auth]`, its SMART
//! on FHIR bearer-token settings.
//!
//! A config without `[fhir]` runs no gateway. Without `[fhir.auth]` the
//! gateway is a development gateway: validation refuses a non-loopback
//! `listen`, so patient data is never served unauthenticated to the network.

use crate::destination::RetryConfig;
use crate::units::{ByteSize, HumanDuration};
use serde::Deserialize;
use serde_spanned::Spanned;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

/// Default address of the gateway: loopback only.
pub const DEFAULT_FHIR_LISTEN: &str = "127.0.0.1:8575";
/// Default base path of every FHIR URL.
pub const DEFAULT_BASE_PATH: &str = "/fhir";
/// Default largest request body.
pub const DEFAULT_MAX_BODY: ByteSize = ByteSize(1 << 20);
/// Largest `max_body` allowed: the largest record medbus stores.
pub const MAX_BODY_LIMIT: u64 = 64 << 20;
/// Default page size of a search without `_count`.
pub const DEFAULT_PAGE_SIZE: usize = 20;
/// Default largest `_count` honoured (larger ones are cut to it).
pub const DEFAULT_MAX_PAGE_SIZE: usize = 200;
/// Largest `max_page_size` allowed: one page is built in memory.
pub const MAX_PAGE_SIZE_LIMIT: usize = 1000;
/// Default wait for a rest-hook endpoint's answer.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on active Subscriptions (each runs its own delivery loop).
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1000;
/// Default clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
/// Default cap on open websocket connections.
pub const DEFAULT_MAX_WEBSOCKETS: usize = 256;
/// Default cap on open websocket connections from one IP address.
pub const DEFAULT_MAX_WEBSOCKETS_PER_PEER: usize = 32;
/// Default time a websocket may stay open without binding a Subscription.
pub const DEFAULT_BIND_TIMEOUT: Duration = Duration::from_secs(10);
/// Default interval of the server's websocket pings.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);
/// Default lifetime of a websocket binding token.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// `[fhir]`: the FHIR REST gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// Address to bind, `host:port` (default `127.0.0.1:8575`). A
    /// non-loopback address needs `[fhir.auth]`.
    #[serde(default = "default_listen")]
    pub listen: Spanned<String>,
    /// Path prefix of every FHIR URL (default `"/fhir"`): `/` and a
    /// segment of letters, digits, `_`, `-` (or `""` for the root).
    #[serde(default = "default_base_path")]
    pub base_path: Spanned<String>,
    /// Largest request body (default `"1MiB"`, at most 64MiB); a larger one
    /// is refused with 413 and nothing is stored.
    #[serde(default = "default_max_body")]
    pub max_body: Spanned<ByteSize>,
    /// Entries per search page when the client sends no `_count` (default 20).
    #[serde(default = "default_page_size")]
    pub page_size: Spanned<usize>,
    /// Largest `_count` honoured (default 200, at most 1000).
    #[serde(default = "default_max_page_size")]
    pub max_page_size: Spanned<usize>,
    /// Longest a request may take to send its body (default `"30s"`); a
    /// slower one is answered 408 and closed.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Spanned<HumanDuration>,
    /// Most open connections (default 1024); more wait in the listen queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
    /// Subscription delivery settings.
    #[serde(default)]
    pub subscriptions: SubscriptionSettings,
    /// SMART on FHIR bearer tokens; absent: no authorization (loopback only).
    #[serde(default)]
    pub auth: Option<FhirAuth>,
}

/// `[fhir.subscriptions]`: how rest-hook notifications are delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    /// Retry policy for failed notifications (default `initial = "1s"`,
    /// `max = "5m"`, `max_attempts = 20`); a notification out of attempts
    /// goes to `dlq.subscription.<id>`.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How long to wait for the endpoint's answer (default `"10s"`).
    #[serde(default = "default_hook_timeout")]
    pub timeout: HumanDuration,
    /// Most active Subscriptions (default 1000); more are refused with 422.
    #[serde(default = "default_max_subscriptions")]
    pub max: Spanned<usize>,
    /// The websocket channel.
    #[serde(default)]
    pub websocket: WebsocketSettings,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self {
            retry: RetryConfig::default(),
            timeout: default_hook_timeout(),
            max: default_max_subscriptions(),
            websocket: WebsocketSettings::default(),
        }
    }
}

/// `[fhir.subscriptions.websocket]`: the websocket channel of Subscriptions
/// (`[base]/$websocket`, bound with a token from
/// `Subscription/{id}/$get-ws-binding-token`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebsocketSettings {
    /// Most open websocket connections (default 256); more are refused
    /// with 503.
    #[serde(default = "default_max_websockets")]
    pub max_connections: Spanned<usize>,
    /// Most open websocket connections from one IP address (default 32);
    /// more are refused with 503, so one source cannot take every slot.
    #[serde(default = "default_max_websockets_per_peer")]
    pub max_per_peer: Spanned<usize>,
    /// How long a connection may stay open without binding a Subscription
    /// (default `"10s"`); then it is closed.
    #[serde(default = "default_bind_timeout")]
    pub bind_timeout: Spanned<HumanDuration>,
    /// Interval of the server's ping frames (default `"30s"`); a connection
    /// that answered none of the last two is closed.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Spanned<HumanDuration>,
    /// How long a binding token may be used (default `"5m"`).
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime: Spanned<HumanDuration>,
}

impl Default for WebsocketSettings {
    fn default() -> Self {
        Self {
            max_connections: default_max_websockets(),
            max_per_peer: default_max_websockets_per_peer(),
            bind_timeout: default_bind_timeout(),
            heartbeat: default_heartbeat(),
            token_lifetime: default_token_lifetime(),
        }
    }
}

/// `[fhir.auth]`: SMART on FHIR bearer tokens (JWT, RS256 or ES256).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirAuth {
    /// JWKS file (JSON `{"keys": [...]}`) with the authorization server's
    /// public keys (RSA or P-256 EC); read at start, never fetched.
    pub jwks: Spanned<String>,
    /// Required `iss` claim.
    pub issuer: Spanned<String>,
    /// Required `aud` claim (a string or one of a list), usually the
    /// gateway's base URL.
    pub audience: Spanned<String>,
    /// Clock skew tolerated on `exp` and `nbf` (default `"30s"`).
    #[serde(default = "default_leeway")]
    pub leeway: HumanDuration,
}

fn default_listen() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_FHIR_LISTEN.to_string())
}
fn default_base_path() -> Spanned<String> {
    Spanned::new(0..0, DEFAULT_BASE_PATH.to_string())
}
fn default_request_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(std::time::Duration::from_secs(30)))
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, 1024)
}
fn default_max_body() -> Spanned<ByteSize> {
    Spanned::new(0..0, DEFAULT_MAX_BODY)
}
fn default_page_size() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_PAGE_SIZE)
}
fn default_max_page_size() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_PAGE_SIZE)
}
fn default_hook_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_HOOK_TIMEOUT)
}
fn default_max_subscriptions() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_SUBSCRIPTIONS)
}
fn default_leeway() -> HumanDuration {
    HumanDuration(DEFAULT_LEEWAY)
}
fn default_max_websockets() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_WEBSOCKETS)
}
fn default_max_websockets_per_peer() -> Spanned<usize> {
    Spanned::new(0..0, DEFAULT_MAX_WEBSOCKETS_PER_PEER)
}
fn default_bind_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(DEFAULT_BIND_TIMEOUT))
}
fn default_heartbeat() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(DEFAULT_HEARTBEAT))
}
fn default_token_lifetime() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(DEFAULT_TOKEN_LIFETIME))
}

impl FhirConfig {
    /// The body cap in bytes.
    pub fn max_body_bytes(&self) -> usize {
        usize::try_from(self.max_body.get_ref().0).unwrap_or(usize::MAX)
    }

    /// The base path without a trailing `/` (`""` for the root).
    pub fn base(&self) -> &str {
        self.base_path.get_ref().trim_end_matches('/')
    }
}

/// Whether `p` is a usable base path: empty, `/`, or `/` followed by
/// segments of letters, digits, `_` and `-`.
fn is_base_path(p: &str) -> bool {
    let p = p.trim_end_matches('/');
    p.is_empty()
        || (p.starts_with('/')
            && p[1..].split('/').all(|s| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }))
}

/// Check `[fhir]`; `used` holds addresses other components bind.
pub(crate) fn validate(
    fhir: Option<&FhirConfig>,
    used: &HashMap<SocketAddr, String>,
    err: &mut impl FnMut(Range<usize>, String, String),
) {
    let Some(f) = fhir else { return };
    match f.listen.get_ref().parse::<SocketAddr>() {
        Ok(addr) => {
            if addr.port() != 0 {
                if let Some(other) = used.get(&addr) {
                    err(
                        f.listen.span(),
                        "fhir.listen".into(),
                        format!("address {addr} is already used by {other}"),
                    );
                }
            }
            if f.auth.is_none() && !addr.ip().is_loopback() {
                err(
                    f.listen.span(),
                    "fhir.listen".into(),
                    format!("{addr} is not a loopback address: without [fhir.auth] (SMART on FHIR tokens) the gateway may only listen on loopback"),
                );
            }
        }
        Err(_) => err(
            f.listen.span(),
            "fhir.listen".into(),
            format!(
                "invalid address {:?}: write host:port with an IP address, e.g. \"127.0.0.1:8575\"",
                f.listen.get_ref()
            ),
        ),
    }
    if !is_base_path(f.base_path.get_ref()) {
        err(
            f.base_path.span(),
            "fhir.base_path".into(),
            format!(
                "invalid base path {:?}: write \"/\" and segments of letters, digits, '_' or '-', e.g. \"/fhir\"",
                f.base_path.get_ref()
            ),
        );
    }
    let body = f.max_body.get_ref().0;
    if body == 0 || body > MAX_BODY_LIMIT {
        err(
            f.max_body.span(),
            "fhir.max_body".into(),
            format!("{} is out of range: 1B to 64MiB", f.max_body.get_ref()),
        );
    }
    if f.request_timeout.get_ref().0.is_zero() {
        err(
            f.request_timeout.span(),
            "fhir.request_timeout".into(),
            "must be greater than zero".into(),
        );
    }
    if *f.max_connections.get_ref() == 0 {
        err(
            f.max_connections.span(),
            "fhir.max_connections".into(),
            "must be at least 1".into(),
        );
    }
    let max_page = *f.max_page_size.get_ref();
    if max_page == 0 || max_page > MAX_PAGE_SIZE_LIMIT {
        err(
            f.max_page_size.span(),
            "fhir.max_page_size".into(),
            format!("{max_page} is out of range: 1 to {MAX_PAGE_SIZE_LIMIT}"),
        );
    }
    let page = *f.page_size.get_ref();
    if page == 0 || page > max_page {
        err(
            f.page_size.span(),
            "fhir.page_size".into(),
            format!("{page} is out of range: 1 to max_page_size ({max_page})"),
        );
    }
    let s = &f.subscriptions;
    if *s.max.get_ref() == 0 {
        err(
            s.max.span(),
            "fhir.subscriptions.max".into(),
            "must be at least 1".into(),
        );
    }
    if *s.retry.max_attempts.get_ref() == 0 {
        err(
            s.retry.max_attempts.span(),
            "fhir.subscriptions.retry.max_attempts".into(),
            "must be at least 1".into(),
        );
    }
    if s.retry.initial.0.is_zero() || s.retry.initial > s.retry.max {
        err(
            s.retry.max_attempts.span(),
            "fhir.subscriptions.retry".into(),
            "initial must be greater than zero and at most max".into(),
        );
    }
    if s.timeout.0.is_zero() {
        err(
            f.listen.span(),
            "fhir.subscriptions.timeout".into(),
            "must be greater than zero".into(),
        );
    }
    let ws = &s.websocket;
    for (name, n) in [
        ("max_connections", &ws.max_connections),
        ("max_per_peer", &ws.max_per_peer),
    ] {
        if *n.get_ref() == 0 {
            err(
                n.span(),
                format!("fhir.subscriptions.websocket.{name}"),
                "must be at least 1".into(),
            );
        }
    }
    for (name, d) in [
        ("bind_timeout", &ws.bind_timeout),
        ("heartbeat", &ws.heartbeat),
        ("token_lifetime", &ws.token_lifetime),
    ] {
        if d.get_ref().0.is_zero() {
            err(
                d.span(),
                format!("fhir.subscriptions.websocket.{name}"),
                "must be greater than zero".into(),
            );
        }
    }
    if let Some(a) = &f.auth {
        if let Err(e) = check_jwks_file(a.jwks.get_ref()) {
            err(a.jwks.span(), "fhir.auth.jwks".into(), e);
        }
        if a.issuer.get_ref().is_empty() {
            err(
                a.issuer.span(),
                "fhir.auth.issuer".into(),
                "must not be empty".into(),
            );
        }
        if a.audience.get_ref().is_empty() {
            err(
                a.audience.span(),
                "fhir.auth.audience".into(),
                "must not be empty".into(),
            );
        }
    }
}

/// Whether a JWKS file can be read and holds at least one RSA or EC key
/// (a shape check; the broker parses the key material at start).
fn check_jwks_file(path: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path:?} is not JSON: {e}"))?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| format!("{path:?} is not a JWKS document: no \"keys\" array"))?;
    let usable = keys
        .iter()
        .filter(|k| matches!(k.get("kty").and_then(|t| t.as_str()), Some("RSA" | "EC")))
        .count();
    if usable == 0 {
        return Err(format!("{path:?} holds no RSA or EC key"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::parse;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "t.toml") {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn embedded_default_runs_the_gateway_on_loopback() {
        let c = crate::embedded_default();
        let f = c.fhir.as_ref().expect("[fhir] in the embedded default");
        assert_eq!(f.listen.get_ref(), super::DEFAULT_FHIR_LISTEN);
        assert_eq!(f.listen.get_ref(), "127.0.0.1:8575");
        assert_eq!(f.base(), "/fhir");
        assert_eq!(f.max_body_bytes(), 1 << 20);
        assert_eq!(*f.page_size.get_ref(), 20);
        assert_eq!(*f.max_page_size.get_ref(), 200);
        assert!(f.auth.is_none());
    }

    #[test]
    fn a_config_without_fhir_runs_no_gateway() {
        let c = parse("[http]\nlisten = \"127.0.0.1:0\"\n", "t.toml").expect("valid");
        assert!(c.fhir.is_none());
    }

    #[test]
    fn error_table() {
        let cases: &[(&str, &str)] = &[
            (
                "[fhir]\nlisten = \"0.0.0.0:8575\"\n",
                "t.toml:2:10: fhir.listen: 0.0.0.0:8575 is not a loopback address",
            ),
            (
                "[fhir]\nlisten = \"nowhere\"\n",
                "t.toml:2:10: fhir.listen: invalid address \"nowhere\"",
            ),
            (
                "[fhir]\nbase_path = \"fhir r4\"\n",
                "t.toml:2:13: fhir.base_path: invalid base path",
            ),
            (
                "[fhir]\nmax_body = \"1GiB\"\n",
                "t.toml:2:12: fhir.max_body: 1GiB is out of range",
            ),
            (
                "[fhir]\npage_size = 500\n",
                "t.toml:2:13: fhir.page_size: 500 is out of range",
            ),
            (
                "[fhir]\nrequest_timeout = \"0s\"\n",
                "t.toml:2:19: fhir.request_timeout: must be greater than zero",
            ),
            (
                "[fhir]\nmax_page_size = 5000\n",
                "t.toml:2:17: fhir.max_page_size: 5000 is out of range",
            ),
            (
                "[fhir]\n[fhir.subscriptions.websocket]\nmax_connections = 0\n",
                "t.toml:3:19: fhir.subscriptions.websocket.max_connections: must be at least 1",
            ),
            (
                "[fhir]\n[fhir.subscriptions.websocket]\nheartbeat = \"0s\"\n",
                "t.toml:3:13: fhir.subscriptions.websocket.heartbeat: must be greater than zero",
            ),
            (
                "[fhir]\nbogus = 1\n",
                "t.toml:2:1: fhir.bogus: unknown field `bogus`",
            ),
            (
                "[fhir]\n[fhir.auth]\njwks = \"/nonexistent/jwks.json\"\nissuer = \"i\"\naudience = \"a\"\n",
                "t.toml:3:8: fhir.auth.jwks: cannot read",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:9000\"\n[fhir]\nlisten = \"127.0.0.1:9000\"\n",
                "t.toml:4:10: fhir.listen: address 127.0.0.1:9000 is already used by the HTTP endpoint",
            ),
        ];
        for (text, want) in cases {
            let got = errors(text);
            assert!(
                got.iter().any(|g| g.starts_with(want)),
                "for {text:?}: want prefix {want:?}, got {got:?}"
            );
        }
    }

    #[test]
    fn auth_allows_a_public_address() {
        let dir = std::env::temp_dir().join(format!("medbus-jwks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let jwks = dir.join("jwks.json");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"EC","crv":"P-256","x":"a","y":"b"}]}"#,
        )
        .expect("write");
        let text = format!(
            "[fhir]\nlisten = \"0.0.0.0:0\"\n[fhir.auth]\njwks = {:?}\nissuer = \"https://auth.example\"\naudience = \"https://fhir.example/fhir\"\n",
            jwks.display().to_string()
        );
        assert_eq!(errors(&text), Vec::<String>::new());
        std::fs::write(&jwks, r#"{"keys":[]}"#).expect("write");
        let got = errors(&text);
        assert!(
            got.iter().any(|g| g.contains("holds no RSA or EC key")),
            "{got:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
