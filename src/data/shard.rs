//! The token shard file: a fixed 4096-byte little-endian header, a page-aligned `u16` payload (the
//! documents' tokens, each `BOS ... EOS`, back to back), then the document index (`doc_count + 1`
//! little-endian `u64` token offsets). Written atomically (temp file, fsync, rename).
//!
//! Header layout (byte offset: field):
//! ```text
//!   0  magic  b"ISOFTOK\0"          40  token_count u64
//!   8  format version u32 (1)        48  doc_count u64
//!  12  token dtype u32 (1 = u16)     56  payload offset u64 (4096)
//!  16  vocab size u32                64  index offset u64 (8-aligned, after the payload)
//!  20  pad id u32                    72  sha256 of the tokenizer model file [32]
//!  24  eos id u32                   104  sha256 of payload bytes then index bytes [32]
//!  28  bos id u32                   136  source name length u32 (<= 256)
//!  32  unk id u32                   140  source file name, UTF-8, zero padded [256]
//!  36  reserved u32 (0)             396..4096 zero
//! ```

use super::error::DataError;
use super::tokenizer::hex;
use crate::model::config::{BOS_ID, EOS_ID, PAD_ID};
use memmap2::Mmap;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// First 8 bytes of every shard.
pub const MAGIC: [u8; 8] = *b"ISOFTOK\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Token dtype code for little-endian `u16`.
pub const DTYPE_U16: u32 = 1;
/// Size of the header; the payload starts here (page aligned).
pub const HEADER_SIZE: usize = 4096;
/// File extension of shards.
pub const SHARD_EXT: &str = "tok";
const MAX_SOURCE_NAME: usize = 256;

/// Special token ids recorded in a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    /// Padding id.
    pub pad: u32,
    /// End of document.
    pub eos: u32,
    /// Beginning of document.
    pub bos: u32,
    /// Unknown piece.
    pub unk: u32,
}

impl SpecialIds {
    /// The model contract's ids: pad 0, EOS 1, BOS 2, unk 3 (the loss masks pad, documents are
    /// `BOS ... EOS`); every shard must carry exactly these.
    pub const CONTRACT: SpecialIds = SpecialIds {
        pad: PAD_ID as u32,
        eos: EOS_ID as u32,
        bos: BOS_ID as u32,
        unk: UNK_ID,
    };

    /// Every id that differs from [`SpecialIds::CONTRACT`], as `"pad id 5 (the contract's is 0)"`.
    pub fn contract_mismatches(&self) -> Vec<String> {
        let c = SpecialIds::CONTRACT;
        [
            ("pad", self.pad, c.pad),
            ("eos", self.eos, c.eos),
            ("bos", self.bos, c.bos),
            ("unk", self.unk, c.unk),
        ]
        .iter()
        .filter(|(_, got, want)| got != want)
        .map(|(name, got, want)| format!("{name} id {got} (the contract's is {want})"))
        .collect()
    }

    /// Error on `path` unless these are the contract's ids.
    pub fn check(&self, path: &Path) -> Result<(), DataError> {
        let bad = self.contract_mismatches();
        if bad.is_empty() {
            return Ok(());
        }
        Err(DataError::shard(
            path,
            format!(
                "special ids are not the model contract's (pad 0, eos 1, bos 2, unk 3): {}",
                bad.join(", ")
            ),
        ))
    }
}

/// Id of the unknown piece in the model contract (the bundled C4 tokenizer's).
pub const UNK_ID: u32 = 3;

/// The decoded header of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    /// Format version.
    pub version: u32,
    /// Token dtype code (1: u16).
    pub dtype: u32,
    /// Vocabulary size of the tokenizer.
    pub vocab_size: u32,
    /// Special ids.
    pub special: SpecialIds,
    /// Tokens in the payload.
    pub token_count: u64,
    /// Documents in the index.
    pub doc_count: u64,
    /// Byte offset of the payload.
    pub payload_offset: u64,
    /// Byte offset of the document index.
    pub index_offset: u64,
    /// sha256 of the tokenizer model file.
    pub tokenizer_sha256: [u8; 32],
    /// sha256 over the payload bytes followed by the index bytes.
    pub checksum: [u8; 32],
    /// File name of the input the shard was made from.
    pub source: String,
}

fn index_offset_for(token_count: u64) -> u64 {
    (HEADER_SIZE as u64 + 2 * token_count).div_ceil(8) * 8
}

impl ShardHeader {
    /// Total file size implied by the header.
    pub fn file_size(&self) -> u64 {
        self.index_offset + 8 * (self.doc_count + 1)
    }

