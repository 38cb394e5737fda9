//! Serves training windows from memory-mapped token shards, NanoDO style: the split's documents are
//! concatenated (shards in file-name order) and cut into windows of `T + 1` tokens, documents crossing
//! window edges. Training windows are visited in a seeded pseudo-random order (a Feistel permutation
//! over all windows of all shards, re-keyed every epoch) so the position is two integers; evaluation
//! windows are served in order. A background thread prefetches upcoming windows.
//!
//! Held-out split: shards made from files whose name contains `validation` (C4's
//! `c4-validation.*.json.gz`) form the eval split and the others the train split. Without such shards,
//! the last [`EVAL_PERCENT`]% of the windows (at least one) are the eval split.

use super::error::DataError;
use super::shard::{check_same_tokenizer, check_token_range, list_shards, Shard};
use super::source::{SourceError, TokenSource};
use super::text_tokenizer::{describe_identity, TokenizerKind};
use super::tokenizer::{hex, BUNDLED_MODEL};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// Percentage of windows held out for evaluation when the shards have no validation files.
pub const EVAL_PERCENT: u64 = 2;
/// Shards are fully verified (checksum and token range) at open when they total at most this many bytes.
pub const VERIFY_AT_OPEN_MAX_BYTES: u64 = 1 << 30;
/// Windows per prefetched chunk.
const CHUNK_WINDOWS: u64 = 32;
/// Chunks buffered ahead by the prefetch thread.
const PREFETCH_CHUNKS: usize = 8;

/// Which part of the data a loader serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Training windows, shuffled.
    Train,
    /// Held-out windows, in order.
    Eval,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// sha256 of the bundled tokenizer model: the tokenizer every isoflop model is trained with.
pub fn bundled_tokenizer_sha256() -> [u8; 32] {
    static SHA: OnceLock<[u8; 32]> = OnceLock::new();
    *SHA.get_or_init(|| Sha256::digest(BUNDLED_MODEL).into())
}

/// A contiguous run of one shard's tokens inside the split's stream.
struct Segment {
    shard: usize,
    /// Offset of the run's first token in the shard.
    first: u64,
    /// Offset of the run's first token in the stream.
    stream_start: u64,
    len: u64,
}

/// The immutable part shared with the prefetch thread.
struct Stream {
    shards: Vec<Shard>,
    segments: Vec<Segment>,
    /// Index of the split's first window among the stream's windows.
    window_base: u64,
    num_windows: u64,
    window_len: usize,
    vocab: u32,
    shuffle_seed: Option<u64>,
}

impl Stream {
    /// Position in the stream of the `pos`-th window served in `epoch`.
    fn window_index(&self, epoch: u64, pos: u64) -> u64 {
        match self.shuffle_seed {
            Some(seed) => permute(pos, self.num_windows, seed, epoch),
            None => pos,
        }
    }

    /// Appends window `w` (an index into the split) to `out`, checking the token range.
    fn copy_window(&self, w: u64, out: &mut Vec<u16>) -> Result<(), DataError> {
        let mut g = (self.window_base + w) * self.window_len as u64;
        let mut left = self.window_len as u64;
        let mut s = self
            .segments
            .partition_point(|seg| seg.stream_start + seg.len <= g);
        while left > 0 {
            let seg = &self.segments[s];
            let shard = &self.shards[seg.shard];
            let from = seg.first + (g - seg.stream_start);
            let n = left.min(seg.stream_start + seg.len - g);
            let toks = &shard.tokens()[from as usize..(from + n) as usize];
            check_token_range(toks, self.vocab, shard.path(), from)?;
            out.extend_from_slice(toks);
            left -= n;
            g += n;
            s += 1;
        }
        Ok(())
    }
}

