//! The redb store: one file, `data_dir/portcullis.redb`, holding tokens, the audit log and small
//! gateway-wide values (see `tables.rs`).
//!
//! One process at a time: redb locks the file, so a second opener (for example the CLI while the
//! gateway runs) gets [`StoreError::AlreadyOpen`] and should use the gateway's control socket.
//! Each write transaction chooses its durability explicitly.

pub(crate) mod codec;
pub mod tables;

use std::fmt;
use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, Durability, ReadableDatabase, ReadableTable};
use ring::rand::{SecureRandom, SystemRandom};

use codec::{Dec, Enc};
use tables::{AUDIT, META, META_GATEWAY_KEY, META_SCHEMA, TOKENS, TOKEN_INDEX};

/// Name of the store file inside the data directory.
pub const STORE_FILE: &str = "portcullis.redb";

/// The schema version this build reads and writes. 2: audit rows may be blocks of lines (see
/// `audit/chain.rs`); a version-1 store is upgraded on open (its rows read as they are), and a
/// build that reads only version 1 refuses a version-2 store with a clear error instead of
/// calling its audit rows corrupt.
const SCHEMA_VERSION: u8 = 2;

/// Version byte of the gateway key value.
const GATEWAY_KEY_VERSION: u8 = 1;

/// redb page cache. The working set (live tokens, the audit head) is small; the audit log is
/// written once and read by export, which streams.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The open store. Share it as `Arc<Store>`.
pub struct Store {
    db: Database,
    data_dir: PathBuf,
}

/// What can go wrong with the store.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// Another process (normally the running gateway) holds the store file.
    AlreadyOpen(PathBuf),
    /// The store file could not be opened or created (not a redb file, newer format, ...).
    Open { path: PathBuf, reason: String },
    /// A file system operation on `path` failed.
    Io { path: PathBuf, source: io::Error },
    /// A redb transaction, table or commit failed.
    Db(String),
    /// A stored value could not be decoded; names the kind of value.
    Corrupt(&'static str),
    /// The store was written by a newer (or unknown) schema version.
    Schema(u8),
    /// A caller passed a value the store cannot hold (explains which).
    InvalidInput(&'static str),
    /// The operating system's random number generator failed.
    Random,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::AlreadyOpen(p) => write!(
                f,
                "the store {} is in use by another portcullis process (is the gateway running? \
                 use its control socket, or stop it)",
                p.display()
            ),
            StoreError::Open { path, reason } => {
                write!(f, "cannot open the store {}: {reason}", path.display())
            }
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Db(e) => write!(f, "store error: {e}"),
            StoreError::Corrupt(what) => write!(
                f,
                "the store holds a corrupt {what} (restore the data directory from a backup)"
            ),
            StoreError::Schema(v) => write!(
                f,
                "the store has schema version {v}, this portcullis reads version {SCHEMA_VERSION} \
                 (was it written by a newer release?)"
            ),
            StoreError::InvalidInput(what) => f.write_str(what),
            StoreError::Random => f.write_str("the system random number generator failed"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl Store {
    /// Opens (creating if missing) `data_dir/portcullis.redb`. A missing `data_dir` is created with
    /// mode 0700, the file with mode 0600 (an existing file is set to 0600). On first open a random
    /// 32-byte gateway key is created.
    ///
    /// # Errors
    /// [`StoreError::AlreadyOpen`] when another process holds the file; `Io` / `Open` / `Db` for the
    /// rest.
    pub fn open(data_dir: &Path) -> Result<Arc<Store>, StoreError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        if !data_dir.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(io_err(data_dir))?;
        }
        let path = data_dir.join(STORE_FILE);
        // Create the file ourselves so it never exists with looser permissions; redb opens it after.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(&path))?;
        drop(file);

        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(path.clone()),
                other => StoreError::Open {
                    path: path.clone(),
                    reason: other.to_string(),
                },
            })?;
        let store = Store {
            db,
            data_dir: data_dir.to_path_buf(),
        };
        store.init()?;
        Ok(Arc::new(store))
    }

    /// Creates the tables, checks the schema version, creates the gateway key if missing.
    fn init(&self) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            txn.open_table(TOKENS)?;
            txn.open_table(TOKEN_INDEX)?;
            txn.open_table(AUDIT)?;
            let schema = meta.get(META_SCHEMA)?.map(|v| v.value().to_vec());
            match schema.as_deref() {
                None => {
                    meta.insert(META_SCHEMA, [SCHEMA_VERSION].as_slice())?;
                }
                Some([v]) if *v == SCHEMA_VERSION => {}
                // 1 -> 2 adds a row format; nothing stored changes.
                Some([1]) => {
                    meta.insert(META_SCHEMA, [SCHEMA_VERSION].as_slice())?;
                }
                Some([v]) => return Err(StoreError::Schema(*v)),
                Some(_) => return Err(StoreError::Corrupt("schema version")),
            }
            if meta.get(META_GATEWAY_KEY)?.is_none() {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| StoreError::Random)?;
                let v = Enc::new(GATEWAY_KEY_VERSION).fixed(&key).finish();
                meta.insert(META_GATEWAY_KEY, v.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The redb database, for the typed accessors in `identity` and `audit`.
    pub fn db(&self) -> &redb::Database {
        &self.db
    }

    /// The data directory this store lives in (the control socket sits beside it).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The gateway key (created by `open`).
    /// A key for one purpose, derived from the gateway key: `HMAC-SHA256(gateway_key, label)`.
    pub fn derive_key(&self, label: &[u8]) -> Result<[u8; 32], StoreError> {
        let key = self.gateway_key()?;
        let tag = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key), label);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    pub(crate) fn gateway_key(&self) -> Result<[u8; 32], StoreError> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let v = meta
            .get(META_GATEWAY_KEY)?
            .ok_or(StoreError::Corrupt("gateway key (missing)"))?;
        let mut d = Dec::new(v.value(), GATEWAY_KEY_VERSION, "gateway key")?;
        let key = d.array::<32>()?;
        d.finish()?;
        Ok(key)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// A fresh, unique, empty directory under the system temp dir, for tests.