    fn encode(&self) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        h[0..8].copy_from_slice(&MAGIC);
        let put32 =
            |h: &mut Vec<u8>, at: usize, v: u32| h[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let put64 =
            |h: &mut Vec<u8>, at: usize, v: u64| h[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put32(&mut h, 8, self.version);
        put32(&mut h, 12, self.dtype);
        put32(&mut h, 16, self.vocab_size);
        put32(&mut h, 20, self.special.pad);
        put32(&mut h, 24, self.special.eos);
        put32(&mut h, 28, self.special.bos);
        put32(&mut h, 32, self.special.unk);
        put64(&mut h, 40, self.token_count);
        put64(&mut h, 48, self.doc_count);
        put64(&mut h, 56, self.payload_offset);
        put64(&mut h, 64, self.index_offset);
        h[72..104].copy_from_slice(&self.tokenizer_sha256);
        h[104..136].copy_from_slice(&self.checksum);
        let name = self.source.as_bytes();
        put32(&mut h, 136, name.len() as u32);
        h[140..140 + name.len()].copy_from_slice(name);
        h
    }

    /// Parses and sanity-checks a header; `path` names the file in errors, `file_len` is its size.
    pub fn decode(bytes: &[u8], file_len: u64, path: &Path) -> Result<ShardHeader, DataError> {
        let bad = |m: String| DataError::shard(path, m);
        if bytes.len() < HEADER_SIZE {
            return Err(bad(format!(
                "truncated: {} bytes, shorter than the {HEADER_SIZE}-byte shard header",
                bytes.len()
            )));
        }
        if bytes[0..8] != MAGIC {
            return Err(bad(format!(
                "not an isoflop token shard: magic {:?}, expected {:?}",
                String::from_utf8_lossy(&bytes[0..8]),
                String::from_utf8_lossy(&MAGIC)
            )));
        }
        let g32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap_or([0; 4]));
        let g64 = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
        let version = g32(8);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "shard format version {version}; this build reads version {FORMAT_VERSION}"
            )));
        }
        let dtype = g32(12);
        if dtype != DTYPE_U16 {
            return Err(bad(format!(
                "token dtype code {dtype}; only 1 (u16) is supported"
            )));
        }
        let name_len = g32(136) as usize;
        if name_len > MAX_SOURCE_NAME {
            return Err(bad(format!(
                "source name length {name_len} > {MAX_SOURCE_NAME}"
            )));
        }
        let source = std::str::from_utf8(&bytes[140..140 + name_len])
            .map_err(|_| bad("source name is not UTF-8".into()))?
            .to_string();
        let h = ShardHeader {
            version,
            dtype,
            vocab_size: g32(16),
            special: SpecialIds {
                pad: g32(20),
                eos: g32(24),
                bos: g32(28),
                unk: g32(32),
            },
            token_count: g64(40),
            doc_count: g64(48),
            payload_offset: g64(56),
            index_offset: g64(64),
            tokenizer_sha256: bytes[72..104].try_into().unwrap_or([0; 32]),
            checksum: bytes[104..136].try_into().unwrap_or([0; 32]),
            source,
        };
        if h.payload_offset != HEADER_SIZE as u64
            || h.token_count > (u64::MAX / 4)
            || h.doc_count > (u64::MAX / 16)
            || h.index_offset != index_offset_for(h.token_count)
        {
            return Err(bad(format!(
                "inconsistent header: payload at {}, index at {}, {} tokens",
                h.payload_offset, h.index_offset, h.token_count
            )));
        }
        if h.vocab_size == 0 || h.vocab_size > 65536 {
            return Err(bad(format!(
                "vocab size {} does not fit u16 ids",
                h.vocab_size
            )));
        }
        h.special.check(path)?;
        if file_len != h.file_size() {
            return Err(bad(format!(
                "truncated or padded: file is {file_len} bytes, header implies {} ({} tokens, {} documents)",
                h.file_size(),
                h.token_count,
                h.doc_count
            )));
        }
        Ok(h)
    }
}

/// A memory-mapped shard whose header has been checked (the payload is not read until used).
pub struct Shard {
    path: PathBuf,
    mmap: Mmap,
    /// The shard's header, read and checked when it was opened.
    pub header: ShardHeader,
}

