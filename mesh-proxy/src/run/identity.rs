//! `--identity-dir` and `--service-account`: the workload's SPIFFE certificate.

use std::path::Path;

use mesh_core::Identity;
use mesh_tower::tls::{CERT_CHAIN_FILE, DirWatch, IdentitySource, KEY_FILE, ROOT_CERT_FILE};

/// Reads `dir` (Istio's layout) if given, and checks its identity against the flags: a
/// certificate for another namespace or service account is allowed (policies select by the
/// flags, peers see the certificate) but almost always a mistake, so it is reported.
/// The folder is then watched: rewritten files (a renewal by `mesh ca issue`, istio-agent,
/// cert-manager or SPIRE) rotate the certificate for new connections; live ones keep theirs.
/// The watch lasts as long as the returned [`DirWatch`].
/// `Err`: a message for stderr, the start fails.
pub(crate) fn load(
    dir: Option<&Path>,
    namespace: &str,
    service_account: Option<&str>,
) -> Result<Option<(IdentitySource, DirWatch)>, String> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    let (source, watch) = IdentitySource::watch_dir(dir).map_err(|e| {
        format!(
            "--identity-dir {}: {e} (it must hold {CERT_CHAIN_FILE}, {KEY_FILE} and \
             {ROOT_CERT_FILE}, as `mesh ca issue --out DIR` writes them)",
            dir.display()
        )
    })?;
    for warning in mismatches(&source.identity(), namespace, service_account) {
        say!(
            "mesh run: warning: --identity-dir {}: {warning}",
            dir.display()
        );
    }
    Ok(Some((source, watch)))
}

/// What differs between the certificate's identity and the flags.
fn mismatches(id: &Identity, namespace: &str, service_account: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if id.namespace != namespace {
        out.push(format!(
            "the certificate is for namespace `{}` ({id}) but --namespace is `{namespace}`: \
             policies are selected for `{namespace}`, peers see `{}`",
            id.namespace, id.namespace
        ));
    }
    if let Some(sa) = service_account.filter(|sa| *sa != id.service_account) {
        out.push(format!(
            "the certificate is for service account `{}` ({id}) but --service-account is \
             `{sa}`: peers see `{}`",
            id.service_account, id.service_account
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_flags_are_named() {
        let id = Identity::new("cluster.local", "default", "reviews");
        assert!(mismatches(&id, "default", Some("reviews")).is_empty());
        assert!(mismatches(&id, "default", None).is_empty());
        let w = mismatches(&id, "bookinfo", Some("ratings"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("--namespace is `bookinfo`"), "{}", w[0]);
        assert!(w[1].contains("--service-account is `ratings`"), "{}", w[1]);
    }
}
