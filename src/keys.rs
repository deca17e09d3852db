//! Private key files, compatible with the Go original: `<dir>/<device>.key`, standard
//! base64 without a trailing newline, mode 0600, directory 0755; a trailing newline is
//! tolerated on read; generated when missing, so an existing node keeps its public key.
//! Written whole or not at all (`files.rs`). A key file readable by group or others is
//! repaired to 0600, with a warning that the key may have been read (delete the file to
//! get a new key).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use dataplane::{Key, PrivateKey};

/// The key file of `device` under `dir`.
pub fn key_path(dir: &Path, device: &str) -> PathBuf {
    dir.join(format!("{device}.key"))
}

/// Reads the key of `device`, generating and storing one if there is none.
pub fn load_or_create(dir: &Path, device: &str) -> anyhow::Result<PrivateKey> {
    let path = key_path(dir, device);
    match fs::read_to_string(&path) {
        Ok(text) => {
            if crate::files::restrict_to_owner(&path)? {
                tracing::warn!(path = %path.display(), "the key file was readable by others; it is now mode 0600. \
                    If the key may have been read, delete the file: a new key is generated at the next start");
            }
            let key = Key::from_base64(text.trim_end_matches(['\n', '\r'])).with_context(|| {
                format!(
                    "key file {} does not hold a base64 WireGuard key",
                    path.display()
                )
            })?;
            if key.is_zero() {
                bail!("key file {} holds an all-zero key", path.display());
            }
            Ok(PrivateKey::from_bytes(key.0))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no key found, generating a new private key");
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", dir.display()))?;
            let key = PrivateKey::generate();
            crate::files::write_private(&path, key.expose().to_base64().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swg-keys-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generated_once_then_reused() {
        let d = dir("gen").join("nested");
        let k1 = load_or_create(&d, "wireguard.gcp").unwrap();
        let path = key_path(&d, "wireguard.gcp");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&d).unwrap().mode() & 0o777, 0o755);
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.ends_with('\n'));
        assert_eq!(text.len(), 44);
        let k2 = load_or_create(&d, "wireguard.gcp").unwrap();
        assert_eq!(k1.public_key(), k2.public_key());
        let _ = fs::remove_dir_all(d.parent().unwrap());
    }

    #[test]
    fn go_written_key_with_newline_is_read() {
        let d = dir("nl");
        fs::create_dir_all(&d).unwrap();
        // A key as `wg genkey` writes it (with a newline).
        let sk = PrivateKey::generate();
        fs::write(
            key_path(&d, "wireguard.aws"),
            format!("{}\n", sk.expose().to_base64()),
        )
        .unwrap();
        assert_eq!(
            load_or_create(&d, "wireguard.aws").unwrap().public_key(),
            sk.public_key()
        );
        fs::write(key_path(&d, "wireguard.bad"), "garbage").unwrap();
        assert!(load_or_create(&d, "wireguard.bad").is_err());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_key_readable_by_others_is_repaired_and_kept() {
        let d = dir("perm");
        let k1 = load_or_create(&d, "wireguard.gcp").unwrap();
        let path = key_path(&d, "wireguard.gcp");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let k2 = load_or_create(&d, "wireguard.gcp").unwrap();
        assert_eq!(k1.public_key(), k2.public_key());
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let _ = fs::remove_dir_all(&d);
    }
}
