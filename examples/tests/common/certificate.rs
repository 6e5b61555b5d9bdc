//! A self-signed certificate for `localhost`, as the PEM files the TLS flags of
//! `echo_server` and `echo_client` read.

use std::path::PathBuf;

/// A certificate for `localhost` and its key, as PEM files removed on drop.
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
}

impl Certificate {
    /// A fresh certificate; `name` tells apart the files of one test binary.
    pub fn new(name: &str) -> Certificate {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let cert = dir.join(format!("chitchat-test-{id}-{name}-cert.pem"));
        let key = dir.join(format!("chitchat-test-{id}-{name}-key.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
        Certificate { cert, key }
    }

    /// `echo_server`'s flags to serve TLS with it.
    pub fn server_args(&self) -> [&str; 4] {
        ["--tls-cert", self.cert(), "--tls-key", self.key()]
    }

    /// `echo_client`'s flags to trust it.
    pub fn client_args(&self) -> [&str; 4] {
        ["--tls-ca", self.cert(), "--tls-name", "localhost"]
    }

    fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

impl Drop for Certificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cert);
        let _ = std::fs::remove_file(&self.key);
    }
}
