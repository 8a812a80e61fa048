//! TLS for `amqps://` (rustls, with ring's cryptography): the client
//! configuration, built once per connection from the URI's settings (the
//! CA, client certificate and key files are read then, so a bad file is an
//! error of the connect call, not of every attempt), and the TLS handshake
//! of each attempt.
//!
//! The broker's certificate and its name are verified, against the
//! system's roots or the `cacertfile`; SNI is the URI's host name (none for
//! an IP address, as TLS wants). Only `tls_insecure_skip_verify` turns the
//! verification off, with a warning at every connect.

use super::Failure;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{rustls, TlsConnector};

/// What the URI asks of TLS (file paths as given).
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsSettings {
    /// PEM CA bundle to trust instead of the system's roots.
    pub cacertfile: Option<String>,
    /// PEM client certificate (chain), with `keyfile`.
    pub certfile: Option<String>,
    /// PEM private key of the client certificate.
    pub keyfile: Option<String>,
    /// Accept any certificate for any name (loud: a warning per connect).
    pub insecure_skip_verify: bool,
}

/// A ready TLS client configuration for one broker host.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    insecure: bool,
    /// We present a client certificate.
    client_cert: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Tls {
    /// Reads the files and builds the configuration for `host`. The error
    /// names the setting (and file) at fault.
    pub(crate) fn new(host: &str, s: &TlsSettings) -> Result<Tls, String> {
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("TLS: host '{host}' is no valid server name: {e}"))?;
        // Our own provider, not the process default: another crate in the
        // same program may have installed another one (or none).
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if s.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(roots(s.cacertfile.as_deref())?)
        };
        let config = match (&s.certfile, &s.keyfile) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = read_certs("certfile", cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("TLS: keyfile '{key}': {}", pem_error(&e)))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("TLS: certfile/keyfile: {e}"))?
            }
            _ => return Err("TLS: certfile and keyfile go together (give both or neither)".into()),
        };
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            insecure: s.insecure_skip_verify,
            client_cert: s.certfile.is_some(),
        })
    }

    /// The TLS handshake over a connected socket; its failure says why
    /// (rustls's reason: unknown issuer, expired, not valid for the name...).
    pub(super) async fn connect(
        &self,
        tcp: TcpStream,
        peer: &str,
    ) -> Result<TlsStream<TcpStream>, Failure> {
        if self.insecure {
            warn!(
                "TLS to {peer}: tls_insecure_skip_verify=true, the broker's certificate and \
                 name are NOT verified (anyone in the path can read and change the traffic)"
            );
        }
        let name = self.server_name.clone();
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| Failure::Link(format!("TLS handshake with {peer} failed: {}", why(&e))))
    }
}

impl Tls {
    /// A link lost in the AMQP handshake just after the TLS one: with TLS
    /// 1.3 the broker checks our client certificate after our side of the
    /// handshake ended, and its refusal (an alert, then close) may reach us
    /// as a reset or an end of stream when our first bytes cross it.
    pub(super) fn explain_lost_link(&self, f: Failure) -> Failure {
        match f {
            Failure::Link(text) if self.client_cert && !text.contains("client certificate") => {
                Failure::Link(format!(
                    "{text} (right after the TLS handshake: the broker may have refused our \
                     client certificate, certfile=)"
                ))
            }
            other => other,
        }
    }
}

/// rustls's own error inside the I/O error, with a hint for the usual causes.
fn why(e: &std::io::Error) -> String {
    let Some(tls) = rustls_error(e) else {
        return format!("I/O error: {e}");
    };
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let hint = match tls {
        E::InvalidCertificate(C::UnknownIssuer) => {
            " (the broker's certificate is not signed by a trusted CA; set cacertfile= to the \
             CA that signed it)"
        }
        E::InvalidMessage(_) => " (is this port a TLS listener?)",
        E::AlertReceived(
            A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::CertificateRequired,
        ) => " (the broker refused our client certificate, certfile=)",
        _ => "",
    };
    format!("{tls}{hint}")
}

fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
}

/// An I/O error after the TLS handshake (e.g. the broker's alert about our
/// client certificate, which TLS 1.3 delivers after the handshake).
pub(super) fn io_error(e: &std::io::Error) -> String {
    match rustls_error(e) {
        Some(_) => format!("TLS error: {}", why(e)),
        None => format!("I/O error: {e}"),
    }
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no PEM item of the expected kind".into(),
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

fn read_certs(what: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bad = |e: &rustls::pki_types::pem::Error| format!("TLS: {what} '{path}': {}", pem_error(e));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(format!("TLS: {what} '{path}' holds no PEM certificate"));
    }
    Ok(certs)
}

/// The CA file's certificates, or the system's roots.
fn roots(cacertfile: Option<&str>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match cacertfile {
        Some(path) => {
            for cert in read_certs("cacertfile", path)? {
                store
                    .add(cert)
                    .map_err(|e| format!("TLS: cacertfile '{path}': {e}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                return Err(format!(
                    "TLS: no CA certificates found in the system's store ({}); install the \
                     system's CA certificates or set cacertfile=",
                    if errors.is_empty() {
                        "it is empty".to_string()
                    } else {
                        errors.join("; ")
                    }
                ));
            }
        }
    }
    Ok(store)
}

/// `tls_insecure_skip_verify`: any certificate for any name. The handshake's
/// signatures are still checked (they prove the peer holds the key of the
/// certificate it sent, whatever that certificate is).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(ca: Option<&str>, cert: Option<&str>, key: Option<&str>) -> TlsSettings {
        TlsSettings {
            cacertfile: ca.map(str::to_string),
            certfile: cert.map(str::to_string),
            keyfile: key.map(str::to_string),
            insecure_skip_verify: false,
        }
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let e = Tls::new("h", &settings(Some("/nonexistent/ca.pem"), None, None)).unwrap_err();
        assert!(e.contains("cacertfile '/nonexistent/ca.pem'"), "{e}");
        let e = Tls::new("h", &settings(Some("/dev/null"), None, None)).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = Tls::new("h", &settings(None, Some("/x.pem"), None)).unwrap_err();
        assert!(e.contains("go together"), "{e}");
        let insecure = TlsSettings {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let mut t = Tls::new("127.0.0.1", &insecure).unwrap();
        assert!(t.insecure);
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));
        // a reset right after the handshake: a hint only when we sent a certificate
        let reset = || Failure::Link("I/O error: Connection reset by peer".into());
        assert_eq!(t.explain_lost_link(reset()), reset());
        t.client_cert = true;
        let f = t.explain_lost_link(reset());
        assert!(f.text().contains("refused our client certificate"), "{f}");
        let refused = Failure::ConnectionRefused {
            code: 403,
            text: "ACCESS_REFUSED".into(),
        };
        assert_eq!(t.explain_lost_link(refused.clone()), refused);
    }
}
