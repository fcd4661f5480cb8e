//! Encryption at rest: XChaCha20-Poly1305, a random 24-byte nonce per value, and the
//! table/column/row as associated data (a ciphertext moved to another row does not
//! open). The key: `KEYWAY_STORE_KEY`, else the OS keychain where one answers, else a
//! 0600 key file in the home. An existing store is opened by whichever of those keys
//! decrypts its key check; none is ever replaced.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, KeyInit, Payload},
};
use rand::Rng;
use zeroize::Zeroizing;

use super::StoreError;

/// Format version of a sealed value.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
pub(crate) const KEY_FILE: &str = "store.key";
const KEYCHAIN_SERVICE: &str = "keyway";
/// A keychain that does not answer in this time is treated as absent.
const KEYCHAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the store key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The `KEYWAY_STORE_KEY` environment variable.
    Env,
    /// The OS keychain.
    Keychain,
    /// The key file at this path (`store.key` in the home).
    File(PathBuf),
    /// Handed over by the program that opened the store.
    Given,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Env => f.write_str("KEYWAY_STORE_KEY"),
            Self::Keychain => f.write_str("the OS keychain"),
            Self::File(p) => write!(f, "the key file {}", p.display()),
            Self::Given => f.write_str("the key given to the store"),
        }
    }
}

/// A 256-bit key, wiped on drop.
pub(crate) struct StoreKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

impl StoreKey {
    fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(k.as_mut());
        Self(k)
    }

    /// Base64 (standard) or hex.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        let bytes = Zeroizing::new(
            if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
                (0..32)
                    .map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
                    .collect::<Option<Vec<u8>>>()?
            } else {
                STANDARD.decode(t).ok()?
            },
        );
        let arr: [u8; 32] = bytes.as_slice().try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    fn encode(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }

    /// A key of its own for `purpose`, derived from this one (HMAC-SHA256 of the
    /// purpose under this key: this key is uniformly random, so the result is too),
    /// so a value sealed for one purpose never opens as another's.
    pub(crate) fn derive(&self, purpose: &str) -> StoreKey {
        let hmac = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, self.0.as_ref());
        let tag = aws_lc_rs::hmac::sign(
            &hmac,
            format!("keyway derived key v1\0{purpose}").as_bytes(),
        );
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&tag.as_ref()[..32]);
        Self(k)
    }
}

/// A key for sealing values outside the store (XChaCha20-Poly1305), derived from the
/// store key for one purpose ([`SqliteStore::sealing_key`](super::SqliteStore::sealing_key)):
/// every process that opens the same store has the same one, so what one seals,
/// another opens (the gateway's session ids, across replicas). `Debug` shows nothing.
pub struct SealingKey(Cipher);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey([redacted])")
    }
}

impl SealingKey {
    pub(crate) fn derived(key: &StoreKey, purpose: &str) -> Self {
        Self(Cipher::new(&key.derive(purpose)))
    }

    /// A random key: for a process that shares its sealed values with no other.
    pub fn random() -> Self {
        Self(Cipher::new(&StoreKey::random()))
    }

    /// `plain`, sealed under `aad` (bound to it: it opens only under the same).
    pub fn seal(&self, aad: &str, plain: &[u8]) -> Vec<u8> {
        self.0.seal(aad, plain)
    }

    /// What [`SealingKey::seal`] sealed under `aad`; `None` for anything else
    /// (another key, another `aad`, a changed byte).
    pub fn open(&self, aad: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.0.open(aad, sealed).ok()
    }
}

/// Seals and opens values with the store key.
pub(crate) struct Cipher(XChaCha20Poly1305);

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher([redacted])")
    }
}

impl Cipher {
    pub(crate) fn new(key: &StoreKey) -> Self {
        Self(XChaCha20Poly1305::new(key.0.as_ref().into()))
    }

