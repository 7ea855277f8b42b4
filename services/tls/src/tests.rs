use super::*;

fn write(dir: &Path, name: &str, pem: &gen::Pem) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    std::fs::write(&c, &pem.cert).expect("write cert");
    std::fs::write(&k, &pem.key).expect("write key");
    (c, k)
}

#[test]
fn a_node_certificate_names_its_node_and_a_client_one_none() {
    let ca = gen::ca("test CA").expect("ca");
    let node = gen::node(&ca, 7, &["127.0.0.1".into()]).expect("node");
    let der = CertificateDer::from_pem_slice(node.cert.as_bytes()).expect("pem");
    assert_eq!(node_id_of(&der), Some(7));
    let client = gen::client(&ca, "ops").expect("client");
    let der = CertificateDer::from_pem_slice(client.cert.as_bytes()).expect("pem");
    assert_eq!(node_id_of(&der), None);
    assert_eq!(peer_node(None), None);
}

#[test]
fn a_node_refuses_a_certificate_of_another_node_and_broken_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = gen::ca("test CA").expect("ca");
    let (ca_path, _) = write(dir.path(), "ca", &ca);
    let (cert, key) = write(dir.path(), "n2", &gen::node(&ca, 2, &[]).expect("node"));
    let files = |cert: &Path, key: &Path| TlsFiles {
        ca: ca_path.clone(),
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    assert!(NodeTls::load(files(&cert, &key), 2).is_ok());
    let e = NodeTls::load(files(&cert, &key), 3)
        .err()
        .expect("wrong node");
    assert!(
        e.to_string().contains("names node 2 but this is node 3"),
        "{e}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not pem").expect("write");
    let e = NodeTls::load(files(&junk, &key), 2)
        .err()
        .expect("junk cert");
    assert!(e.to_string().contains("junk.pem"), "{e}");
    let e = NodeTls::load(files(&cert, &junk), 2)
        .err()
        .expect("junk key");
    assert!(e.to_string().contains("junk.pem"), "{e}");
    let missing = dir.path().join("missing.pem");
    let e = NodeTls::load(files(&missing, &key), 2)
        .err()
        .expect("missing");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    // A key that is not the certificate's.
    let (_, other_key) = write(dir.path(), "n9", &gen::node(&ca, 9, &[]).expect("node"));
    assert!(NodeTls::load(files(&cert, &other_key), 2).is_err());
}

#[test]
fn aes_128_gcm_is_offered_first_and_no_suite_is_dropped() {
    #[allow(deprecated)]
    let default = rustls::crypto::ring::default_provider();
    let ours = provider();
    assert_eq!(
        ours.cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
    );
    let names = |suites: &[rustls::SupportedCipherSuite]| {
        let mut v: Vec<_> = suites.iter().map(|s| format!("{:?}", s.suite())).collect();
        v.sort();
        v
    };
    assert_eq!(names(&ours.cipher_suites), names(&default.cipher_suites));
}
