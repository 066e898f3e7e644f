//! `mesh ca init` and `mesh ca issue`, driven as a user drives them, with the outputs checked by
//! an independent parser (x509-parser) and, where installed, by `openssl verify`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

use rcgen::{KeyPair, PublicKeyData};
use x509_parser::{
    certificate::X509Certificate, extensions::GeneralName, pem::Pem, prelude::FromDer,
};

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .output()
        .expect("run mesh")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh, empty folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mesh-ca-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn init(ca: &Path) {
    let out = mesh(&["ca", "init", "--dir", s(ca)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

fn issue(ca: &Path, out_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ca",
        "issue",
        "--dir",
        s(ca),
        "--namespace",
        "default",
        "--service-account",
        "bookinfo-reviews",
        "--out",
        s(out_dir),
    ];
    args.extend_from_slice(extra);
    mesh(&args)
}

/// Every PEM block of a file, DER.
fn pems(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    Pem::iter_from_buffer(&bytes)
        .map(|p| p.expect("pem").contents)
        .collect()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = X509Certificate::from_der(der).expect("x509");
    assert!(rest.is_empty());
    cert
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_then_issue_writes_a_spiffe_workload_certificate_signed_by_the_ca() {
    let tmp = TempDir::new();
    let (ca_dir, out_dir) = (tmp.join("ca"), tmp.join("workload"));
    init(&ca_dir);
    let out = issue(&ca_dir, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let t = now();

    // The CA.
    let ca_pems = pems(&ca_dir.join("ca-cert.pem"));
    assert_eq!(ca_pems.len(), 1);
    let ca = parse(&ca_pems[0]);
    assert!(ca.is_ca());
    let ku = ca.key_usage().unwrap().expect("CA key usage").value;
    assert!(ku.key_cert_sign());
    assert_eq!(ca.subject(), ca.issuer(), "self-signed");
    assert!(
        ca.subject().to_string().contains("mesh"),
        "{}",
        ca.subject()
    );
    ca.verify_signature(None).expect("CA self-signature");
    let ca_years = (ca.validity().not_after.timestamp() - t) / (365 * 24 * 3600);
    assert!(ca_years >= 9, "CA valid for {ca_years} years");

    // The chain: workload first, then the CA.
    let chain = pems(&out_dir.join("cert-chain.pem"));
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], ca_pems[0]);
    assert_eq!(
        std::fs::read(out_dir.join("root-cert.pem")).unwrap(),
        std::fs::read(ca_dir.join("ca-cert.pem")).unwrap()
    );
    let leaf = parse(&chain[0]);
    assert!(!leaf.is_ca());
    assert_eq!(leaf.issuer(), ca.subject());
    leaf.verify_signature(Some(ca.public_key()))
        .expect("signed by the CA");

    // The identity is the only SAN.
    let san = leaf.subject_alternative_name().unwrap().expect("SAN").value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::URI(
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        )]
    );
    let id = mesh_core::Identity::new("cluster.local", "default", "bookinfo-reviews");
    assert_eq!(
        san.general_names[0],
        GeneralName::URI(id.to_string().as_str())
    );

    let ku = leaf.key_usage().unwrap().expect("key usage").value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);

    // Valid now, for Istio's 24 hours.
    let v = leaf.validity();
    assert!(v.not_before.timestamp() <= t && t <= v.not_after.timestamp());
    let ttl = v.not_after.timestamp() - t;
    assert!(
        (24 * 3600 - 120..=24 * 3600 + 5).contains(&ttl),
        "ttl {ttl}s"
    );

    // key.pem is the leaf's key.
    let key = KeyPair::from_pem(&std::fs::read_to_string(out_dir.join("key.pem")).unwrap())
        .expect("key.pem parses");
    assert_eq!(key.subject_public_key_info(), leaf.public_key().raw);
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca-key.pem")).unwrap()).unwrap();
    assert_eq!(ca_key.subject_public_key_info(), ca.public_key().raw);

    #[cfg(unix)]
    {
        assert_eq!(mode(&ca_dir.join("ca-key.pem")), 0o600);
        assert_eq!(mode(&out_dir.join("key.pem")), 0o600);
    }

    // An independent verifier, where one is installed.
    let leaf_file = tmp.join("leaf.pem");
    let chain_text = std::fs::read_to_string(out_dir.join("cert-chain.pem")).unwrap();
    let end = chain_text.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(&leaf_file, &chain_text[..end]).unwrap();
    match Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(out_dir.join("root-cert.pem"))
        .arg(&leaf_file)
        .output()
    {
        Ok(o) => assert!(
            o.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&o.stdout),
            stderr(&o)
        ),
        Err(_) => println!("note: openssl is not on PATH; skipped `openssl verify`"),
    }
}

