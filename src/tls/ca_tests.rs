use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn first_start_makes_a_pair_and_later_starts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ca::load(&CaSource::Dir(dir.path().to_path_buf())).unwrap();
    assert!(first.summary().created);
    assert_eq!(mode(&dir.path().join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.path().join(CA_CERT_FILE)), 0o644);
    assert!(first.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let key = std::fs::read_to_string(dir.path().join(CA_KEY_FILE)).unwrap();
    assert!(
        !first.cert_pem().contains(&key),
        "the key is not in the certificate file"
    );
    let again = Ca::load(&CaSource::Dir(dir.path().to_path_buf())).unwrap();
    assert!(!again.summary().created);
    assert_eq!(again.summary().sha256, first.summary().sha256);
    assert_eq!(again.cert_der(), first.cert_der());
    assert_eq!(first.summary().sha256.len(), 32 * 3 - 1);
}

#[test]
fn a_key_readable_by_others_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load(&CaSource::Dir(dir.path().to_path_buf())).unwrap();
    let key = dir.path().join(CA_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = Ca::load(&CaSource::Dir(dir.path().to_path_buf()))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("readable by other users") && e.contains("chmod 600"),
        "{e}"
    );
}

#[test]
fn half_a_pair_is_an_error_and_nothing_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load(&CaSource::Dir(dir.path().to_path_buf())).unwrap();
    std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
    let before = std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap();
    let e = Ca::load(&CaSource::Dir(dir.path().to_path_buf()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("but not") && e.contains(CA_KEY_FILE), "{e}");
    assert_eq!(
        std::fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
        before
    );
}

#[test]
fn a_symlinked_key_in_the_data_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Ca::load(&CaSource::Dir(dir.path().to_path_buf())).unwrap();
    let key = dir.path().join(CA_KEY_FILE);
    let elsewhere = dir.path().join("elsewhere.pem");
    std::fs::rename(&key, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
    assert!(Ca::load(&CaSource::Dir(dir.path().to_path_buf())).is_err());
}

#[test]
fn a_team_ca_is_used_as_given_and_a_mismatched_key_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ca_a = Ca::load(&CaSource::Dir(a.path().to_path_buf())).unwrap();
    Ca::load(&CaSource::Dir(b.path().to_path_buf())).unwrap();
    let team = Ca::load(&CaSource::Files {
        cert: a.path().join(CA_CERT_FILE),
        key: a.path().join(CA_KEY_FILE),
    })
    .unwrap();
    assert_eq!(team.summary().sha256, ca_a.summary().sha256);
    let e = Ca::load(&CaSource::Files {
        cert: a.path().join(CA_CERT_FILE),
        key: b.path().join(CA_KEY_FILE),
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("do not belong together"), "{e}");
}

#[test]
fn a_leaf_certificate_is_not_accepted_as_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert = dir.path().join("leaf.pem");
    let key_path = dir.path().join("leaf-key.pem");
    std::fs::write(&cert, leaf.pem()).unwrap();
    write_private(&key_path, key.serialize_pem().as_bytes()).unwrap();
    let e = Ca::load(&CaSource::Files {
        cert,
        key: key_path,
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a CA certificate"), "{e}");
}

#[test]
fn memory_mode_writes_nothing_and_debug_never_shows_the_key() {
    let ca = Ca::load(&CaSource::Memory).unwrap();
    assert!(ca.cert_path().is_none());
    assert!(ca.summary().created);
    let shown = format!("{ca:?}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
    assert!(ca.summary().subject.contains("sluice CA"));
}
