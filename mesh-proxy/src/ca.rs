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
    time::{Duration, SystemTime},
};

use clap::Subcommand;
use mesh_core::{Identity, identity::DEFAULT_TRUST_DOMAIN};
use mesh_tower::tls::{CertificateAuthority, TlsError};
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
    Crypto(TlsError),
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

impl From<TlsError> for CaError {
    fn from(e: TlsError) -> Self {
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
    let ca = CertificateAuthority::generate("mesh development CA")?;
    std::fs::create_dir_all(&args.dir).map_err(|e| CaError::Write(args.dir.clone(), e))?;
    write_file(&key_path, ca.key_pem().as_bytes(), true)?;
    write_file(&cert_path, ca.cert_pem().as_bytes(), false)?;
    println!("wrote {} and {}", cert_path.display(), key_path.display());
    Ok(())
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
    let cert_path = args.dir.join(CA_CERT);
    let key_path = args.dir.join(CA_KEY);
    let cert_pem = read_file(&cert_path)?;
    let key_pem = read_file(&key_path)?;
    let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
        TlsError::Pem { what, reason } if what == "CA key" => CaError::Invalid(key_path, reason),
        TlsError::Pem { reason, .. } => CaError::Invalid(cert_path.clone(), reason),
        other => CaError::Invalid(cert_path.clone(), other.to_string()),
    })?;
    let now = SystemTime::now();
    if now > ca.not_after() {
        return Err(CaError::Invalid(
            cert_path,
            format!(
                "the CA expired at {}: create a new one with `mesh ca init --force`",
                rfc3339(ca.not_after().into())
            ),
        ));
    }
    let not_after = now
        .checked_add(args.ttl)
        .filter(|t| OffsetDateTime::from(*t).year() < 10_000)
        .ok_or_else(|| CaError::Usage(format!("--ttl {:?} is too long", args.ttl)))?
        // A certificate cannot outlive its issuer.
        .min(ca.not_after());
    let issued = ca.issue(&identity, args.ttl)?;

    std::fs::create_dir_all(&args.out).map_err(|e| CaError::Write(args.out.clone(), e))?;
    write_file(&args.out.join(KEY), issued.key_pem().as_bytes(), true)?;
    write_file(
        &args.out.join(CERT_CHAIN),
        issued.chain_pem().as_bytes(),
        false,
    )?;
    write_file(
        &args.out.join(ROOT_CERT),
        issued.root_pem().as_bytes(),
        false,
    )?;
    println!(
        "issued {spiffe}, valid until {}: wrote {CERT_CHAIN}, {KEY} and {ROOT_CERT} in {}",
        rfc3339(not_after.into()),
        args.out.display()
    );
    Ok(())
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
