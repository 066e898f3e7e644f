//! `mesh ca init` and `mesh ca issue`: the development CA.
//!
//! A small certificate authority for trying the mesh's mTLS on one machine or in CI: `init`
//! writes a self-signed CA (`ca-cert.pem`, `ca-key.pem`), `issue` signs SPIFFE workload
//! certificates and writes them under the file names Istio's agent uses (`cert-chain.pem`,
//! `key.pem`, `root-cert.pem`), which is what `mesh run --identity-dir` reads.
//!
//! It is a development tool: the CA key sits unencrypted on disk. Production meshes get their
//! workload certificates from istiod, SPIRE or cert-manager in the same layout.
//!
//! Keys are ECDSA P-256 (Istio defaults to RSA 2048 and uses P-256 with
//! `ECC_SIGNATURE_ALGORITHM=ECDSA`; rustls and Envoy accept both). The crypto is rcgen over
//! `ring`; no aws-lc.

use std::{
    fmt,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::Subcommand;
use mesh_core::{Identity, identity::DEFAULT_TRUST_DOMAIN};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use time::OffsetDateTime;

/// The CA certificate `init` writes and `issue` reads.
pub(crate) const CA_CERT: &str = "ca-cert.pem";
/// The CA private key (PKCS#8 PEM, mode 0600).
pub(crate) const CA_KEY: &str = "ca-key.pem";
/// The workload certificate followed by the CA certificate (Istio's name).
pub(crate) const CERT_CHAIN: &str = "cert-chain.pem";
/// The workload private key (PKCS#8 PEM, mode 0600; Istio's name).
pub(crate) const KEY: &str = "key.pem";
/// The trust anchor peers are verified against (Istio's name).
pub(crate) const ROOT_CERT: &str = "root-cert.pem";

/// How long the CA certificate is valid: ten years, as Istio's self-signed root.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// Slack for clocks a little behind ours.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a self-signed development CA: DIR/ca-cert.pem and DIR/ca-key.pem.
    Init(InitArgs),
    /// Issue a SPIFFE workload certificate signed by the CA in DIR: writes OUT/cert-chain.pem,
    /// OUT/key.pem and OUT/root-cert.pem (replacing them, as a rotation does).
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Folder for ca-cert.pem and ca-key.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Replace an existing CA.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// Folder holding the CA (ca-cert.pem, ca-key.pem) written by `mesh ca init`.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The workload's namespace.
    #[arg(long, short = 'n', value_name = "NS")]
    namespace: String,
    /// The workload's Kubernetes service account.
    #[arg(long, value_name = "SA")]
    service_account: String,
    /// Folder for cert-chain.pem, key.pem and root-cert.pem (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The SPIFFE trust domain (Istio's `meshConfig.trustDomain`).
    #[arg(long, default_value = DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// How long the certificate is valid, as Istio writes durations (Istio's default: 24h).
    #[arg(long, default_value = "24h", value_parser = parse_ttl)]
    ttl: Duration,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    match mesh_core::duration::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("the TTL must be longer than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let (name, result) = match args.command {
        CaCommand::Init(a) => ("init", init(&a)),
        CaCommand::Issue(a) => ("issue", issue(&a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh ca {name}: {e}");
            ExitCode::from(2)
        }
    }
}

/// Why a CA command failed. Each names the file involved and, where there is one, the fix.
#[derive(Debug)]
enum CaError {
    Exists(PathBuf),
    Read(PathBuf, std::io::Error),
    Write(PathBuf, std::io::Error),
    Invalid(PathBuf, String),
    Usage(String),
    Crypto(rcgen::Error),
}

impl fmt::Display for CaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaError::Exists(p) => write!(
                f,
                "{} already exists: pass --force to replace the CA (certificates it issued will no longer verify)",
                p.display()
            ),
            CaError::Read(p, e) if e.kind() == std::io::ErrorKind::NotFound => write!(
                f,
                "cannot read {}: {e} (create a CA with `mesh ca init --dir {}`)",
                p.display(),
                p.parent().unwrap_or(Path::new(".")).display()
            ),
            CaError::Read(p, e) => write!(f, "cannot read {}: {e}", p.display()),
            CaError::Write(p, e) => write!(f, "cannot write {}: {e}", p.display()),
            CaError::Invalid(p, why) => write!(f, "{}: {why}", p.display()),
            CaError::Usage(why) => f.write_str(why),
            CaError::Crypto(e) => write!(f, "cannot build the certificate: {e}"),
        }
    }
}

impl std::error::Error for CaError {}

impl From<rcgen::Error> for CaError {
    fn from(e: rcgen::Error) -> Self {
        CaError::Crypto(e)
    }
}

// === init ===