    pub(crate) fn seal(&self, aad: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption with a fresh nonce and a valid key cannot fail.
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: aad.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub(crate) fn open(&self, aad: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEALED_V1 {
            return Err(StoreError::Decode(format!("{aad}: not a sealed value")));
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| StoreError::Decode(format!("{aad}: authentication failed")))
    }
}

/// Every key that may open the store, in order of preference.
pub(crate) fn candidate_keys(
    home: &Path,
    use_keychain: bool,
) -> Result<Vec<(StoreKey, KeySource)>, StoreError> {
    let mut out = Vec::new();
    if let Ok(text) = std::env::var("KEYWAY_STORE_KEY") {
        out.push((
            StoreKey::parse(&text).ok_or(StoreError::BadEnvKey)?,
            KeySource::Env,
        ));
    }
    if use_keychain && let Some(k) = keychain_get(home) {
        out.push((k, KeySource::Keychain));
    }
    let path = home.join(KEY_FILE);
    if let Ok(text) = fs::read_to_string(&path)
        && let Some(k) = StoreKey::parse(&text)
    {
        match key_file_exposure(&path) {
            None => out.push((k, KeySource::File(path))),
            // A key another user could have read, or replaced, is not used. With
            // another key at hand, the store may not need it.
            Some(why) if !out.is_empty() => {
                tracing::warn!(file = %path.display(), "the key file is not used: {why}");
            }
            Some(why) => return Err(StoreError::KeyFileExposed { path, why }),
        }
    }
    Ok(out)
}

/// Why a file holding a secret may not be trusted: another user can read or write
/// it, or it is another user's. `None` when only its owner, this user, can.
fn key_file_exposure(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return Some(format!("its permissions cannot be read ({e})")),
        };
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Some(format!(
                "its mode is {mode:03o}, so other users can read or change it"
            ));
        }
        let me = rustix::process::getuid().as_raw();
        if meta.uid() != me {
            return Some(format!(
                "it belongs to user {}, not to this user ({me})",
                meta.uid()
            ));
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Create `path` holding a new random secret (32 bytes, base64url) readable by its
/// owner only, or read the one already there (which must be private). For tokens
/// keyway makes itself, such as the gateway's.
pub fn private_token_file(path: &Path) -> Result<crate::Secret, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        let mut raw = Zeroizing::new([0u8; 32]);
        rand::rng().fill_bytes(raw.as_mut());
        let text =
            Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref()));
        match write_private(path, text.as_bytes()) {
            Ok(()) => return Ok(crate::Secret::new(text.to_string())),
            // Another process made it meanwhile: read theirs.
            Err(StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    if let Some(why) = key_file_exposure(path) {
        return Err(StoreError::SecretFileExposed {
            path: path.to_owned(),
            why,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io)?);
    Ok(crate::Secret::new(text.trim().to_owned()))
}

/// A key for a new store: the env key, else a new key in the keychain, else a new
/// 0600 key file.
pub(crate) fn create_key(
    home: &Path,
    use_keychain: bool,
) -> Result<(StoreKey, KeySource), StoreError> {
    if let Ok(text) = std::env::var("KEYWAY_STORE_KEY") {
        return Ok((
            StoreKey::parse(&text).ok_or(StoreError::BadEnvKey)?,
            KeySource::Env,
        ));
    }
    let key = StoreKey::random();
    if use_keychain && keychain_set(home, &key) {
        return Ok((key, KeySource::Keychain));
    }
    let path = home.join(KEY_FILE);
    write_private(&path, key.encode().as_bytes())?;
    Ok((key, KeySource::File(path)))
}

/// Where keys were looked for, for error messages.
pub(crate) fn looked_in(home: &Path, use_keychain: bool) -> String {
    let mut places = vec!["KEYWAY_STORE_KEY".to_owned()];
    if use_keychain {
        places.push("the OS keychain".into());
    }
    places.push(home.join(KEY_FILE).display().to_string());
    places.join(", ")
}

/// Create `path` with mode 0600 holding `bytes`; never replaces an existing file
/// (`AlreadyExists` then). The file appears whole or not at all: it is written under
/// a temporary name and linked into place, so another process never reads half of it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tag = [0u8; 8];
    rand::rng().fill_bytes(&mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(format!(".{tag}.tmp"));
    let tmp = path.with_file_name(tmp_name);
    let create = |at: &Path| -> std::io::Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(at)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    let linked = create(&tmp).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(io(e)),
        // A file system without hard links: written in place.
        Err(_) => create(path).map_err(io),
    }
}

fn keychain_account(home: &Path) -> String {
    let canonical = home.canonicalize().unwrap_or_else(|_| home.to_owned());
    format!("store-key:{}", canonical.display())
}

/// Run a keychain call on its own thread with a deadline: a Secret Service that is
/// present but never answers must not hang keyway.
fn with_keychain<T: Send + 'static>(f: impl FnOnce() -> Option<T> + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(KEYCHAIN_TIMEOUT).ok().flatten()
}

