//! TLS to the database for [`super::postgres::PostgresStore`]: tokio-postgres's connector
//! traits over tokio-rustls. The server is verified against the configured CA only (its
//! certificate must name the host of the URL), the ledger may present a client
//! certificate, and SCRAM's channel binding (`tls-server-end-point`, RFC 5929) is offered
//! so a password cannot be relayed through a man in the middle.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aws_lc_rs::digest;
use der::Decode;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Makes one TLS session per database connection, all with the same client configuration.
#[derive(Clone)]
pub struct PostgresTls {
    connector: tokio_rustls::TlsConnector,
}

impl PostgresTls {
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        PostgresTls {
            connector: tokio_rustls::TlsConnector::from(config),
        }
    }
}

impl<S> MakeTlsConnect<S> for PostgresTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PostgresTlsStream<S>;
    type TlsConnect = PostgresTlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, host: &str) -> Result<PostgresTlsConnect, Self::Error> {
        Ok(PostgresTlsConnect {
            connector: self.connector.clone(),
            server: ServerName::try_from(host.to_string())?,
        })
    }
}

/// The handshake for one connection to one host.
pub struct PostgresTlsConnect {
    connector: tokio_rustls::TlsConnector,
    server: ServerName<'static>,
}

impl<S> TlsConnect<S> for PostgresTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = PostgresTlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PostgresTlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls = self.connector.connect(self.server, stream).await?;
            Ok(PostgresTlsStream(tls))
        })
    }
}

/// An established TLS session to the database.
pub struct PostgresTlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for PostgresTlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let server_certificate = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match server_certificate.and_then(|c| tls_server_end_point(c)) {
            Some(binding) => ChannelBinding::tls_server_end_point(binding),
            None => ChannelBinding::none(),
        }
    }
}

/// RFC 5929 `tls-server-end-point`: the server certificate hashed with its signature's
/// hash function, SHA-256 standing in for MD5 and SHA-1. None for signature algorithms
/// without a single defined hash (RSASSA-PSS parameters, EdDSA): no channel binding then.
fn tls_server_end_point(certificate_der: &[u8]) -> Option<Vec<u8>> {
    let certificate = x509_cert::Certificate::from_der(certificate_der).ok()?;
    let hash = match certificate.signature_algorithm.oid.to_string().as_str() {
        // md5WithRSA, sha1WithRSA, ecdsa-with-SHA1, sha256WithRSA, ecdsa-with-SHA256
        "1.2.840.113549.1.1.4"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.10045.4.1"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.10045.4.3.2" => &digest::SHA256,
        // sha384WithRSA, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => &digest::SHA384,
        // sha512WithRSA, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => &digest::SHA512,
        _ => return None,
    };
    Some(digest::digest(hash, certificate_der).as_ref().to_vec())
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for PostgresTlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for PostgresTlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
