//! Encryption at rest with age: the format the `age` and `rage` tools read.
//!
//! The backup host holds only public recipients; the identity that decrypts
//! lives where restores run. Encryption sits between the compressor and the
//! upload (compress, then encrypt: ciphertext does not compress), so the
//! stored sha256 covers the stored ciphertext and `verify` can check
//! integrity without the key.
//!
//! Nothing here ever puts key material into an error: messages name the
//! variable, the file and the line, not its content.

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{one_line, ConfigError};

/// What an encrypted object's name ends with.
pub const SUFFIX: &str = ".age";

type BoxedRecipient = Box<dyn age::Recipient + Send + Sync>;
type BoxedIdentity = Box<dyn age::Identity + Send + Sync>;

/// Public keys every new object is encrypted to; any one of their
/// identities decrypts alone.
pub struct Recipients {
    keys: Vec<BoxedRecipient>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients({})", self.keys.len())
    }
}

impl Recipients {
    /// Parses `text`: recipients separated by commas or newlines, `#`
    /// comments and blank entries ignored. `var` is named in errors.
    pub fn parse(var: &'static str, text: &str) -> Result<Recipients, ConfigError> {
        let mut keys = Vec::new();
        let entries = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            keys.push(
                parse_recipient(entry)
                    .map_err(|why| ConfigError::new(var, format!("recipient {} {why}", i + 1)))?,
            );
        }
        if keys.is_empty() {
            return Err(ConfigError::new(var, "holds no recipient"));
        }
        Ok(Recipients { keys })
    }

    /// Reads a recipients file (one a line, `#` comments), as `age -R` does.
    pub fn from_file(var: &'static str, path: &Path) -> Result<Recipients, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(var, one_line(&format!("cannot read {path:?}: {e}"))))?;
        Self::parse(var, &text)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Wraps `out`: what is written is encrypted to every recipient.
    /// [`age::stream::StreamWriter::finish`] must be called, or the file is
    /// truncated (and then fails to decrypt, never decrypts short).
    pub fn encrypt<W: Write>(&self, out: W) -> io::Result<age::stream::StreamWriter<W>> {
        let enc = age::Encryptor::with_recipients(
            self.keys.iter().map(|k| k.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| io::Error::other(format!("age: {e}")))?;
        enc.wrap_output(out)
    }

    /// Encrypts a small object whole (manifests).
    pub fn encrypt_bytes(&self, plain: &[u8]) -> io::Result<Vec<u8>> {
        let mut w = self.encrypt(Vec::with_capacity(plain.len() + 256))?;
        w.write_all(plain)?;
        w.finish()
    }
}

/// One recipient; the error says why without repeating the string.
fn parse_recipient(s: &str) -> Result<BoxedRecipient, String> {
    if s.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || s.contains("PRIVATE KEY") {
        return Err(
            "is a private key: give the public recipient (age-keygen -y prints it); the backup host never needs the identity"
                .into(),
        );
    }
    if s.starts_with("age1") {
        return age::x25519::Recipient::from_str(s)
            .map(|r| Box::new(r) as BoxedRecipient)
            .map_err(|e| format!("is not a valid age recipient: {e}"));
    }
    if s.starts_with("ssh-") {
        return age::ssh::Recipient::from_str(s)
            .map(|r| Box::new(r) as BoxedRecipient)
            .map_err(|e| match e {
                age::ssh::ParseRecipientKeyError::Unsupported(t) => {
                    format!("is an ssh key of type {t}, which age does not support: use ssh-ed25519 or ssh-rsa")
                }
                age::ssh::ParseRecipientKeyError::RsaModulusTooSmall => {
                    "is an ssh-rsa key under 2048 bits".into()
                }
                age::ssh::ParseRecipientKeyError::RsaModulusTooLarge => {
                    "is an ssh-rsa key larger than age supports".into()
                }
                _ => "is not a valid ssh-ed25519 or ssh-rsa public key".into(),
            });
    }
    Err("is not an age recipient (age1...) or an ssh-ed25519/ssh-rsa public key".into())
}

/// Private keys that decrypt backups (BACKUP_ENCRYPTION_IDENTITY_FILE).
pub struct Identities {
    keys: Vec<BoxedIdentity>,
    path: PathBuf,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identities({} from {:?})", self.keys.len(), self.path)
    }
}

/// Why an encrypted stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no identity in BACKUP_ENCRYPTION_IDENTITY_FILE ({0}) decrypts it: it was encrypted to other recipients")]
    WrongIdentity(String),
    #[error("it is not an age file or its header is damaged ({0})")]
    NotAge(String),
    #[error("reading its age header: {0}")]
    Io(io::Error),
}

impl Identities {
    /// Reads an identity file: `age-keygen` output (several keys allowed,
    /// `#` comments), or an unencrypted OpenSSH private key.
    pub fn from_file(var: &'static str, path: &Path) -> Result<Identities, ConfigError> {
        let err = |m: String| ConfigError::new(var, one_line(&m));
        let data = std::fs::read(path).map_err(|e| err(format!("cannot read {path:?}: {e}")))?;
        let keys = if data.starts_with(b"-----BEGIN") {
            let id = age::ssh::Identity::from_buffer(&data[..], None).map_err(|e| {
                err(format!(
                    "{path:?}: not an ssh private key age can use: {}",
                    e.kind()
                ))
            })?;
            match id {
                age::ssh::Identity::Unencrypted(_) => vec![Box::new(id) as BoxedIdentity],
                age::ssh::Identity::Encrypted(_) => {
                    return Err(err(format!(
                        "{path:?} is a passphrase-protected ssh key: pgbackup runs unattended; use an age identity or an unprotected key"
                    )))
                }
                age::ssh::Identity::Unsupported(_) => {
                    return Err(err(format!("{path:?} is an ssh key of a type age does not support")))
                }
            }
        } else {
            // Our own read, so the error says which variable; the parser's
            // messages give line numbers, never lines.
            let file = age::IdentityFile::from_buffer(io::BufReader::new(&data[..]))
                .map_err(|e| err(format!("{path:?}: {e}")))?;
            file.into_identities()
                .map_err(|e| err(format!("{path:?}: {e}")))?
        };
        if keys.is_empty() {
            return Err(err(format!("{path:?} holds no identity")));
        }
        Ok(Identities {
            keys,
            path: path.to_path_buf(),
        })
    }