fn keychain_get(home: &Path) -> Option<StoreKey> {
    let account = keychain_account(home);
    with_keychain(move || {
        let entry = keyring::Entry::new(KEYCHAIN_SERVICE, &account).ok()?;
        let text = Zeroizing::new(entry.get_password().ok()?);
        StoreKey::parse(&text)
    })
}

fn keychain_set(home: &Path, key: &StoreKey) -> bool {
    let account = keychain_account(home);
    let encoded = key.encode();
    with_keychain(move || {
        let entry = keyring::Entry::new(KEYCHAIN_SERVICE, &account).ok()?;
        entry.set_password(&encoded).ok()?;
        // Read it back: some keychains accept writes they cannot serve.
        let back = Zeroizing::new(entry.get_password().ok()?);
        (back.as_str() == encoded.as_str()).then_some(())
    })
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_agree_per_purpose_and_differ_from_the_store_key() {
        let k = StoreKey::random();
        let again = StoreKey(Zeroizing::new(*k.0));
        let a = SealingKey::derived(&k, "gateway session ids");
        let sealed = a.seal("x", b"hello");
        // Another process with the same store key derives the same key.
        let b = SealingKey::derived(&again, "gateway session ids");
        assert_eq!(b.open("x", &sealed).unwrap().as_slice(), b"hello");
        assert!(b.open("y", &sealed).is_none());
        // Another purpose, or the store key itself, opens nothing of it.
        assert!(
            SealingKey::derived(&k, "other")
                .open("x", &sealed)
                .is_none()
        );
        assert!(Cipher::new(&k).open("x", &sealed).is_err());
        assert_ne!(*k.derive("a").0, *k.derive("b").0);
        assert!(!format!("{a:?}").contains(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let k = StoreKey::random();
        let c = Cipher::new(&k);
        let s = c.seal("credentials.secret:a", b"tok");
        assert_eq!(
            c.open("credentials.secret:a", &s).unwrap().as_slice(),
            b"tok"
        );
        assert!(
            c.open("credentials.secret:b", &s).is_err(),
            "moved to another row"
        );
        assert!(
            Cipher::new(&StoreKey::random())
                .open("credentials.secret:a", &s)
                .is_err()
        );
        let mut flipped = s.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(c.open("credentials.secret:a", &flipped).is_err());
        assert!(c.open("x", b"short").is_err());
        assert_ne!(c.seal("x", b"same"), c.seal("x", b"same"), "fresh nonces");
    }

    #[test]
    fn keys_parse_from_base64_or_hex() {
        let k = StoreKey::random();
        let b64 = k.encode();
        assert!(StoreKey::parse(&b64).is_some());
        let hex: String = k.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(StoreKey::parse(&hex).unwrap().0.as_ref(), k.0.as_ref());
        assert!(StoreKey::parse("too short").is_none());
        assert_eq!(format!("{k:?}"), "StoreKey([redacted])");
    }
}
