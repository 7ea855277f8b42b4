//! Certificates for a Meridian cluster (rcgen, ECDSA P-256): a CA, node certificates naming
//! `n<ID>.node.meridian` and the addresses clients dial, client certificates. `meridian dev`
//! makes its cluster's with these, and tests make good and hostile ones. Validity is rcgen's
//! default (no expiry to speak of): for real clusters, issue certificates with your own PKI
//! and rotate them (docs/security.md).

use crate::node_name;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A new self-signed CA named `name`.
pub fn ca(name: &str) -> Result<Pem, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate for `names` (DNS names or IP addresses), good for both ends of a connection,
/// signed by `ca`.
fn leaf(ca: &Pem, common_name: &str, names: Vec<String>) -> Result<Pem, rcgen::Error> {
    let ca_key = KeyPair::from_pem(&ca.key)?;
    let ca_cert = CertificateParams::from_ca_cert_pem(&ca.cert)?.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Node `id`'s certificate: `n<ID>.node.meridian` plus `hosts` (the addresses clients dial it
/// by: IPs or DNS names, ports left off).
pub fn node(ca: &Pem, id: u64, hosts: &[String]) -> Result<Pem, rcgen::Error> {
    let mut names = vec![node_name(id)];
    names.extend(hosts.iter().cloned());
    leaf(ca, &node_name(id), names)
}

/// A client's certificate named `name` (no node name: it cannot pass for a node).
pub fn client(ca: &Pem, name: &str) -> Result<Pem, rcgen::Error> {
    leaf(ca, name, vec![format!("{name}.client.meridian")])
}

/// A self-signed certificate that names node `id` (hostile: no CA signed it).
pub fn self_signed_node(id: u64, hosts: &[String]) -> Result<Pem, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut names = vec![node_name(id)];
    names.extend(hosts.iter().cloned());
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, node_name(id));
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
pub fn host_of(addr: &str) -> String {
    addr.rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}