impl Shard {
    /// Maps `path` and checks its header against the file size.
    pub fn open(path: &Path) -> Result<Shard, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        if len < HEADER_SIZE as u64 {
            return Err(DataError::shard(
                path,
                format!("truncated: {len} bytes, shorter than the {HEADER_SIZE}-byte shard header"),
            ));
        }
        // SAFETY: shards are written once and renamed into place; nothing truncates them while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        let header = ShardHeader::decode(&mmap[..HEADER_SIZE], len, path)?;
        Ok(Shard {
            path: path.to_path_buf(),
            mmap,
            header,
        })
    }

    /// The shard's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tokens of the payload.
    pub fn tokens(&self) -> &[u16] {
        let start = self.header.payload_offset as usize;
        let end = start + 2 * self.header.token_count as usize;
        // Page-aligned mapping + 4096-byte header: aligned for u16. Shards are little endian.
        bytemuck::cast_slice(&self.mmap[start..end])
    }

    /// The document index: `doc_count + 1` token offsets.
    pub fn doc_offsets(&self) -> &[u64] {
        let start = self.header.index_offset as usize;
        bytemuck::cast_slice(&self.mmap[start..start + 8 * (self.header.doc_count as usize + 1)])
    }

    /// Tokens of document `i` (with its BOS and EOS), if the index is sane there.
    pub fn document(&self, i: usize) -> Option<&[u16]> {
        let off = self.doc_offsets();
        let (a, b) = (*off.get(i)? as usize, *off.get(i + 1)? as usize);
        self.tokens().get(a..b)
    }

    /// Full check: checksum of payload + index, index monotone from 0 to `token_count`, every token
    /// below the header's vocabulary size.
    pub fn verify(&self) -> Result<(), DataError> {
        let h = &self.header;
        let body = &self.mmap[h.payload_offset as usize..];
        let payload_end = 2 * h.token_count as usize;
        let index_start = (h.index_offset - h.payload_offset) as usize;
        let mut sha = Sha256::new();
        sha.update(&body[..payload_end]);
        sha.update(&body[index_start..]);
        let sum: [u8; 32] = sha.finalize().into();
        if sum != h.checksum {
            return Err(DataError::shard(
                &self.path,
                "checksum mismatch: payload or index is corrupt",
            ));
        }
        let off = self.doc_offsets();
        if off.first() != Some(&0) || off.last() != Some(&h.token_count) {
            return Err(DataError::shard(
                &self.path,
                "document index does not span the payload",
            ));
        }
        if let Some(i) = off.windows(2).position(|w| w[0] > w[1]) {
            return Err(DataError::shard(
                &self.path,
                format!("document index decreases at document {i}"),
            ));
        }
        check_token_range(self.tokens(), h.vocab_size, &self.path, 0)
    }
}

/// Error naming the first token of `tokens` that is `>= vocab` (`base` is the offset of `tokens[0]`).
pub fn check_token_range(
    tokens: &[u16],
    vocab: u32,
    path: &Path,
    base: u64,
) -> Result<(), DataError> {
    let max = tokens.iter().copied().fold(0u16, u16::max);
    if u32::from(max) < vocab {
        return Ok(());
    }
    let i = tokens
        .iter()
        .position(|&t| u32::from(t) >= vocab)
        .unwrap_or(0);
    Err(DataError::shard(
        path,
        format!(
            "token id {} at token {} is outside the vocabulary of {vocab}",
            tokens[i],
            base + i as u64
        ),
    ))
}

/// Streams documents into a new shard; nothing appears at the final path until [`ShardWriter::finish`].
pub struct ShardWriter {
    final_path: PathBuf,
    tmp_path: PathBuf,
    out: Option<BufWriter<File>>,
    header: ShardHeader,
    offsets: Vec<u64>,
    sha: Sha256,
}

