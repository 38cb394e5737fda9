//! The tokenizers isoflop trains with, behind one interface: the bundled C4 SentencePiece model
//! (V = 32101) and the byte-level tokenizer (V = 260). Shards record which one made them (the
//! tokenizer identity, a sha256, in the header); [`tokenizer_for_identity`] gives the tokenizer back
//! from that record.

use super::bytes::{ByteTokenizer, BYTE_VOCAB};
use super::error::DataError;
use super::loader::bundled_tokenizer_sha256;
use super::tokenizer::{hex, Tokenizer};
use serde::{Deserialize, Serialize};

/// What [`crate::data::tokenize::tokenize_files`] needs from a tokenizer.
pub trait DocumentEncoder: Sync {
    /// Vocabulary size (written into shard headers).
    fn vocab_size(&self) -> usize;
    /// Id of the unknown token.
    fn unk_id(&self) -> u32;
    /// The tokenizer identity recorded in shard headers.
    fn sha256(&self) -> [u8; 32];
    /// Appends one document, `BOS ids... EOS`, to `out`.
    fn encode_document_u16(&self, text: &str, bos: u16, eos: u16, out: &mut Vec<u16>);
}

impl DocumentEncoder for Tokenizer {
    fn vocab_size(&self) -> usize {
        Tokenizer::vocab_size(self)
    }
    fn unk_id(&self) -> u32 {
        Tokenizer::unk_id(self)
    }
    fn sha256(&self) -> [u8; 32] {
        Tokenizer::sha256(self)
    }
    fn encode_document_u16(&self, text: &str, bos: u16, eos: u16, out: &mut Vec<u16>) {
        Tokenizer::encode_document_u16(self, text, bos, eos, out)
    }
}

impl DocumentEncoder for ByteTokenizer {
    fn vocab_size(&self) -> usize {
        ByteTokenizer::vocab_size(self)
    }
    fn unk_id(&self) -> u32 {
        ByteTokenizer::unk_id(self)
    }
    fn sha256(&self) -> [u8; 32] {
        ByteTokenizer::sha256(self)
    }
    fn encode_document_u16(&self, text: &str, bos: u16, eos: u16, out: &mut Vec<u16>) {
        ByteTokenizer::encode_document_u16(self, text, bos, eos, out)
    }
}

/// Which tokenizer a run's data is made with (`tokenizer = "..."` in a data spec).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// The bundled C4 SentencePiece model, V = 32101.
    #[default]
    SentencePiece,
    /// Byte-level: byte b is id b + 4, V = 260.
    Bytes,
}

impl TokenizerKind {
    /// Its name in specs and flags: `sentencepiece` or `bytes`.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::SentencePiece => "sentencepiece",
            TokenizerKind::Bytes => "bytes",
        }
    }

    /// Parses a name given on the command line.
    pub fn parse(s: &str) -> Option<TokenizerKind> {
        match s {
            "sentencepiece" | "spm" | "c4" => Some(TokenizerKind::SentencePiece),
            "bytes" | "byte" => Some(TokenizerKind::Bytes),
            _ => None,
        }
    }

    /// Whether this is the default (SentencePiece); data specs omit the default when written.
    pub fn is_default(&self) -> bool {
        *self == TokenizerKind::SentencePiece
    }

    /// The vocabulary size a model needs to train on this tokenizer's shards.
    pub fn vocab_size(self) -> usize {
        match self {
            TokenizerKind::SentencePiece => 32101,
            TokenizerKind::Bytes => BYTE_VOCAB,
        }
    }

    /// The identity its shards carry in their header.
    pub fn sha256(self) -> [u8; 32] {
        match self {
            TokenizerKind::SentencePiece => bundled_tokenizer_sha256(),
            TokenizerKind::Bytes => ByteTokenizer.sha256(),
        }
    }

    /// The kind whose shards carry `sha256`, if isoflop knows it.
    pub fn from_identity(sha256: &[u8; 32]) -> Option<TokenizerKind> {
        [TokenizerKind::SentencePiece, TokenizerKind::Bytes]
            .into_iter()
            .find(|k| k.sha256() == *sha256)
    }

    /// The tokenizer itself.
    pub fn load(self) -> Result<AnyTokenizer, DataError> {
        Ok(match self {
            TokenizerKind::SentencePiece => {
                AnyTokenizer::SentencePiece(Box::new(Tokenizer::bundled()?))
            }
            TokenizerKind::Bytes => AnyTokenizer::Bytes(ByteTokenizer),
        })
    }
}

