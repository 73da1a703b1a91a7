//! What it means when a client does not finish (or use) the TLS
//! handshake with sluice's certificate: it does not trust sluice's CA, it
//! pins another certificate, or it is just slow or gone. Each kind has a
//! sentence a person can act on, a metric label, and says whether the
//! client and host pair should be passed through from now on.

use std::net::IpAddr;

use rustls::AlertDescription;

/// Why a client's handshake with sluice failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It sent an alert about the certificate (unknown CA, bad certificate).
    UnknownCa,
    BadCertificate,
    /// It closed the connection during the handshake without an alert.
    ClosedInHandshake,
    /// It finished the handshake, then closed without sending a request
    /// (certificate pinning done after the handshake).
    ClosedAfterHandshake,
    /// The handshake did not finish within `--tls-handshake-timeout`.
    Timeout,
    /// Anything else (no common cipher or version, a malformed hello).
    Other,
}

impl Refusal {
    /// Classifies the error of a failed server handshake.
    pub fn of(e: &std::io::Error) -> Refusal {
        if let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match tls {
                rustls::Error::AlertReceived(AlertDescription::UnknownCA) => Refusal::UnknownCa,
                rustls::Error::AlertReceived(
                    AlertDescription::BadCertificate
                    | AlertDescription::CertificateUnknown
                    | AlertDescription::UnsupportedCertificate
                    | AlertDescription::CertificateExpired
                    | AlertDescription::CertificateRevoked
                    | AlertDescription::AccessDenied,
                ) => Refusal::BadCertificate,
                _ => Refusal::Other,
            };
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => Refusal::ClosedInHandshake,
            std::io::ErrorKind::TimedOut => Refusal::Timeout,
            _ => Refusal::Other,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::UnknownCa => "unknown_ca",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::ClosedInHandshake => "closed_in_handshake",
            Refusal::ClosedAfterHandshake => "closed_after_handshake",
            Refusal::Timeout => "timeout",
            Refusal::Other => "other",
        }
    }

    /// Whether this says the client will not accept sluice's certificate
    /// for the host (then the pair is passed through for a while). A
    /// timeout or a protocol mismatch says nothing about trust.
    pub fn distrusts(self) -> bool {
        matches!(
            self,
            Refusal::UnknownCa
                | Refusal::BadCertificate
                | Refusal::ClosedInHandshake
                | Refusal::ClosedAfterHandshake
        )
    }

    /// What to tell the person reading the record.
    pub fn explain(self, client: IpAddr, host: &str, ca_url: &str, detail: &str) -> String {
        let install = format!("install sluice's CA from {ca_url}");
        match self {
            Refusal::UnknownCa => format!(
                "client {client} does not trust sluice's CA (TLS alert unknown_ca for {host}): \
                 {install}"
            ),
            Refusal::BadCertificate => format!(
                "client {client} refused sluice's certificate for {host} ({detail}): {install}, \
                 or the client pins {host}'s own certificate (add a passthrough:// rule)"
            ),
            Refusal::ClosedInHandshake => format!(
                "client {client} closed the connection during the TLS handshake for {host}: it \
                 may not trust sluice's CA ({install}) or may pin {host}'s certificate"
            ),
            Refusal::ClosedAfterHandshake => format!(
                "client {client} closed the connection right after the TLS handshake for {host} \
                 without a request: it probably pins {host}'s certificate (add a \
                 passthrough:// rule) or does not trust sluice's CA ({install})"
            ),
            Refusal::Timeout => format!(
                "client {client} did not finish the TLS handshake for {host} within \
                 --tls-handshake-timeout"
            ),
            Refusal::Other => {
                format!("TLS handshake with client {client} for {host} failed: {detail}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_err(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn alerts_and_closes_are_told_apart() {
        let unknown = tls_err(rustls::Error::AlertReceived(AlertDescription::UnknownCA));
        assert_eq!(Refusal::of(&unknown), Refusal::UnknownCa);
        let bad = tls_err(rustls::Error::AlertReceived(
            AlertDescription::BadCertificate,
        ));
        assert_eq!(Refusal::of(&bad), Refusal::BadCertificate);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(Refusal::of(&eof), Refusal::ClosedInHandshake);
        let proto = tls_err(rustls::Error::AlertReceived(
            AlertDescription::ProtocolVersion,
        ));
        assert_eq!(Refusal::of(&proto), Refusal::Other);
        assert!(!Refusal::Timeout.distrusts() && !Refusal::Other.distrusts());
        assert!(Refusal::UnknownCa.distrusts() && Refusal::ClosedAfterHandshake.distrusts());
    }

    #[test]
    fn the_explanation_names_the_client_the_host_and_the_fix() {
        let s = Refusal::UnknownCa.explain(
            "10.0.0.5".parse().unwrap(),
            "example.com",
            "http://127.0.0.1:8900/ca",
            "",
        );
        assert!(
            s.contains("client 10.0.0.5 does not trust sluice's CA"),
            "{s}"
        );
        assert!(
            s.contains("install sluice's CA from http://127.0.0.1:8900/ca"),
            "{s}"
        );
    }
}