/// A bijection of `0..n` keyed by `(seed, epoch)`: a 4-round Feistel network on the smallest even
/// number of bits covering `n`, with cycle walking.
fn permute(x: u64, n: u64, seed: u64, epoch: u64) -> u64 {
    let bits = (64 - n.saturating_sub(1).leading_zeros())
        .max(2)
        .div_ceil(2)
        * 2;
    let half = bits / 2;
    let mask = (1u64 << half) - 1;
    let keys: [u64; 4] = std::array::from_fn(|r| {
        mix(seed ^ mix(epoch.wrapping_add(0x9E37_79B9_7F4A_7C15)) ^ (r as u64 + 1))
    });
    let mut y = x;
    loop {
        let (mut l, mut r) = (y >> half, y & mask);
        for k in keys {
            let f = mix(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        y = (l << half) | r;
        if y < n {
            return y;
        }
    }
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Produces chunks of windows from a start position on a background thread.
struct Prefetcher {
    rx: Option<Receiver<Result<Vec<u16>, DataError>>>,
    handle: Option<JoinHandle<()>>,
}

impl Prefetcher {
    fn start(stream: Arc<Stream>, mut epoch: u64, mut pos: u64) -> Prefetcher {
        let (tx, rx) = sync_channel(PREFETCH_CHUNKS);
        let handle = std::thread::Builder::new()
            .name("isoflop-prefetch".into())
            .spawn(move || loop {
                let mut chunk = Vec::with_capacity(CHUNK_WINDOWS as usize * stream.window_len);
                let mut result = Ok(());
                for _ in 0..CHUNK_WINDOWS {
                    let w = stream.window_index(epoch, pos);
                    if let Err(e) = stream.copy_window(w, &mut chunk) {
                        result = Err(e);
                        break;
                    }
                    pos += 1;
                    if pos == stream.num_windows {
                        pos = 0;
                        epoch += 1;
                    }
                }
                let failed = result.is_err();
                let msg = result.map(|_| chunk);
                if tx.send(msg).is_err() || failed {
                    return;
                }
            })
            .ok();
        Prefetcher {
            rx: Some(rx),
            handle,
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Windows of `T + 1` tokens from a directory of shards; see the module docs.
pub struct ShardLoader {
    dir: PathBuf,
    stream: Arc<Stream>,
    split: Split,
    seq_len: usize,
    seed: u64,
    fingerprint: String,
    tokenizer_sha256: [u8; 32],
    /// Position of the next window handed out: epoch and index within the epoch's order.
    epoch: u64,
    pos: u64,
    prefetch: Option<Prefetcher>,
    /// The current prefetched chunk and how many of its windows were handed out.
    chunk: Vec<u16>,
    chunk_used: usize,
}

impl ShardLoader {
    /// Opens the shards in `dir` for `split`, windows of `seq_len + 1` tokens, order keyed by `seed`.
    /// The shards must all be made with one of isoflop's tokenizers (the bundled C4 SentencePiece
    /// model or the byte tokenizer, as their headers record) and have vocabulary `vocab_size`; shards
    /// of different tokenizers are refused, naming which files hold which.
    pub fn open(
        dir: &Path,
        seq_len: usize,
        seed: u64,
        split: Split,
        vocab_size: usize,
    ) -> Result<ShardLoader, DataError> {
        let mut headers = Vec::new();
        for p in list_shards(dir)? {
            let s = Shard::open(&p)?;
            headers.push((p, s.header));
        }
        check_same_tokenizer(&headers)?;
        let identity = match headers.first() {
            Some((p, h)) => {
                if TokenizerKind::from_identity(&h.tokenizer_sha256).is_none() {
                    return Err(DataError::shard(
                        p,
                        format!(
                            "tokenized with a different tokenizer, {}; isoflop trains on shards of the bundled C4 \
                             SentencePiece model ({}) or of the byte tokenizer ({})",
                            describe_identity(&h.tokenizer_sha256),
                            &hex(&bundled_tokenizer_sha256())[..16],
                            &hex(&TokenizerKind::Bytes.sha256())[..16]
                        ),
                    ));
                }
                h.tokenizer_sha256
            }
            // No shards: open_with_tokenizer names the directory.
            None => bundled_tokenizer_sha256(),
        };
        Self::open_with_tokenizer(dir, seq_len, seed, split, vocab_size, identity)
    }

    /// The tokenizer identity its shards carry (see [`crate::data::tokenizer_for_identity`]).
    pub fn tokenizer_sha256(&self) -> [u8; 32] {
        self.tokenizer_sha256
    }

    /// As [`ShardLoader::open`], for shards made with the tokenizer whose model file hashes to
    /// `tokenizer_sha256`.
    pub fn open_with_tokenizer(
        dir: &Path,
        seq_len: usize,
        seed: u64,
        split: Split,
        vocab_size: usize,
        tokenizer_sha256: [u8; 32],
    ) -> Result<ShardLoader, DataError> {
        if seq_len == 0 {
            return Err(DataError::Invalid(
                "sequence length must be at least 1".into(),
            ));
        }
        if vocab_size == 0 || vocab_size > 65536 {
            return Err(DataError::Invalid(format!(
                "vocab size {vocab_size} does not fit u16 token ids"
            )));
        }
        let paths = list_shards(dir)?;
        if paths.is_empty() {
            return Err(DataError::shard(
                dir,
                "no token shards (*.tok) in this directory",
            ));
        }
        let shards = paths
            .iter()
            .map(|p| Shard::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &shards {
            let h = &s.header;
            if h.vocab_size as usize != vocab_size {
                return Err(DataError::shard(
                    s.path(),
                    format!(
                        "tokenized with a vocabulary of {} pieces ({}), but the model's vocabulary is {vocab_size}",
                        h.vocab_size,
                        describe_identity(&h.tokenizer_sha256)
                    ),
                ));
            }
            if h.tokenizer_sha256 != tokenizer_sha256 {
                return Err(DataError::shard(
                    s.path(),
                    format!(
                        "tokenized with a different tokenizer (model sha256 {}), expected {}",
                        hex(&h.tokenizer_sha256),
                        hex(&tokenizer_sha256)
                    ),
                ));
            }
        }
        let total_bytes: u64 = shards.iter().map(|s| s.header.file_size()).sum();
        if total_bytes <= VERIFY_AT_OPEN_MAX_BYTES {
            shards
                .par_iter()
                .map(Shard::verify)
                .collect::<Result<Vec<_>, _>>()?;
        }
        let is_validation = |s: &Shard| {
            s.header.source.contains("validation")
                || s.path()
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("validation"))
        };
        let by_file = shards.iter().any(is_validation);
        let window_len = seq_len + 1;
        let mut segments = Vec::new();
        let mut stream_len = 0u64;
        for (i, s) in shards.iter().enumerate() {
            if by_file && (is_validation(s) != (split == Split::Eval)) {
                continue;
            }
            if s.header.token_count == 0 {
                continue;
            }
            segments.push(Segment {
                shard: i,
                first: 0,
                stream_start: stream_len,
                len: s.header.token_count,
            });
            stream_len += s.header.token_count;
        }
        let stream_windows = stream_len / window_len as u64;
        let (window_base, num_windows) = if by_file {
            (0, stream_windows)
        } else {
            let eval = if stream_windows >= 2 {
                (stream_windows * EVAL_PERCENT / 100).max(1)
            } else {
                0
            };
            match split {
                Split::Train => (0, stream_windows - eval),
                Split::Eval => (stream_windows - eval, eval),
            }
        };
        if num_windows == 0 {
            return Err(DataError::shard(
                dir,
                format!(
                    "the {} split has {} tokens{}: not enough for one window of {window_len} tokens",
                    split.name(),
                    if by_file { stream_len } else { stream_len * EVAL_PERCENT / 100 },
                    if by_file {
                        " (split by validation file names)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let mut fp = Sha256::new();
        fp.update(split.name());
        for seg in &segments {
            let h = &shards[seg.shard].header;
            fp.update(h.source.as_bytes());
            fp.update(h.token_count.to_le_bytes());
            fp.update(h.checksum);
        }
        let fingerprint = hex(&fp.finalize())[..16].to_string();
        Ok(ShardLoader {
            dir: dir.to_path_buf(),
            stream: Arc::new(Stream {
                shards,
                segments,
                window_base,
                num_windows,
                window_len,
                vocab: vocab_size as u32,
                shuffle_seed: (split == Split::Train).then_some(seed),
            }),
            split,
            seq_len,
            seed,
            fingerprint,
            tokenizer_sha256,
            epoch: 0,
            pos: 0,
            prefetch: None,
            chunk: Vec::new(),
            chunk_used: 0,
        })
    }

    /// Windows in one epoch of this split.
    pub fn num_windows(&self) -> u64 {
        self.stream.num_windows
    }

    /// Tokens of the split in one epoch (`num_windows × (T + 1)`).
    pub fn tokens_per_epoch(&self) -> u64 {
        self.stream.num_windows * self.stream.window_len as u64
    }

    /// Epoch of the next window (0 until the data first runs out).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Window `pos` of `epoch`'s order, read directly (no prefetch, position unchanged).
    pub fn window_at(&self, epoch: u64, pos: u64) -> Result<Vec<u16>, DataError> {
        if pos >= self.stream.num_windows {
            return Err(DataError::Invalid(format!(
                "window {pos} out of range (split has {})",
                self.stream.num_windows
            )));
        }
        let mut out = Vec::with_capacity(self.stream.window_len);
        self.stream
            .copy_window(self.stream.window_index(epoch, pos), &mut out)?;
        Ok(out)
    }

    fn next_window_into(&mut self, out: &mut Vec<u16>) -> Result<(), SourceError> {
        let wl = self.stream.window_len;
        if self.chunk_used * wl >= self.chunk.len() {
            let pf = self.prefetch.get_or_insert_with(|| {
                Prefetcher::start(self.stream.clone(), self.epoch, self.pos)
            });
            let msg = pf
                .rx
                .as_ref()
                .and_then(|rx| rx.recv().ok())
                .ok_or_else(|| {
                    SourceError::Other(format!(
                        "{}: the prefetch thread stopped after an error",
                        self.dir.display()
                    ))
                })?;
            self.chunk = msg?;
            self.chunk_used = 0;
        }
        let s = self.chunk_used * wl;
        out.extend_from_slice(&self.chunk[s..s + wl]);
        self.chunk_used += 1;
        self.pos += 1;
        if self.pos == self.stream.num_windows {
            self.pos = 0;
            self.epoch += 1;
        }
        Ok(())
    }
}

/// A shard loader's position as a checkpoint saves it (`state.json`'s `source`): the stream it belongs
/// to, checked on restore, and where in it the loader is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardLoaderState {
    /// Always `shards`.
    pub kind: String,
    /// `train` or `eval`.
    pub split: String,
    /// Seed of the window order.
    pub seed: u64,
    /// Context length T.
    pub seq_len: usize,
    /// Windows per epoch (informational: the fingerprint already pins the data).
    pub num_windows: u64,
    /// Fingerprint of the shards (names, sizes and checksums).
    pub fingerprint: String,
    /// Epoch of the next window.
    pub epoch: u64,
    /// Position of the next window in the epoch's order.
    pub position: u64,
}

impl TokenSource for ShardLoader {
    fn next_batch(&mut self, b: usize) -> Result<Vec<u16>, SourceError> {
        let mut out = Vec::with_capacity(b * self.stream.window_len);
        for _ in 0..b {
            self.next_window_into(&mut out)?;
        }
        Ok(out)
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn describe(&self) -> String {
        format!(
            "{} split of {} ({} shards, {} windows of {} tokens, epoch {}, seed {})",
            self.split.name(),
            self.dir.display(),
            self.stream.segments.len(),
            self.stream.num_windows,
            self.stream.window_len,
            self.epoch,
            self.seed
        )
    }

    fn state(&self) -> Value {
        let state = ShardLoaderState {
            kind: "shards".into(),
            split: self.split.name().into(),
            seed: self.seed,
            seq_len: self.seq_len,
            num_windows: self.stream.num_windows,
            fingerprint: self.fingerprint.clone(),
            epoch: self.epoch,
            position: self.pos,
        };
        // Serialised as a map with sorted keys: the JSON form checkpoints have always had.
        serde_json::to_value(state).expect("strings and integers always serialise")
    }

    fn restore(&mut self, state: &Value) -> Result<(), SourceError> {
        let st = ShardLoaderState::deserialize(state).map_err(|e| {
            SourceError::BadState(format!("{e} in {state} ({})", self.dir.display()))
        })?;
        let want = |k: &str, got: Value, v: Value| -> Result<(), SourceError> {
            if got != v {
                return Err(SourceError::BadState(format!(
                    "{k} is {got}, this loader has {v} ({})",
                    self.dir.display()
                )));
            }
            Ok(())
        };
        want("kind", json!(st.kind), json!("shards"))?;
        want("split", json!(st.split), json!(self.split.name()))?;
        want("seed", json!(st.seed), json!(self.seed))?;
        want("seq_len", json!(st.seq_len), json!(self.seq_len))?;
        want(
            "fingerprint",
            json!(st.fingerprint),
            json!(self.fingerprint),
        )?;
        let (epoch, pos) = (st.epoch, st.position);
        if pos >= self.stream.num_windows {
            return Err(SourceError::BadState(format!(
                "position {pos} beyond the {} windows",
                self.stream.num_windows
            )));
        }
        self.prefetch = None;
        self.chunk.clear();
        self.chunk_used = 0;
        self.epoch = epoch;
        self.pos = pos;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_state_keeps_the_json_form_of_old_checkpoints() {
        // As a checkpoint written before the state was typed has it (tests/fixtures/run-main-4a61c73).
        let old = r#"{"epoch":0,"fingerprint":"4361aca3f13ab6d4","kind":"shards","num_windows":120348,"position":6,"seed":5,"seq_len":32,"split":"train"}"#;
        let v: Value = serde_json::from_str(old).unwrap();
        let st = ShardLoaderState::deserialize(&v).unwrap();
        assert_eq!((st.epoch, st.position, st.seq_len), (0, 6, 32));
        let again = serde_json::to_value(&st).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), old);
        let mut partial = v.clone();
        partial.as_object_mut().unwrap().remove("position");
        let e = ShardLoaderState::deserialize(&partial)
            .unwrap_err()
            .to_string();
        assert!(e.contains("position"), "{e}");
    }

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4097] {
            for epoch in 0..2 {
                let mut seen = vec![false; n as usize];
                for x in 0..n {
                    let y = permute(x, n, 42, epoch);
                    assert!(y < n && !seen[y as usize]);
                    seen[y as usize] = true;
                }
            }
        }
        let a: Vec<u64> = (0..1000).map(|x| permute(x, 1000, 1, 0)).collect();
        let b: Vec<u64> = (0..1000).map(|x| permute(x, 1000, 1, 1)).collect();
        let c: Vec<u64> = (0..1000).map(|x| permute(x, 1000, 2, 0)).collect();
        assert!(a != b && a != c);
        assert!(
            a.iter()
                .enumerate()
                .filter(|(i, &v)| *i as u64 == v)
                .count()
                < 20
        );
    }
}
