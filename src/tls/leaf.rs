//! Leaf certificates made on the fly for intercepted hosts, signed by the
//! [`Ca`], kept in a bounded cache.
//!
//! One leaf key serves the whole process: making an RSA key per host
//! costs 45–70 ms, signing a certificate for a shared P-256 key some tens
//! of microseconds. A leaf names the host the client asked for (its SNI,
//! else the CONNECT host; an IP literal becomes an IP-address SAN) and,
//! once the upstream's certificate is known, the names that certificate
//! carries, so a client that connects by IP to a named host still
//! verifies.
//!
//! Invariants: the cache holds at most `capacity` leaves (least recently
//! used go first); a leaf is valid from a day before it is made (clocks
//! behind) for [`LEAF_VALIDITY`] (well inside browsers' 398-day limit)
//! and is made again once half of that has passed; at most
//! [`MAX_NAMES`] names go in one leaf.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::ca::{random_serial, Ca};

/// How long a leaf is valid after it is made.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Backdating for clients whose clock is behind.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);
/// Names one leaf carries at most (a CDN certificate can list hundreds).
pub const MAX_NAMES: usize = 64;

#[derive(Debug, thiserror::Error)]
#[error("cannot make a certificate for {names}: {why}")]
pub struct LeafError {
    names: String,
    why: String,
}

/// Leaves by their names (joined), with when each was made.
type Cache = LruCache<Box<str>, (Instant, Arc<CertifiedKey>)>;

/// The leaves made so far, and the key they share.
pub struct Leaves {
    ca: Arc<Ca>,
    key: KeyPair,
    signing: Arc<dyn rustls::sign::SigningKey>,
    cache: Mutex<Cache>,
    made: AtomicU64,
    hits: AtomicU64,
}

impl Leaves {
    pub fn new(ca: Arc<Ca>, capacity: usize) -> Result<Leaves, LeafError> {
        let fail = |why: String| LeafError {
            names: "the leaf key".into(),
            why,
        };
        let key = KeyPair::generate().map_err(|e| fail(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing =
            rustls::crypto::ring::sign::any_ecdsa_type(&der).map_err(|e| fail(e.to_string()))?;
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Ok(Leaves {
            ca,
            key,
            signing,
            cache: Mutex::new(LruCache::new(capacity)),
            made: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// The leaf for `names` (the first is the subject), made or cached.
    pub fn get(&self, names: &[String]) -> Result<Arc<CertifiedKey>, LeafError> {
        let names = normalize(names);
        let key: Box<str> = names.join(",").into();
        let fresh_for = LEAF_VALIDITY / 2;
        if let Some((made, leaf)) = self.lock().get(&key) {
            if made.elapsed() < fresh_for {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(leaf.clone());
            }
        }
        // Signed outside the lock: tens of microseconds other connections
        // need not wait for. Two connections racing for a new host both
        // sign; the second insert wins, both leaves are valid.
        let leaf = Arc::new(self.make(&names).map_err(|why| LeafError {
            names: key.to_string(),
            why,
        })?);
        self.made.fetch_add(1, Ordering::Relaxed);
        self.lock().put(key, (Instant::now(), leaf.clone()));
        Ok(leaf)
    }

    /// Leaves in the cache, made since start, served from the cache.
    pub fn stats(&self) -> (usize, u64, u64) {
        (
            self.lock().len(),
            self.made.load(Ordering::Relaxed),
            self.hits.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        // A panic while holding it cannot leave the cache inconsistent
        // (each operation is one call): keep using it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn make(&self, names: &[String]) -> Result<CertifiedKey, String> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        dn.push(DnType::OrganizationName, "sluice debugging proxy");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .filter_map(|n| match n.parse::<IpAddr>() {
                Ok(ip) => Some(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().ok().map(SanType::DnsName),
            })
            .collect();
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + LEAF_VALIDITY).into();
        params.serial_number = Some(random_serial().map_err(|e| e.to_string())?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&self.key, self.ca.issuer())
            .map_err(|e| e.to_string())?;
        Ok(CertifiedKey::new(
            vec![cert.der().clone(), self.ca.cert_der().clone()],
            self.signing.clone(),
        ))
    }
}

/// Lower-case, brackets off IPv6, no empty names or duplicates, at most
/// [`MAX_NAMES`], the first kept first.
fn normalize(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len().min(MAX_NAMES));
    for n in names {
        let n = n
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if n.is_empty() || out.contains(&n) {
            continue;
        }
        out.push(n);
        if out.len() == MAX_NAMES {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn leaves(capacity: usize) -> Leaves {
        Leaves::new(
            Arc::new(Ca::load(&super::super::CaSource::Memory).unwrap()),
            capacity,
        )
        .unwrap()
    }

    fn sans(leaf: &CertifiedKey) -> Vec<String> {
        let (_, cert) = parse_x509_certificate(&leaf.cert[0]).unwrap();
        let ext = cert.subject_alternative_name().unwrap().unwrap();
        ext.value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_leaf_names_the_host_and_mirrored_names_and_chains_to_the_ca() {
        let l = leaves(8);
        let leaf = l
            .get(&[
                "Example.COM".into(),
                "www.example.com".into(),
                "example.com".into(),
            ])
            .unwrap();
        assert_eq!(sans(&leaf), ["dns:example.com", "dns:www.example.com"]);
        assert_eq!(leaf.cert[1], *l.ca().cert_der(), "the chain carries the CA");
        let (_, cert) = parse_x509_certificate(&leaf.cert[0]).unwrap();
        let (_, ca) = parse_x509_certificate(l.ca().cert_der()).unwrap();
        cert.verify_signature(Some(ca.public_key())).unwrap();
        let v = cert.validity();
        let now = ASN1Time::now();
        assert!(v.not_before < now && now < v.not_after);
        assert!(v.not_after.timestamp() - v.not_before.timestamp() < 398 * 24 * 3600);
    }

    #[test]
    fn ip_literal_hosts_get_ip_address_sans() {
        let l = leaves(8);
        let leaf = l.get(&["127.0.0.1".into(), "[::1]".into()]).unwrap();
        let got = sans(&leaf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|s| s.starts_with("ip:")), "{got:?}");
    }

    #[test]
    fn leaves_are_cached_and_the_cache_is_bounded() {
        let l = leaves(2);
        let a = l.get(&["a.test".into()]).unwrap();
        let again = l.get(&["a.test".into()]).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        l.get(&["b.test".into()]).unwrap();
        l.get(&["c.test".into()]).unwrap();
        let (len, made, hits) = l.stats();
        assert_eq!((len, made, hits), (2, 3, 1));
        let a2 = l.get(&["a.test".into()]).unwrap();
        assert!(
            !Arc::ptr_eq(&a, &a2),
            "the least recently used leaf was evicted"
        );
    }

    #[test]
    fn names_are_capped() {
        let names: Vec<String> = (0..200).map(|i| format!("h{i}.test")).collect();
        let l = leaves(2);
        assert_eq!(sans(&l.get(&names).unwrap()).len(), MAX_NAMES);
    }
}