/// A human name for a tokenizer identity: `byte-level (V 260)`, `SentencePiece C4 (V 32101)` or
/// `unknown tokenizer 0123456789abcdef`.
pub fn describe_identity(sha256: &[u8; 32]) -> String {
    match TokenizerKind::from_identity(sha256) {
        Some(TokenizerKind::Bytes) => format!("the byte-level tokenizer (V {BYTE_VOCAB})"),
        Some(TokenizerKind::SentencePiece) => "the C4 SentencePiece model (V 32101)".into(),
        None => format!("an unknown tokenizer {}", &hex(sha256)[..16]),
    }
}

/// One of isoflop's tokenizers.
pub enum AnyTokenizer {
    /// The bundled C4 SentencePiece model (boxed: its tables are large and the byte tokenizer is tiny).
    SentencePiece(Box<Tokenizer>),
    /// The byte-level tokenizer.
    Bytes(ByteTokenizer),
}

impl AnyTokenizer {
    /// Which one it is.
    pub fn kind(&self) -> TokenizerKind {
        match self {
            AnyTokenizer::SentencePiece(_) => TokenizerKind::SentencePiece,
            AnyTokenizer::Bytes(_) => TokenizerKind::Bytes,
        }
    }

    /// Token ids of `text` (no BOS/EOS), as the shards of this tokenizer hold them.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        match self {
            AnyTokenizer::SentencePiece(t) => t.encode(text),
            AnyTokenizer::Bytes(t) => t.encode(text),
        }
    }

    /// Text of `ids` (special ids vanish).
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            AnyTokenizer::SentencePiece(t) => t.decode(ids),
            AnyTokenizer::Bytes(t) => t.decode(ids),
        }
    }
}

impl DocumentEncoder for AnyTokenizer {
    fn vocab_size(&self) -> usize {
        match self {
            AnyTokenizer::SentencePiece(t) => t.vocab_size(),
            AnyTokenizer::Bytes(t) => t.vocab_size(),
        }
    }
    fn unk_id(&self) -> u32 {
        match self {
            AnyTokenizer::SentencePiece(t) => t.unk_id(),
            AnyTokenizer::Bytes(t) => t.unk_id(),
        }
    }
    fn sha256(&self) -> [u8; 32] {
        match self {
            AnyTokenizer::SentencePiece(t) => t.sha256(),
            AnyTokenizer::Bytes(t) => t.sha256(),
        }
    }
    fn encode_document_u16(&self, text: &str, bos: u16, eos: u16, out: &mut Vec<u16>) {
        match self {
            AnyTokenizer::SentencePiece(t) => t.encode_document_u16(text, bos, eos, out),
            AnyTokenizer::Bytes(t) => t.encode_document_u16(text, bos, eos, out),
        }
    }
}

/// The tokenizer whose shards carry the identity `sha256` (a shard header's `tokenizer_sha256`, or
/// run.json's `data.tokenizer_sha256`): how to tokenize more text exactly as a run's data was.
pub fn tokenizer_for_identity(sha256: &[u8; 32]) -> Result<AnyTokenizer, DataError> {
    match TokenizerKind::from_identity(sha256) {
        Some(k) => k.load(),
        None => Err(DataError::Invalid(format!(
            "tokenizer identity {} is neither the bundled C4 SentencePiece model's ({}) nor the byte \
             tokenizer's ({})",
            hex(sha256),
            hex(&TokenizerKind::SentencePiece.sha256()),
            hex(&TokenizerKind::Bytes.sha256())
        ))),
    }
}

/// [`tokenizer_for_identity`] from the identity written as 64 hex digits.
pub fn tokenizer_for_identity_hex(identity: &str) -> Result<AnyTokenizer, DataError> {
    let bad = || {
        DataError::Invalid(format!(
            "tokenizer identity {identity:?} is not 64 hex digits"
        ))
    };
    if identity.len() != 64 || !identity.is_ascii() {
        return Err(bad());
    }
    let mut sha = [0u8; 32];
    for (i, b) in sha.iter_mut().enumerate() {
        *b = u8::from_str_radix(&identity[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    tokenizer_for_identity(&sha)
}
