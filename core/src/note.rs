//! Signed notes and checkpoints as transparency logs publish them: the
//! C2SP `signed-note` format with Ed25519 keys (what Go's
//! `golang.org/x/mod/sumdb/note` reads and writes) and the C2SP
//! `tlog-checkpoint` body (origin, tree size, root hash).
//!
//! A note is text ending in a newline, a blank line, then one signature
//! line per signer: `— <key name> <base64(key id ‖ signature)>`. The key id
//! is the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`;
//! keys are written `<name>+<key id hex>+<base64(0x01 ‖ public key)>` and
//! `PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 ‖ seed)>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The algorithm byte of Ed25519 keys.
const ED25519: u8 = 0x01;
/// What starts every signature line: an em dash and a space.
const SIG_PREFIX: &str = "\u{2014} ";
/// The most signature lines a note may carry.
const MAX_SIGNATURES: usize = 100;

/// Why a key, a note or a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// A key that is not in the documented form.
    #[error("not a {what} key: {why}")]
    BadKey {
        /// `signer` or `verifier`.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A key name that is empty or holds a space, `+` or a control character.
    #[error("a key name must be non-empty, without spaces, `+` or control characters")]
    BadName,
    /// Text that cannot be signed: empty, not ending in a newline, or with
    /// control characters other than newlines.
    #[error(
        "a note's text must be non-empty, end in a newline and hold no other control characters"
    )]
    BadText,
    /// A note that is not text, a blank line and signature lines.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// No signature of the expected key verifies.
    #[error("the note has no valid signature by `{name}`")]
    NotSigned {
        /// The key's name.
        name: String,
    },
    /// A checkpoint body that is not origin, size and root lines.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(&'static str),
}

/// `SHA-256(name ‖ "\n" ‖ 0x01 ‖ key)[..4]`.
fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519]);
    hasher.update(public);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// Checks a key name: non-empty, no spaces, `+` or control characters.
pub fn check_name(name: &str) -> Result<(), NoteError> {
    let bad = name.is_empty()
        || name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control());
    if bad { Err(NoteError::BadName) } else { Ok(()) }
}

/// Splits `<name>+<key id hex>+<base64>` and checks the id against the key.
fn parse_key(what: &'static str, text: &str) -> Result<(String, [u8; 4], [u8; 32]), NoteError> {
    let bad = |why| NoteError::BadKey { what, why };
    // The key's base64 may itself hold `+`.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("expected `<name>+<key id>+<key>`"));
    };
    check_name(name)?;
    let id: [u8; 4] = hex::decode(id)
        .ok()
        .filter(|_| id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| bad("the key id is not 8 hex digits"))?;
    let bytes = STANDARD
        .decode(material)
        .map_err(|_| bad("the key is not base64"))?;
    let (&alg, key) = bytes.split_first().ok_or_else(|| bad("the key is empty"))?;
    if alg != ED25519 {
        return Err(bad("the key is not an Ed25519 key"));
    }
    let key: [u8; 32] = key
        .try_into()
        .map_err(|_| bad("an Ed25519 key is 32 bytes"))?;
    Ok((name.to_owned(), id, key))
}

