//! The cluster's root key: it signs every token's first block; nodes hold only its public half.

use biscuit_auth::builder::Algorithm;
use biscuit_auth::{KeyPair, PrivateKey, PublicKey};

/// The root key pair. Its text form (a key file) is `ed25519-private/<64 hex digits>`.
pub struct RootKey(KeyPair);

impl RootKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self(KeyPair::new())
    }

    /// Reads a key file's text.
    pub fn parse(text: &str) -> Result<Self, crate::TokenError> {
        let hex = text
            .trim()
            .strip_prefix("ed25519-private/")
            .ok_or_else(|| {
                crate::TokenError(
                    "a root key file holds `ed25519-private/` and 64 hex digits (see `meridian token keygen`)"
                        .into(),
                )
            })?;
        let private = PrivateKey::from_bytes_hex(hex, Algorithm::Ed25519)
            .map_err(|e| crate::TokenError(format!("a root key that does not decode: {e}")))?;
        Ok(Self(KeyPair::from(&private)))
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("ed25519-private/{}\n", self.0.private().to_bytes_hex())
    }

    pub fn public(&self) -> RootPublicKey {
        RootPublicKey(self.0.public())
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.0
    }
}

/// The root key's public half: what a node needs to verify tokens. Text form:
/// `ed25519/<64 hex digits>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootPublicKey(PublicKey);

impl RootPublicKey {
    pub fn parse(text: &str) -> Result<Self, crate::TokenError> {
        let hex = text.trim().strip_prefix("ed25519/").ok_or_else(|| {
            crate::TokenError("a root public key is `ed25519/` and 64 hex digits".into())
        })?;
        PublicKey::from_bytes_hex(hex, Algorithm::Ed25519)
            .map(Self)
            .map_err(|e| crate::TokenError(format!("a root public key that does not decode: {e}")))
    }

    pub fn to_text(&self) -> String {
        format!("ed25519/{}", self.0.to_bytes_hex())
    }

    pub(crate) fn key(&self) -> PublicKey {
        self.0
    }
}
