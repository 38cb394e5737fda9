//! A pure-Rust SentencePiece Unigram tokenizer: loads a `ModelProto`, normalizes like sentencepiece's
//! `nmt_nfkc` normalizer and segments with the same Viterbi (sentencepiece's `EncodeOptimized`),
//! merging runs of unknown pieces into one `<unk>` as `SentencePieceProcessor` does.

use super::error::DataError;
use super::normalizer::{utf8_len, Normalizer, SPACE_SYMBOL};
use super::piece_trie::PieceTrie;
use super::protobuf::{Reader, WireValue};
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// The SentencePiece model isoflop trains with (T5's C4 vocabulary + `<s>`, 32101 pieces), embedded.
pub static BUNDLED_MODEL: &[u8] =
    include_bytes!("../../data/tokenizer/c4_en_sentencepiece_32101.model");

/// Type of a piece in the model (sentencepiece's `ModelProto.SentencePiece.Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary piece.
    Normal,
    /// The unknown piece.
    Unknown,
    /// A control symbol (`<s>`, `</s>`, `<pad>`): never produced from text.
    Control,
    /// A user-defined symbol: always segmented whole.
    UserDefined,
    /// Unused: never produced.
    Unused,
    /// A byte-fallback piece.
    Byte,
}

/// A loaded SentencePiece Unigram model.
pub struct Tokenizer {
    pieces: Vec<String>,
    types: Vec<PieceType>,
    /// Score added to a path by each piece, as sentencepiece computes it (f64 for user-defined).
    path_score: Vec<f64>,
    unk_id: u32,
    unk_score: f32,
    trie: PieceTrie,
    normalizer: Normalizer,
    add_dummy_prefix: bool,
    sha256: [u8; 32],
}

struct Scratch {
    normalized: Vec<u8>,
    best_score: Vec<f32>,
    best_start: Vec<u32>,
    best_id: Vec<u32>,
    reversed: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const { RefCell::new(Scratch {
        normalized: Vec::new(),
        best_score: Vec::new(),
        best_start: Vec::new(),
        best_id: Vec::new(),
        reversed: Vec::new(),
    }) };
}

const UNSET: u32 = u32::MAX;

impl Tokenizer {
    /// The bundled C4 model (see `data/tokenizer/NOTICE.md`).
    pub fn bundled() -> Result<Tokenizer, DataError> {
        Tokenizer::from_bytes(
            BUNDLED_MODEL,
            Path::new("<bundled c4_en_sentencepiece_32101.model>"),
        )
    }

    /// Loads a `.model` file.
    pub fn from_file(path: &Path) -> Result<Tokenizer, DataError> {
        let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
        Tokenizer::from_bytes(&bytes, path)
    }