impl ShardWriter {
    /// Starts `path` (written as `path.<pid>.tmp` until finished).
    pub fn create(
        path: &Path,
        vocab_size: u32,
        special: SpecialIds,
        tokenizer_sha256: [u8; 32],
        source: &str,
    ) -> Result<ShardWriter, DataError> {
        // A shard with other ids could never be read back: refuse before writing anything.
        special.check(path)?;
        let mut source = source.to_string();
        while source.len() > MAX_SOURCE_NAME {
            source.pop();
        }
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp_path = PathBuf::from(tmp);
        let file = File::create(&tmp_path).map_err(|e| DataError::io(&tmp_path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&[0u8; HEADER_SIZE])
            .map_err(|e| DataError::io(&tmp_path, e))?;
        Ok(ShardWriter {
            final_path: path.to_path_buf(),
            tmp_path,
            out: Some(out),
            header: ShardHeader {
                version: FORMAT_VERSION,
                dtype: DTYPE_U16,
                vocab_size,
                special,
                token_count: 0,
                doc_count: 0,
                payload_offset: HEADER_SIZE as u64,
                index_offset: 0,
                tokenizer_sha256,
                checksum: [0; 32],
                source,
            },
            offsets: vec![0],
            sha: Sha256::new(),
        })
    }

    /// Appends one document's tokens.
    pub fn push_document(&mut self, tokens: &[u16]) -> Result<(), DataError> {
        let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        self.sha.update(&bytes);
        if let Some(out) = self.out.as_mut() {
            out.write_all(&bytes)
                .map_err(|e| DataError::io(&self.tmp_path, e))?;
        }
        self.header.token_count += tokens.len() as u64;
        self.header.doc_count += 1;
        self.offsets.push(self.header.token_count);
        Ok(())
    }

    /// Tokens written so far.
    pub fn token_count(&self) -> u64 {
        self.header.token_count
    }

    /// Writes the index and header, fsyncs and renames into place. Returns the header. On failure
    /// the temp file is removed.
    pub fn finish(mut self) -> Result<ShardHeader, DataError> {
        let r = self.finish_inner();
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp_path);
        }
        r
    }

    fn finish_inner(&mut self) -> Result<ShardHeader, DataError> {
        let tmp = self.tmp_path.clone();
        let io = |e| DataError::io(&tmp, e);
        let mut out = self
            .out
            .take()
            .ok_or_else(|| DataError::Invalid("shard writer already finished".into()))?;
        let payload_end = HEADER_SIZE as u64 + 2 * self.header.token_count;
        self.header.index_offset = index_offset_for(self.header.token_count);
        out.write_all(&vec![
            0u8;
            (self.header.index_offset - payload_end) as usize
        ])
        .map_err(io)?;
        let index: Vec<u8> = self.offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
        self.sha.update(&index);
        out.write_all(&index).map_err(io)?;
        self.header.checksum = std::mem::take(&mut self.sha).finalize().into();
        let mut file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&self.header.encode()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.final_path).map_err(io)?;
        if let Some(dir) = self.final_path.parent() {
            // Make the rename durable; failure to open a directory is not fatal on every platform.
            if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            }) {
                let _ = d.sync_all();
            }
        }
        Ok(self.header.clone())
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            // Abandoned (error path): remove the partial temp file.
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

/// The shard files (`*.tok`) in `dir`, sorted by name.
pub fn list_shards(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        let p = e.map_err(|e| DataError::io(dir, e))?.path();
        if p.extension().and_then(|x| x.to_str()) == Some(SHARD_EXT) && p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Error unless every shard in `headers` has the same vocabulary size and tokenizer hash: the
/// trainer reads a directory as one token stream. The message lists which files hold which.
pub fn check_same_tokenizer(headers: &[(PathBuf, ShardHeader)]) -> Result<(), DataError> {
    // Groups in order of first appearance: (vocab, tokenizer hash) -> files.
    type Group<'a> = ((u32, [u8; 32]), Vec<&'a Path>);
    let mut groups: Vec<Group> = Vec::new();
    for (p, h) in headers {
        let key = (h.vocab_size, h.tokenizer_sha256);
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, files)) => files.push(p.as_path()),
            None => groups.push((key, vec![p.as_path()])),
        }
    }
    if groups.len() <= 1 {
        return Ok(());
    }
    let describe = |((vocab, sha), files): &((u32, [u8; 32]), Vec<&Path>)| {
        const SHOWN: usize = 5;
        let mut names: Vec<String> = files
            .iter()
            .take(SHOWN)
            .map(|p| p.display().to_string())
            .collect();
        if files.len() > SHOWN {
            names.push(format!("and {} more", files.len() - SHOWN));
        }
        format!(
            "vocab {vocab}, tokenizer {}: {}",
            &hex(sha)[..16],
            names.join(", ")
        )
    };
    let dir = headers[0]
        .0
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    Err(DataError::shard(
        &dir,
        format!(
            "shards were made with {} different vocabularies/tokenizers and cannot be trained on together; {}",
            groups.len(),
            groups.iter().map(describe).collect::<Vec<_>>().join("; ")
        ),
    ))
}

/// Whether process `pid` exists (it may belong to another user: that still counts).
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled; nothing is sent.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The PID in a shard temporary's name `<stem>.tok.<pid>.tmp` (see [`ShardWriter::create`]).
fn temporary_pid(name: &str) -> Option<u32> {
    let rest = name.strip_suffix(".tmp")?;
    let (before, pid) = rest.rsplit_once('.')?;
    if !before.ends_with(&format!(".{SHARD_EXT}")) || pid.is_empty() {
        return None;
    }
    if !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes shard temporaries (`<stem>.tok.<pid>.tmp`) in `dir` left by processes that no longer
/// exist (a killed `data tokenize`); a live process's temporary is never touched. Returns the files
/// removed with the PID that left each.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<(PathBuf, u32)>, DataError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(DataError::io(dir, e)),
    };
    let mut removed = Vec::new();
    for e in rd {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(temporary_pid) else {
            continue;
        };
        let p = e.path();
        if !p.is_file() || process_alive(pid) {
            continue;
        }
        match std::fs::remove_file(&p) {
            Ok(()) => removed.push((p, pid)),
            // Another cleaner got there first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DataError::io(&p, e)),
        }
    }
    removed.sort();
    Ok(removed)
}