#[test]
fn issue_honours_trust_domain_and_ttl_and_replaces_earlier_files() {
    let tmp = TempDir::new();
    let (ca_dir, out_dir) = (tmp.join("ca"), tmp.join("w"));
    init(&ca_dir);
    assert!(issue(&ca_dir, &out_dir, &[]).status.success());
    let first = std::fs::read(out_dir.join("key.pem")).unwrap();
    let out = issue(
        &ca_dir,
        &out_dir,
        &["--trust-domain", "example.org", "--ttl", "1h30m"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(std::fs::read(out_dir.join("key.pem")).unwrap(), first);
    let chain = pems(&out_dir.join("cert-chain.pem"));
    let leaf = parse(&chain[0]);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(
        san.general_names,
        vec![GeneralName::URI(
            "spiffe://example.org/ns/default/sa/bookinfo-reviews"
        )]
    );
    let ttl = leaf.validity().not_after.timestamp() - now();
    assert!((5400 - 120..=5400 + 5).contains(&ttl), "ttl {ttl}s");
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = TempDir::new();
    let ca_dir = tmp.join("ca");
    init(&ca_dir);
    let before = std::fs::read(ca_dir.join("ca-key.pem")).unwrap();
    let again = mesh(&["ca", "init", "--dir", s(&ca_dir)]);
    assert_eq!(again.status.code(), Some(2));
    let msg = stderr(&again);
    assert!(msg.contains(s(&ca_dir.join("ca-cert.pem"))), "{msg}");
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(std::fs::read(ca_dir.join("ca-key.pem")).unwrap(), before);

    let forced = mesh(&["ca", "init", "--dir", s(&ca_dir), "--force"]);
    assert_eq!(forced.status.code(), Some(0), "{}", stderr(&forced));
    assert_ne!(std::fs::read(ca_dir.join("ca-key.pem")).unwrap(), before);
}

#[test]
fn issue_names_the_missing_or_bad_ca_file_and_exits_2() {
    let tmp = TempDir::new();
    let missing = tmp.join("no-ca");
    let out = issue(&missing, &tmp.join("w"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let msg = stderr(&out);
    assert!(msg.contains(s(&missing.join("ca-cert.pem"))), "{msg}");
    assert!(msg.contains("mesh ca init"), "{msg}");
    assert!(!tmp.join("w").exists());

    let ca_dir = tmp.join("ca");
    init(&ca_dir);
    std::fs::write(ca_dir.join("ca-key.pem"), "not a key").unwrap();
    let out = issue(&ca_dir, &tmp.join("w"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let msg = stderr(&out);
    assert!(msg.contains(s(&ca_dir.join("ca-key.pem"))), "{msg}");

    // A key from another CA.
    let other = tmp.join("other");
    init(&other);
    std::fs::copy(other.join("ca-key.pem"), ca_dir.join("ca-key.pem")).unwrap();
    let out = issue(&ca_dir, &tmp.join("w"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("does not belong"), "{}", stderr(&out));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(mesh(&["ca"]).status.code(), Some(2));
    assert_eq!(mesh(&["ca", "init"]).status.code(), Some(2));
    let tmp = TempDir::new();
    let ca_dir = tmp.join("ca");
    init(&ca_dir);
    let bad_ttl = issue(&ca_dir, &tmp.join("w"), &["--ttl", "soon"]);
    assert_eq!(bad_ttl.status.code(), Some(2));
    let bad_ns = mesh(&[
        "ca",
        "issue",
        "--dir",
        s(&ca_dir),
        "--namespace",
        "a/b",
        "--service-account",
        "sa",
        "--out",
        s(&tmp.join("w")),
    ]);
    assert_eq!(bad_ns.status.code(), Some(2));
    assert!(stderr(&bad_ns).contains("SPIFFE"), "{}", stderr(&bad_ns));
}
