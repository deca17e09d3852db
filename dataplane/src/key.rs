//! WireGuard keys: 32-byte Curve25519 keys and preshared keys, in the two text forms
//! people meet (base64 in `wg` output and configs, lowercase hex on the UAPI socket).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519;

use crate::error::ConfigError;

/// A 32-byte key as it travels: a public key, a private key or a preshared key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// Parses the 64-character hex form used by the UAPI.
    pub fn from_hex(s: &str) -> Result<Self, ConfigError> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(ConfigError::InvalidKey("hex key must be 64 characters"));
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            let hi = hex_digit(pair[0])?;
            let lo = hex_digit(pair[1])?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Self(out))
    }

    /// Parses the 44-character standard base64 form used by `wg` and by Node annotations.
    pub fn from_base64(s: &str) -> Result<Self, ConfigError> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| ConfigError::InvalidKey("key is not valid base64"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| ConfigError::InvalidKey("key must decode to 32 bytes"))?;
        Ok(Self(arr))
    }

    /// Lowercase hex, as the UAPI wants it.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 0xf) as usize] as char);
        }
        s
    }

    /// Standard padded base64, as `wg` prints it.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// True for the all-zero key, which the UAPI uses to mean "none".
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }
}

fn hex_digit(c: u8) -> Result<u8, ConfigError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(ConfigError::InvalidKey("hex key has a non-hex character")),
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.to_base64())
    }
}

impl FromStr for Key {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base64(s)
    }
}

/// A private key. Its `Debug` output never shows the key material.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Key);

impl PrivateKey {
    /// Wraps key bytes, clamped as X25519 uses them (as the kernel stores them).
    pub fn from_bytes(mut bytes: [u8; 32]) -> Self {
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Self(Key(bytes))
    }

    /// A fresh random key from the OS generator.
    pub fn generate() -> Self {
        let secret = x25519::StaticSecret::random_from_rng(rand::rngs::OsRng);
        Self::from_bytes(secret.to_bytes())
    }

    /// The key material (for the UAPI `get` answer and for writing key files only).
    pub fn expose(&self) -> &Key {
        &self.0
    }

    /// The matching public key.
    pub fn public_key(&self) -> Key {
        Key(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    pub(crate) fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public={})", self.public_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_round_trip() {
        let k = PrivateKey::generate().public_key();
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
        assert_eq!(Key::from_base64(&k.to_base64()).unwrap(), k);
        assert_eq!(Key::from_hex(&k.to_hex().to_uppercase()).unwrap(), k);
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(Key::from_hex("00").is_err());
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
        assert!(Key::from_base64("not base64!").is_err());
        assert!(Key::from_base64("AAAA").is_err());
    }

    #[test]
    fn private_key_debug_hides_material() {
        let k = PrivateKey::generate();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.expose().to_base64()));
        assert!(dbg.contains(&k.public_key().to_base64()));
    }

    #[test]
    fn private_keys_are_clamped() {
        let k = PrivateKey::from_bytes([0xff; 32]);
        assert_eq!(k.expose().0[0], 0xf8);
        assert_eq!(k.expose().0[31], 0x7f);
        assert_eq!(PrivateKey::from_bytes([0; 32]).expose().0[31], 0x40);
    }

    #[test]
    fn known_public_key() {
        // RFC 7748 section 6.1 test vector (Alice).
        let sk = Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
            .unwrap();
        let pk = PrivateKey::from_bytes(sk.0).public_key();
        assert_eq!(
            pk.to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
    }
}