    /// Opens an age stream: reads its header and unwraps the file key.
    pub fn decrypt<R: BufRead>(&self, input: R) -> Result<age::stream::StreamReader<R>, OpenError> {
        let d = age::Decryptor::new_buffered(input).map_err(|e| self.open_error(e))?;
        d.decrypt(self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity))
            .map_err(|e| self.open_error(e))
    }

    /// Decrypts a small object whole (manifests).
    pub fn decrypt_bytes(&self, data: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut r = self.decrypt(data)?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(OpenError::Io)?;
        Ok(out)
    }

    fn open_error(&self, e: age::DecryptError) -> OpenError {
        match e {
            age::DecryptError::NoMatchingKeys => {
                OpenError::WrongIdentity(self.path.display().to_string())
            }
            age::DecryptError::Io(e) => OpenError::Io(e),
            other => OpenError::NotAge(other.to_string()),
        }
    }
}

/// The one line that says an encrypted backup needs the identity.
pub fn identity_needed(key: &str, what: &str) -> String {
    format!(
        "{key} is encrypted: {what} needs BACKUP_ENCRYPTION_IDENTITY_FILE, the age identity of one of its recipients"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_string(),
        )
    }

    fn identities(secret: &str) -> Identities {
        let dir = std::env::temp_dir().join(format!(
            "pgbackup-crypto-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&dir, format!("# test key\n{secret}\n")).unwrap();
        let ids = Identities::from_file("V", &dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        ids
    }

    #[test]
    fn every_recipient_decrypts_alone_and_others_do_not() {
        let (a_pub, a_sec) = keypair();
        let (b_pub, b_sec) = keypair();
        let (_, c_sec) = keypair();
        let r =
            Recipients::parse("V", &format!("{a_pub},\n # comment\n{b_pub}  # offline\n")).unwrap();
        assert_eq!(r.len(), 2);
        let plain: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let sealed = r.encrypt_bytes(&plain).unwrap();
        assert!(sealed.starts_with(b"age-encryption.org/v1"));
        for s in [&a_sec, &b_sec] {
            assert!(identities(s).decrypt_bytes(&sealed).unwrap() == plain);
        }
        let e = identities(&c_sec).decrypt_bytes(&sealed).unwrap_err();
        assert!(matches!(e, OpenError::WrongIdentity(_)), "{e}");
        assert!(!e.to_string().contains(&c_sec));
    }

    #[test]
    fn a_damaged_stream_fails_instead_of_decrypting_short() {
        let (p, s) = keypair();
        let sealed = Recipients::parse("V", &p)
            .unwrap()
            .encrypt_bytes(&[7u8; 300_000])
            .unwrap();
        let ids = identities(&s);
        let cut = &sealed[..sealed.len() - 1000];
        assert!(ids.decrypt_bytes(cut).is_err(), "truncated");
        let mut flipped = sealed.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(ids.decrypt_bytes(&flipped).is_err(), "flipped");
        assert!(matches!(
            ids.decrypt_bytes(b"not age at all").unwrap_err(),
            OpenError::NotAge(_)
        ));
    }

    #[test]
    fn bad_recipients_name_the_variable_and_never_the_key() {
        let (_, secret) = keypair();
        for (text, want) in [
            ("", "holds no recipient"),
            (" , # only a comment", "holds no recipient"),
            ("age1notakey", "recipient 1 is not a valid age recipient"),
            ("hello", "recipient 1 is not an age recipient"),
            ("ssh-dss AAAAB3NzaC1kc3M=", "recipient 1"),
            (secret.as_str(), "recipient 1 is a private key"),
        ] {
            let e = Recipients::parse("BACKUP_ENCRYPTION_RECIPIENTS", text).unwrap_err();
            let m = e.to_string();
            assert!(m.contains("BACKUP_ENCRYPTION_RECIPIENTS"), "{m}");
            assert!(m.contains(want), "{text:?}: {m}");
            assert!(!m.contains(&secret[15..]), "{m}");
        }
        let (good, _) = keypair();
        let e = Recipients::parse("V", &format!("{good}\nage1bad")).unwrap_err();
        assert!(e.to_string().contains("recipient 2"), "{e}");
    }

    #[test]
    fn identity_file_errors_never_print_the_file() {
        let (_, secret) = keypair();
        let path = std::env::temp_dir().join(format!("pgbackup-badid-{}", std::process::id()));
        std::fs::write(&path, format!("{}\n", &secret[..secret.len() - 3])).unwrap();
        let e = Identities::from_file("BACKUP_ENCRYPTION_IDENTITY_FILE", &path).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        let m = e.to_string();
        assert!(
            m.contains("BACKUP_ENCRYPTION_IDENTITY_FILE") && m.contains("line 1"),
            "{m}"
        );
        assert!(!m.contains(&secret[15..40]), "{m}");
        let e = Identities::from_file("V", Path::new("/nonexistent/key.txt")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/key.txt"));
    }
}
