//! TLS settings for MLLP listeners (server side, optional client-certificate
//! verification) and destinations (client side), and the PEM loading both
//! the validator and the broker use — so a bad path or a bad PEM is a config
//! error with file:line:col, found before anything starts.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_spanned::Spanned;

/// `tls = { cert = "server.pem", key = "server.key", client_ca = "ca.pem" }`
/// on a listener. Paths are relative to the working directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain presented to clients.
    pub cert: Spanned<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
    /// PEM CA certificates: when set, clients must present a certificate
    /// signed by one of them (mutual TLS).
    #[serde(default)]
    pub client_ca: Option<Spanned<String>>,
}

/// `tls = { ca = "ca.pem", cert = "client.pem", key = "client.key",
/// server_name = "lis.example.org" }` on a destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM CA certificates the receiver's certificate must chain to.
    pub ca: Spanned<String>,
    /// PEM client certificate chain, for receivers that require mTLS.
    #[serde(default)]
    pub cert: Option<Spanned<String>>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    /// Name checked against the receiver's certificate (default: the host
    /// of `connect`).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path:?} is not valid PEM: {e:?}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("{path:?} holds no usable PEM private key: {e:?}"))
}

/// Problems with the files of a listener's TLS settings.
pub fn check_server(t: &ServerTls) -> Vec<(std::ops::Range<usize>, &'static str, String)> {
    let mut out = Vec::new();
    if let Err(e) = load_certs(t.cert.get_ref()) {
        out.push((t.cert.span(), "cert", e));
    }
    if let Err(e) = load_key(t.key.get_ref()) {
        out.push((t.key.span(), "key", e));
    }
    if let Some(ca) = &t.client_ca {
        if let Err(e) = load_certs(ca.get_ref()) {
            out.push((ca.span(), "client_ca", e));
        }
    }
    out
}

/// Problems with the files of a destination's TLS settings.
pub fn check_client(t: &ClientTls) -> Vec<(std::ops::Range<usize>, &'static str, String)> {
    let mut out = Vec::new();
    if let Err(e) = load_certs(t.ca.get_ref()) {
        out.push((t.ca.span(), "ca", e));
    }
    match (&t.cert, &t.key) {
        (Some(c), Some(k)) => {
            if let Err(e) = load_certs(c.get_ref()) {
                out.push((c.span(), "cert", e));
            }
            if let Err(e) = load_key(k.get_ref()) {
                out.push((k.span(), "key", e));
            }
        }
        (Some(c), None) => out.push((c.span(), "key", "a client certificate needs its key".into())),
        (None, Some(k)) => out.push((
            k.span(),
            "cert",
            "a client key needs its certificate".into(),
        )),
        (None, None) => {}
    }
    out
}
