//! The node's X25519 private key: generated once, kept in the state dir with
//! mode 0600, written atomically, rotated on request.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use boringtun::x25519::{PublicKey, StaticSecret};
use mesh_api::WireGuardKey;

use crate::error::{Error, Result};

/// File name of the key inside the state dir.
pub const KEY_FILE_NAME: &str = "wireguard-private.key";

/// A WireGuard private key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    /// A fresh random key, clamped the way `wg genkey` clamps.
    pub fn generate() -> Result<PrivateKey> {
        let mut b = [0u8; 32];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|source| Error::Random { source })?;
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        Ok(PrivateKey(b))
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> PrivateKey {
        PrivateKey(bytes)
    }

    /// The raw bytes (secret).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Parses the base64 form written by `wg genkey`.
    pub fn from_base64(s: &str) -> Option<PrivateKey> {
        let v = BASE64.decode(s.trim()).ok()?;
        Some(PrivateKey(v.try_into().ok()?))
    }

    /// The base64 form (secret: only for files with mode 0600).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The matching public key.
    pub fn public_key(&self) -> WireGuardKey {
        WireGuardKey::from_bytes(PublicKey::from(&self.secret()).to_bytes())
    }

    pub(crate) fn secret(&self) -> StaticSecret {
        StaticSecret::from(self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public={})", self.public_key())
    }
}

/// Where the node's private key lives: `<state dir>/wireguard-private.key`.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
}

impl KeyStore {
    /// The key store of a state dir (created with mode 0700 when missing).
    pub fn in_state_dir(state_dir: &Path) -> KeyStore {
        KeyStore {
            path: state_dir.join(KEY_FILE_NAME),
        }
    }

    /// The key file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the key, or generates and persists one when the file does not
    /// exist. A file readable by group/other or with bad content is refused.
    pub fn load_or_generate(&self) -> Result<PrivateKey> {
        match self.load() {
            Ok(Some(k)) => Ok(k),
            Ok(None) => {
                let k = PrivateKey::generate()?;
                self.store(&k)?;
                tracing::info!(path = %self.path.display(), public_key = %k.public_key(), "generated a new WireGuard private key");
                Ok(k)
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the key; `None` when the file does not exist.
    pub fn load(&self) -> Result<Option<PrivateKey>> {
        let io = |source| Error::KeyFileIo {
            path: self.path.clone(),
            source,
        };
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(Error::KeyFileMode {
                path: self.path.clone(),
                mode,
            });
        }
        let text = fs::read_to_string(&self.path).map_err(io)?;
        let bad = |reason| Error::KeyFileContent {
            path: self.path.clone(),
            reason,
        };
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|_| bad("it is not base64"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("it does not decode to 32 bytes"))?;
        Ok(Some(PrivateKey(arr)))
    }

    /// Writes `key` atomically (temp file with mode 0600, fsync, rename).
    pub fn store(&self, key: &PrivateKey) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|source| Error::KeyFileIo {
            path: dir.to_path_buf(),
            source,
        })?;
        let tmp = dir.join(format!(".{KEY_FILE_NAME}.tmp.{}", std::process::id()));
        let io = |source| Error::KeyFileIo {
            path: tmp.clone(),
            source,
        };
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = f
            .write_all(format!("{}\n", key.to_base64()).as_bytes())
            .and_then(|()| f.sync_all());
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        fs::rename(&tmp, &self.path).map_err(|source| {
            let _ = fs::remove_file(&tmp);
            Error::KeyFileIo {
                path: self.path.clone(),
                source,
            }
        })?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Generates a new key and persists it in place of the old one.
    pub fn rotate(&self) -> Result<PrivateKey> {
        let k = PrivateKey::generate()?;
        self.store(&k)?;
        tracing::info!(path = %self.path.display(), public_key = %k.public_key(), "rotated the WireGuard private key");
        Ok(k)
    }
}