    /// Parses a serialized `ModelProto`; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer, DataError> {
        let err = |msg: String| DataError::Model {
            path: PathBuf::from(path),
            msg,
        };
        let mut pieces = Vec::new();
        let mut scores = Vec::new();
        let mut types = Vec::new();
        let mut charsmap: &[u8] = &[];
        let (mut add_dummy_prefix, mut remove_ws, mut escape_ws) = (true, true, true);
        let mut model_type = 1u64; // UNIGRAM
        let mut byte_fallback = false;
        let mut ws_suffix = false;
        let mut r = Reader::new(bytes);
        while let Some((field, v)) = r.next_field().map_err(&err)? {
            match (field, v) {
                (1, WireValue::Bytes(sp)) => {
                    let (mut piece, mut score, mut ty) = (None, 0f32, 1u64);
                    let mut pr = Reader::new(sp);
                    while let Some((f, v)) = pr.next_field().map_err(&err)? {
                        match (f, v) {
                            (1, WireValue::Bytes(s)) => {
                                piece = Some(String::from_utf8(s.to_vec()).map_err(|_| {
                                    err(format!("piece {} is not UTF-8", pieces.len()))
                                })?)
                            }
                            (2, WireValue::Fixed32(b)) => score = f32::from_bits(b),
                            (3, WireValue::Varint(t)) => ty = t,
                            _ => {}
                        }
                    }
                    let piece =
                        piece.ok_or_else(|| err(format!("piece {} has no text", pieces.len())))?;
                    let ty = match ty {
                        1 => PieceType::Normal,
                        2 => PieceType::Unknown,
                        3 => PieceType::Control,
                        4 => PieceType::UserDefined,
                        5 => PieceType::Unused,
                        6 => PieceType::Byte,
                        t => {
                            return Err(err(format!("piece {} has unknown type {t}", pieces.len())))
                        }
                    };
                    pieces.push(piece);
                    scores.push(score);
                    types.push(ty);
                }
                (2, WireValue::Bytes(ts)) => {
                    let mut tr = Reader::new(ts);
                    while let Some((f, v)) = tr.next_field().map_err(&err)? {
                        match (f, v) {
                            (3, WireValue::Varint(t)) => model_type = t,
                            (24, WireValue::Varint(t)) => ws_suffix = t != 0,
                            (35, WireValue::Varint(t)) => byte_fallback = t != 0,
                            _ => {}
                        }
                    }
                }
                (3, WireValue::Bytes(ns)) => {
                    let mut nr = Reader::new(ns);
                    while let Some((f, v)) = nr.next_field().map_err(&err)? {
                        match (f, v) {
                            (2, WireValue::Bytes(b)) => charsmap = b,
                            (3, WireValue::Varint(t)) => add_dummy_prefix = t != 0,
                            (4, WireValue::Varint(t)) => remove_ws = t != 0,
                            (5, WireValue::Varint(t)) => escape_ws = t != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if model_type != 1 {
            return Err(err(format!("model type {model_type} is not Unigram (1)")));
        }
        if byte_fallback {
            return Err(err("byte fallback is not supported".into()));
        }
        if ws_suffix {
            return Err(err("treat_whitespace_as_suffix is not supported".into()));
        }
        if pieces.is_empty() || pieces.len() > 65535 {
            return Err(err(format!(
                "{} pieces: need 1..=65535 to fit u16 token ids",
                pieces.len()
            )));
        }
        // The unknown id comes from the piece types (the trainer_spec of the C4 model is stale).
        let unk_id = types
            .iter()
            .position(|&t| t == PieceType::Unknown)
            .ok_or_else(|| err("no piece of type UNKNOWN".into()))? as u32;
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
        for (s, t) in scores.iter().zip(&types) {
            if *t == PieceType::Normal {
                min_score = min_score.min(*s);
                max_score = max_score.max(*s);
            }
        }
        let mut keys = Vec::new();
        let mut user_symbols = Vec::new();
        let mut path_score = Vec::with_capacity(pieces.len());
        for (id, ((p, s), t)) in pieces.iter().zip(&scores).zip(&types).enumerate() {
            // sentencepiece: `length * max_score_ - 0.1` (a double) for user-defined symbols.
            path_score.push(match t {
                PieceType::UserDefined => f64::from(p.len() as f32 * max_score) - 0.1,
                _ => f64::from(*s),
            });
            if matches!(
                t,
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused
            ) {
                if p.is_empty() {
                    return Err(err(format!("piece {id} is empty")));
                }
                keys.push((p.as_bytes().to_vec(), id as u32));
            }
            if *t == PieceType::UserDefined {
                user_symbols.push(p.as_bytes().to_vec());
            }
        }
        let normalizer = Normalizer::new(
            charsmap,
            add_dummy_prefix,
            remove_ws,
            escape_ws,
            user_symbols,
        )
        .map_err(&err)?;
        Ok(Tokenizer {
            trie: PieceTrie::build(&keys),
            unk_score: min_score - 10.0,
            pieces,
            types,
            path_score,
            unk_id,
            normalizer,
            add_dummy_prefix,
            sha256: Sha256::digest(bytes).into(),
        })
    }

    /// Number of pieces (the vocabulary size).
    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Id of the unknown piece.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// sha256 of the model file's bytes.
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// Text of piece `id`.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// Id of the piece spelled exactly `piece` (normal, user-defined or unused pieces only).
    pub fn piece_to_id(&self, piece: &str) -> Option<u32> {
        self.trie.get(piece.as_bytes())
    }

    /// Type of piece `id`.
    pub fn piece_type(&self, id: u32) -> Option<PieceType> {
        self.types.get(id as usize).copied()
    }

    /// The normalized form of `text` (with `▁` for spaces), as sentencepiece's normalizer gives it.
    pub fn normalize(&self, text: &str) -> String {
        let mut out = Vec::new();
        self.normalizer.normalize_into(text, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Token ids of `text` (no BOS/EOS), identical to `sentencepiece`'s `encode`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out);
        out
    }

    /// Appends the ids of `text` to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        self.encode_with(text, |id| out.push(id));
    }

    /// Appends one document, `BOS ids... EOS`, to `out` as u16 ids.
    pub fn encode_document_u16(&self, text: &str, bos: u16, eos: u16, out: &mut Vec<u16>) {
        out.push(bos);
        // Ids fit in u16: from_bytes refuses vocabularies over 65535 pieces.
        self.encode_with(text, |id| out.push(id as u16));
        out.push(eos);
    }

    fn encode_with(&self, text: &str, mut emit: impl FnMut(u32)) {
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let s = &mut *s;
            self.normalizer.normalize_into(text, &mut s.normalized);
            self.viterbi(s);
            let mut prev_unk = false;
            for &id in s.reversed.iter().rev() {
                let is_unk = id == self.unk_id;
                if !(is_unk && prev_unk) {
                    emit(id);
                }
                prev_unk = is_unk;
            }
        })
    }

    /// sentencepiece's `EncodeOptimized` over `s.normalized`; leaves the ids, last first, in
    /// `s.reversed`.
    fn viterbi(&self, s: &mut Scratch) {
        let text = &s.normalized[..];
        let n = text.len();
        s.reversed.clear();
        if n == 0 {
            return;
        }
        s.best_score.clear();
        s.best_score.resize(n + 1, 0.0);
        s.best_start.clear();
        s.best_start.resize(n + 1, UNSET);
        s.best_id.clear();
        s.best_id.resize(n + 1, 0);
        let (score, start_at, best_id) = (&mut s.best_score, &mut s.best_start, &mut s.best_id);
        let mut start = 0usize;
        while start < n {
            let here = score[start];
            let here64 = f64::from(here);
            let mblen = utf8_len(text[start]).min(n - start);
            let mut has_single = false;
            let mut node = 0u32;
            let mut pos = start;
            while pos < n {
                match self.trie.step(node, text[pos]) {
                    None => break,
                    Some(next) => node = next,
                }
                pos += 1;
                let v = self.trie.value(node);
                if v < 0 {
                    continue;
                }
                let id = v as usize;
                if self.types[id] == PieceType::Unused {
                    continue;
                }
                // Compared in double against the stored float, as in sentencepiece.
                let cand = self.path_score[id] + here64;
                if start_at[pos] == UNSET || cand > f64::from(score[pos]) {
                    score[pos] = cand as f32;
                    start_at[pos] = start as u32;
                    best_id[pos] = id as u32;
                }
                if pos - start == mblen {
                    has_single = true;
                }
            }
            if !has_single {
                let end = start + mblen;
                let cand = self.unk_score + here;
                if start_at[end] == UNSET || cand > score[end] {
                    score[end] = cand;
                    start_at[end] = start as u32;
                    best_id[end] = self.unk_id;
                }
            }
            start += mblen;
        }
        let mut end = n;
        while end > 0 {
            s.reversed.push(best_id[end]);
            end = start_at[end] as usize;
        }
    }

    /// Text of `ids` as sentencepiece decodes it: control ids vanish, `<unk>` reads ` ⁇ `,
    /// `▁` becomes a space and the dummy-prefix space is dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        let mut first = true;
        for &id in ids {
            match self.types.get(id as usize) {
                None => out.push_str(" \u{2047} "),
                Some(PieceType::Control) => {}
                Some(PieceType::Unknown) => {
                    out.push_str(" \u{2047} ");
                    first = false;
                }
                Some(_) => {
                    let p = &self.pieces[id as usize];
                    let p = match p.strip_prefix(SPACE_SYMBOL) {
                        Some(rest) if first && self.add_dummy_prefix => rest,
                        _ => p,
                    };
                    out.push_str(&p.replace(SPACE_SYMBOL, " "));
                    first = false;
                }
            }
        }
        out
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
