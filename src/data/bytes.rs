//! The byte-level tokenizer: every UTF-8 byte of the text is one token, so tiny models are not all
//! embedding (V = 260 instead of 32101).
//!
//! Mapping: byte `b` is id `b + 4` ([`BYTE_OFFSET`]); ids 0–3 keep the model contract's special
//! meanings (pad 0, EOS 1, BOS 2, unk 3; unk is never produced). The text is not normalized: decoding
//! a document's ids gives its exact bytes back. Shards made with it carry [`ByteTokenizer::sha256`]
//! (the sha256 of [`BYTE_TOKENIZER_IDENTITY`]) where SentencePiece shards carry their model file's
//! sha256, so the two can never be read as one stream.

use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Id of byte 0; bytes `b` map to `b + BYTE_OFFSET`, below it are the contract's special ids.
pub const BYTE_OFFSET: u32 = 4;
/// Vocabulary size of the byte tokenizer: 4 special ids + 256 bytes.
pub const BYTE_VOCAB: usize = 256 + BYTE_OFFSET as usize;
/// The text whose sha256 is the byte tokenizer's identity in shard headers (its "model file").
pub const BYTE_TOKENIZER_IDENTITY: &str =
    "isoflop byte tokenizer v1: id = byte + 4, vocab 260, pad 0, eos 1, bos 2, unk 3 (unused)";

/// The byte-level tokenizer (stateless).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    /// Vocabulary size, [`BYTE_VOCAB`] (260).
    pub fn vocab_size(&self) -> usize {
        BYTE_VOCAB
    }

    /// Id of the unknown token (3, never produced: every byte has an id).
    pub fn unk_id(&self) -> u32 {
        super::shard::UNK_ID
    }

    /// The identity recorded in shard headers: sha256 of [`BYTE_TOKENIZER_IDENTITY`].
    pub fn sha256(&self) -> [u8; 32] {
        static SHA: OnceLock<[u8; 32]> = OnceLock::new();
        *SHA.get_or_init(|| Sha256::digest(BYTE_TOKENIZER_IDENTITY.as_bytes()).into())
    }

    /// Token ids of `text` (no BOS/EOS): one per UTF-8 byte, `byte + 4`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        text.bytes().map(|b| u32::from(b) + BYTE_OFFSET).collect()
    }

    /// Appends one document, `BOS ids... EOS`, to `out` as u16 ids.
    pub fn encode_document_u16(&self, text: &str, bos: u16, eos: u16, out: &mut Vec<u16>) {
        out.reserve(text.len() + 2);
        out.push(bos);
        out.extend(text.bytes().map(|b| u16::from(b) + BYTE_OFFSET as u16));
        out.push(eos);
    }

    /// The text of `ids`: special ids vanish, ids out of range read `\u{FFFD}`, and byte sequences
    /// that are not UTF-8 (a window cut inside a character) are replaced lossily.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len());
        for &id in ids {
            if id >= BYTE_VOCAB as u32 {
                bytes.extend_from_slice("\u{FFFD}".as_bytes());
            } else if id >= BYTE_OFFSET {
                bytes.push((id - BYTE_OFFSET) as u8);
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