/// A key that signs notes.
pub struct NoteSigner {
    name: String,
    id: [u8; 4],
    key: SigningKey,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("id", &hex::encode(self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// The signer `name` of the Ed25519 private key `seed`.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<NoteSigner, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(NoteSigner {
            id: key_id(name, key.verifying_key().as_bytes()),
            name: name.to_owned(),
            key,
        })
    }

    /// Reads `PRIVATE+KEY+<name>+<key id>+<key>`; the id must match.
    pub fn from_text(text: &str) -> Result<NoteSigner, NoteError> {
        let rest = text
            .trim_end()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::BadKey {
                what: "signer",
                why: "expected `PRIVATE+KEY+…`",
            })?;
        let (name, id, seed) = parse_key("signer", rest)?;
        let signer = NoteSigner::from_seed(&name, seed)?;
        if signer.id != id {
            return Err(NoteError::BadKey {
                what: "signer",
                why: "the key id does not match the key",
            });
        }
        Ok(signer)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The private key's text form (`PRIVATE+KEY+…`): keep it secret.
    pub fn to_text(&self) -> String {
        let mut material = vec![ED25519];
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.id),
            STANDARD.encode(material)
        )
    }

    /// The verifier key (`<name>+<key id>+<key>`) to hand out.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// `text` signed: the text, a blank line and this key's signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        let printable = text.chars().all(|c| c == '\n' || !c.is_control());
        if text.is_empty() || !text.ends_with('\n') || !printable {
            return Err(NoteError::BadText);
        }
        let signature = self.key.sign(text.as_bytes());
        let mut blob = self.id.to_vec();
        blob.extend_from_slice(&signature.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

/// A key that checks notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    /// Reads `<name>+<key id>+<key>`; the id must match.
    pub fn from_text(text: &str) -> Result<NoteVerifier, NoteError> {
        let (name, id, public) = parse_key("verifier", text.trim_end())?;
        if key_id(&name, &public) != id {
            return Err(NoteError::BadKey {
                what: "verifier",
                why: "the key id does not match the key",
            });
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::BadKey {
            what: "verifier",
            why: "not a valid Ed25519 public key",
        })?;
        Ok(NoteVerifier { name, id, key })
    }

    /// The text form (`<name>+<key id>+<key>`).
    pub fn to_text(&self) -> String {
        let mut material = vec![ED25519];
        material.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.id),
            STANDARD.encode(material)
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The text of `note` if a signature line of this key verifies over
    /// it (lines of other keys are ignored).
    pub fn open<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        // As Go's `note.Open`: no control character but newlines anywhere.
        if note.chars().any(|c| c != '\n' && c.is_control()) {
            return Err(NoteError::Malformed(
                "a control character other than a newline",
            ));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        if !signatures.ends_with('\n') {
            return Err(NoteError::Malformed(
                "the signatures do not end in a newline",
            ));
        }
        let lines: Vec<&str> = signatures.trim_end_matches('\n').split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::Malformed("more than 100 signatures"));
        }
        let mut verified = false;
        for line in lines {
            let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
                "a signature line must start with `— `",
            ))?;
            let (name, blob) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "a signature line is `— <name> <signature>`",
            ))?;
            check_name(name)
                .map_err(|_| NoteError::Malformed("a signature's key name is not one"))?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if blob.len() < 5 {
                return Err(NoteError::Malformed(
                    "a signature is shorter than a key id and one byte",
                ));
            }
            if name != self.name || blob[..4] != self.id {
                continue;
            }
            // This key's signature must verify (Go refuses the whole note
            // otherwise).
            let valid = Signature::from_slice(&blob[4..])
                .is_ok_and(|signature| self.key.verify(text.as_bytes(), &signature).is_ok());
            if !valid {
                return Err(NoteError::NotSigned {
                    name: self.name.clone(),
                });
            }
            verified = true;
        }
        if verified {
            Ok(text)
        } else {
            Err(NoteError::NotSigned {
                name: self.name.clone(),
            })
        }
    }
}

/// A tlog checkpoint's body: the log's origin, the tree size and its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log (for a governor: its SKU and ledger).
    pub origin: String,
    /// Leaves in the tree.
    pub size: u64,
    /// The tree's root ([`crate::merkle`]).
    pub root: Hash,
}

