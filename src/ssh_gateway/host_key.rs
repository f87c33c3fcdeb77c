//! The gateway's own SSH host key: `data_dir/ssh_host_ed25519_key`, an OpenSSH `ssh-ed25519`
//! private key file (mode 0600) generated on first use and reused from then on, so clients can
//! pin it in `known_hosts` (`portcullis ssh-host-key` prints the line and fingerprint).

use std::path::{Path, PathBuf};

use ring::rand::SecureRandom;
use ring::signature::Ed25519KeyPair;

use crate::proto::ssh::keyfile::{self, KeyFileError};
use crate::proto::ssh::keys::PublicKey;

/// The file name under `data_dir`.
pub const FILE_NAME: &str = "ssh_host_ed25519_key";

/// The host key, kept as the file's bytes: ring's key pairs can't be cloned and every connection's
/// transport takes one by value, so each connection parses its own from these bytes.
pub struct HostKey {
    file: Vec<u8>,
    public: PublicKey,
    path: PathBuf,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "HostKey({} {})",
            self.path.display(),
            self.public.fingerprint()
        )
    }
}

impl HostKey {
    /// Loads `data_dir/ssh_host_ed25519_key`, generating it first if it does not exist.
    ///
    /// # Errors
    /// The file can't be read or written, is open to group or others, or is not an unencrypted
    /// `ssh-ed25519` OpenSSH key.
    pub fn load_or_create(data_dir: &Path, rng: &dyn SecureRandom) -> Result<HostKey, String> {
        let path = data_dir.join(FILE_NAME);
        if !path.exists() {
            let (_, bytes) = keyfile::generate_host_key(rng, "portcullis")
                .map_err(|e| format!("generating the SSH host key: {e}"))?;
            match keyfile::write_new_private_key_file(&path, &bytes) {
                Ok(()) => {}
                // Another process created it in the meantime: use theirs.
                Err(KeyFileError::Io {
                    kind: std::io::ErrorKind::AlreadyExists,
                    ..
                }) => {}
                Err(e) => return Err(format!("writing the SSH host key: {e}")),
            }
        }
        let key =
            keyfile::load_private_key_file(&path, rng).map_err(|e| format!("SSH host key: {e}"))?;
        let public = key.public_key().clone();
        if !matches!(public, PublicKey::Ed25519(_)) {
            return Err(format!(
                "SSH host key {}: the gateway's host key must be ssh-ed25519; move the file away to have a new one generated",
                path.display()
            ));
        }
        // The file was checked (mode, format) by the load above; keep its bytes for per-connection
        // key pairs.
        let file = std::fs::read(&path).map_err(|e| format!("SSH host key: {e}"))?;
        Ok(HostKey { file, public, path })
    }

    /// The public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// `ssh-ed25519 AAAA...`, the known_hosts key part.
    pub fn openssh_line(&self) -> String {
        self.public.to_string()
    }

    /// `SHA256:...` as ssh prints it.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// A fresh key pair for one connection's transport.
    ///
    /// # Errors
    /// Only if the bytes loaded at start stopped parsing, which can't happen.
    pub fn key_pair(&self, rng: &dyn SecureRandom) -> Result<Ed25519KeyPair, String> {
        keyfile::parse_private_key_file(&self.file, rng)
            .ok()
            .and_then(keyfile::PrivateKey::into_ed25519_pair)
            .ok_or_else(|| "SSH host key no longer parses".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    #[test]
    fn generates_once_then_reuses_the_same_key() {
        let dir = std::env::temp_dir().join(format!("portcullis-hostkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rng = SystemRandom::new();
        let first = HostKey::load_or_create(&dir, &rng).unwrap();
        let second = HostKey::load_or_create(&dir, &rng).unwrap();
        assert_eq!(first.openssh_line(), second.openssh_line());
        assert!(first.openssh_line().starts_with("ssh-ed25519 AAAA"));
        assert!(first.fingerprint().starts_with("SHA256:"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let pair = first.key_pair(&rng).unwrap();
        assert_eq!(
            PublicKey::Ed25519(pair.public_key().as_ref().try_into().unwrap()),
            *first.public_key()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rejects_a_host_key_file_open_to_others() {
        let dir =
            std::env::temp_dir().join(format!("portcullis-hostkey-open-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rng = SystemRandom::new();
        HostKey::load_or_create(&dir, &rng).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(FILE_NAME), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let err = HostKey::load_or_create(&dir, &rng).unwrap_err();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