#[cfg(test)]
pub(crate) fn test_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-test-{name}-{}-{n}-{nanos}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn open_creates_private_dir_and_file_and_a_stable_key() {
        let dir = test_dir("store-open").join("nested");
        let store = Store::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(STORE_FILE)), 0o600);
        let key = store.gateway_key().unwrap();
        assert_ne!(key, [0u8; 32]);
        drop(store);
        let again = Store::open(&dir).unwrap();
        assert_eq!(again.gateway_key().unwrap(), key);
        assert_eq!(again.data_dir(), dir.as_path());
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn second_open_says_already_open_with_advice() {
        let dir = test_dir("store-twice");
        let _store = Store::open(&dir).unwrap();
        let err = Store::open(&dir).unwrap_err();
        assert!(matches!(err, StoreError::AlreadyOpen(_)), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("in use by another portcullis process"),
            "{msg}"
        );
        assert!(msg.contains(STORE_FILE), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn set_schema(dir: &Path, version: u8) {
        let db = Database::create(dir.join(STORE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_SCHEMA, [version].as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    fn schema_of(store: &Store) -> Vec<u8> {
        let txn = redb::ReadableDatabase::begin_read(store.db()).unwrap();
        let meta = txn.open_table(META).unwrap();
        let v = meta.get(META_SCHEMA).unwrap().unwrap();
        v.value().to_vec()
    }

    #[test]
    fn schema_1_is_upgraded_and_a_newer_schema_is_refused() {
        let dir = test_dir("store-schema");
        drop(Store::open(&dir).unwrap());
        set_schema(&dir, 1);
        let store = Store::open(&dir).unwrap();
        assert_eq!(schema_of(&store), vec![SCHEMA_VERSION]);
        drop(store);
        set_schema(&dir, SCHEMA_VERSION + 1);
        let err = Store::open(&dir).err().unwrap();
        assert!(
            matches!(err, StoreError::Schema(v) if v == SCHEMA_VERSION + 1),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer release"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_a_file_that_is_not_a_store() {
        let dir = test_dir("store-garbage");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STORE_FILE), vec![0x5a; 8192]).unwrap();
        let err = Store::open(&dir).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