impl Checkpoint {
    /// The body: `<origin>\n<size>\n<base64 root>\n`.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Reads a body (extension lines after the root are allowed and ignored).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::BadCheckpoint("no origin line"))?;
        let size = lines
            .next()
            .filter(|s| {
                !s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && (s == &"0" || !s.starts_with('0'))
            })
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(NoteError::BadCheckpoint(
                "the size line is not a decimal number",
            ))?;
        let root = lines
            .next()
            .and_then(|r| STANDARD.decode(r).ok())
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or(NoteError::BadCheckpoint(
                "the root line is not a base64 SHA-256 hash",
            ))?;
        if !text.ends_with('\n') {
            return Err(NoteError::BadCheckpoint(
                "the body does not end in a newline",
            ));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The checkpoint signed by `signer`, as a note.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.to_text())
    }

    /// The checkpoint of `note` if `verifier` signed it.
    pub fn open(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(verifier.open(note)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key and note of Go's `golang.org/x/mod/sumdb/note`.
    const SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_reference_example_signs_and_opens_byte_for_byte() {
        let signer = NoteSigner::from_text(SKEY).unwrap();
        assert_eq!(signer.to_text(), SKEY);
        assert_eq!(signer.verifier().to_text(), VKEY);
        assert_eq!(signer.sign(TEXT).unwrap(), NOTE);
        let verifier = NoteVerifier::from_text(VKEY).unwrap();
        assert_eq!(verifier.open(NOTE), Ok(TEXT));
        assert!(
            !format!("{signer:?}").contains("AYEK"),
            "Debug shows no key"
        );
    }

    #[test]
    fn tampered_notes_and_keys_are_refused() {
        let verifier = NoteVerifier::from_text(VKEY).unwrap();
        let changed = NOTE.replace("cryptography", "cryptograpHy");
        assert!(matches!(
            verifier.open(&changed),
            Err(NoteError::NotSigned { .. })
        ));
        let forged = NOTE.replace("x08go", "x08gp");
        assert!(verifier.open(&forged).is_err());
        let other = NoteSigner::from_seed("PeterNeumann", [7; 32]).unwrap();
        let by_other = other.sign(TEXT).unwrap();
        assert!(matches!(
            verifier.open(&by_other),
            Err(NoteError::NotSigned { .. })
        ));
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+AhRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
            "PeterNeumann+c74f20a3",
            "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "PeterNeumann+c74f20a3+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        ] {
            assert!(NoteVerifier::from_text(bad).is_err(), "{bad}");
        }
        for bad in ["", "no newline", "bell\u{7}\n"] {
            assert_eq!(
                NoteSigner::from_text(SKEY).unwrap().sign(bad),
                Err(NoteError::BadText)
            );
        }
        assert!(verifier.open(TEXT).is_err(), "no signatures");
        // A bad signature of the expected key spoils the note, even beside a good one.
        let spoiled = NOTE.replace("SffcvIAQ", "SffcvIAR");
        let doubled = format!("{NOTE}{}", spoiled.split("\n\n").nth(1).unwrap());
        assert!(matches!(
            verifier.open(&doubled),
            Err(NoteError::NotSigned { .. })
        ));
        // Control characters are refused anywhere.
        assert!(
            verifier
                .open(&NOTE.replace("answer", "ans\u{1b}wer"))
                .is_err()
        );
        let short = format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n");
        assert!(matches!(
            verifier.open(&short),
            Err(NoteError::Malformed(_))
        ));
    }

    #[test]
    fn checkpoints_round_trip_and_bind_size_and_root() {
        let signer = NoteSigner::from_seed("governor.example/cost_guard", [9; 32]).unwrap();
        let verifier = signer.verifier();
        let checkpoint = Checkpoint {
            origin: "governor.example/cost_guard".to_owned(),
            size: 8,
            root: crate::merkle::leaf_hash(b"x"),
        };
        let note = checkpoint.sign(&signer).unwrap();
        assert_eq!(Checkpoint::open(&note, &verifier), Ok(checkpoint.clone()));
        // A checkpoint claiming another size (or root) is not the signed one.
        let resized = note.replacen("\n8\n", "\n9\n", 1);
        assert!(Checkpoint::open(&resized, &verifier).is_err());
        for bad in [
            "\n8\nAAAA\n",
            "o\n08\nAAAA\n",
            "o\n8\n",
            "o\nx\n",
            "o\n+8\nAAAA\n",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
    }
}