fn init(args: &InitArgs) -> Result<(), CaError> {
    let cert_path = args.dir.join(CA_CERT);
    let key_path = args.dir.join(CA_KEY);
    if !args.force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CaError::Exists(p.clone()));
            }
        }
    }
    let (cert_pem, key_pem) = new_ca(OffsetDateTime::now_utc())?;
    std::fs::create_dir_all(&args.dir).map_err(|e| CaError::Write(args.dir.clone(), e))?;
    write_file(&key_path, key_pem.as_bytes(), true)?;
    write_file(&cert_path, cert_pem.as_bytes(), false)?;
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    Ok(())
}

/// A self-signed CA certificate and its key, both PEM.
fn new_ca(now: OffsetDateTime) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "mesh");
    dn.push(DnType::CommonName, "mesh development CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

// === issue ===

fn issue(args: &IssueArgs) -> Result<(), CaError> {
    let identity = Identity::new(&args.trust_domain, &args.namespace, &args.service_account);
    let spiffe = identity.to_string();
    if Identity::parse_spiffe(&spiffe).as_ref() != Some(&identity) || !spiffe.is_ascii() {
        return Err(CaError::Usage(format!(
            "{spiffe:?} is not a SPIFFE workload ID: the trust domain, namespace and service account must be non-empty ASCII without '/'"
        )));
    }
    let ca = LoadedCa::read(&args.dir)?;
    let now = OffsetDateTime::now_utc();
    if now > ca.not_after {
        return Err(CaError::Invalid(
            ca.cert_path.clone(),
            format!(
                "the CA expired at {}: create a new one with `mesh ca init --force`",
                rfc3339(ca.not_after)
            ),
        ));
    }
    let ttl = time::Duration::try_from(args.ttl)
        .map_err(|_| CaError::Usage(format!("--ttl {:?} is too long", args.ttl)))?;
    let not_after = now
        .checked_add(ttl)
        .ok_or_else(|| CaError::Usage(format!("--ttl {:?} is too long", args.ttl)))?
        // A certificate cannot outlive its issuer.
        .min(ca.not_after);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    // Istio's workload certificates carry no subject: the identity is the URI SAN alone (which
    // rcgen then marks critical, as RFC 5280 asks).
    params.distinguished_name = DistinguishedName::new();
    let uri = spiffe
        .clone()
        .try_into()
        .map_err(|e| CaError::Usage(format!("{spiffe:?}: {e}")))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    let cert = params.signed_by(&key, &ca.issuer)?;

    std::fs::create_dir_all(&args.out).map_err(|e| CaError::Write(args.out.clone(), e))?;
    let chain = format!("{}{}", cert.pem(), ensure_newline(&ca.cert_pem));
    write_file(&args.out.join(KEY), key.serialize_pem().as_bytes(), true)?;
    write_file(&args.out.join(CERT_CHAIN), chain.as_bytes(), false)?;
    write_file(&args.out.join(ROOT_CERT), ca.cert_pem.as_bytes(), false)?;
    println!(
        "issued {spiffe}, valid until {}: wrote {CERT_CHAIN}, {KEY} and {ROOT_CERT} in {}",
        rfc3339(not_after),
        args.out.display()
    );
    Ok(())
}

/// The CA read back from `mesh ca init`'s files, checked to be usable.
struct LoadedCa {
    cert_path: PathBuf,
    cert_pem: String,
    not_after: OffsetDateTime,
    issuer: Issuer<'static, KeyPair>,
}

impl LoadedCa {
    fn read(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = read_file(&cert_path)?;
        let key_pem = read_file(&key_path)?;
        let invalid = |p: &Path, why: String| CaError::Invalid(p.to_path_buf(), why);

        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| invalid(&key_path, format!("not a PEM private key: {e}")))?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| invalid(&cert_path, format!("not a PEM certificate: {e}")))?;
        let x509 = pem
            .parse_x509()
            .map_err(|e| invalid(&cert_path, format!("not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(invalid(
                &cert_path,
                "not a CA certificate (basicConstraints CA:true is missing)".to_owned(),
            ));
        }
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(invalid(
                &key_path,
                format!("this key does not belong to {}", cert_path.display()),
            ));
        }
        let not_after = x509.validity().not_after.to_datetime();
        let issuer = Issuer::from_ca_cert_der(&pem.contents.as_slice().into(), key)
            .map_err(|e| invalid(&cert_path, format!("unusable as an issuer: {e}")))?;
        Ok(LoadedCa {
            cert_path,
            cert_pem,
            not_after,
            issuer,
        })
    }
}

/// `2025-01-31T12:00:00Z`, without pulling in time's formatting machinery.
fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// === files ===

fn read_file(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|e| CaError::Read(path.to_path_buf(), e))
}

fn ensure_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// Writes `path` by a rename from a temporary file beside it, so a reader watching the folder
/// (`mesh run --identity-dir`) never sees half a file. Private keys get mode 0600.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CaError> {
    let err = |e| CaError::Write(path.to_path_buf(), e);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    // A leftover from a crashed run would keep its old mode through `truncate`.
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let result = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let result = result.and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}
