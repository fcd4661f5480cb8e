//! A throwaway certificate authority and a server certificate it issued for 127.0.0.1,
//! written as PEM files for the TLS testbed (scenario 9). Each peer is told to trust
//! the CA the way its users would: keyway through `SSL_CERT_FILE` (the platform
//! verifier honours it on Linux), node through `NODE_EXTRA_CA_CERTS`, the direct client
//! by adding it to its reqwest client.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// The files, in the bench's work directory.
#[derive(Clone, Debug)]
pub struct Pki {
    /// The CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// The server's certificate chain and its key: what the testbed serves.
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn write(dir: &Path) -> Result<Self> {
        let ca_key = KeyPair::generate().context("a key for the test CA")?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "keyway-bench test CA");
        let ca_cert = ca.self_signed(&ca_key).context("signing the test CA")?;
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().context("a key for the server")?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])?
            .signed_by(&leaf_key, &issuer)
            .context("issuing the server certificate")?;
        let me = Self {
            ca: dir.join("bench-ca.pem"),
            cert: dir.join("bench-server.pem"),
            key: dir.join("bench-server-key.pem"),
        };
        std::fs::write(&me.ca, ca_cert.pem()).context("writing the CA")?;
        std::fs::write(&me.cert, leaf.pem()).context("writing the server certificate")?;
        std::fs::write(&me.key, leaf_key.serialize_pem()).context("writing the server key")?;
        Ok(me)
    }

    /// The CA as a reqwest certificate.
    pub fn ca_certificate(&self) -> Result<reqwest::Certificate> {
        let pem = std::fs::read(&self.ca).context("reading the test CA")?;
        reqwest::Certificate::from_pem(&pem).context("the test CA")
    }
}
