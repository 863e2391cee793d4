//! rustls configurations built from the TLS settings of listeners and
//! destinations (PEM loading and its errors live in `medbus_config::tls`, so
//! `check-config` and start-up report the same problems). TLS costs nothing
//! extra: it is in the open-source binary, not a paid add-on.

use medbus_config::tls::{load_certs, load_key, ClientTls, ServerTls};
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream, plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(path: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots
            .add(c)
            .map_err(|e| format!("{path:?}: unusable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The acceptor of a TLS listener.
pub fn acceptor(t: &ServerTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs = load_certs(t.cert.get_ref())?;
    let key = load_key(t.key.get_ref())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &t.client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca.get_ref())?),
                provider(),
            )
            .build()
            .map_err(|e| format!("client CA {:?}: {e}", ca.get_ref()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "certificate and key of {:?} do not fit: {e}",
            t.cert.get_ref()
        )
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The connector of a TLS destination and the name to verify.
pub fn connector(
    t: &ClientTls,
    connect: &str,
) -> Result<(tokio_rustls::TlsConnector, ServerName<'static>), String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(t.ca.get_ref())?);
    let config = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => builder
            .with_client_auth_cert(load_certs(c.get_ref())?, load_key(k.get_ref())?)
            .map_err(|e| format!("client certificate {:?}: {e}", c.get_ref()))?,
        _ => builder.with_no_client_auth(),
    };
    let host = t.server_name.clone().unwrap_or_else(|| {
        connect
            .rsplit_once(':')
            .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
            .unwrap_or_else(|| connect.to_string())
    });
    let name = ServerName::try_from(host.clone())
        .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}
