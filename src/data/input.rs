//! Reading documents from input files: C4 release files (`*.json.gz`, one JSON object per line with a
//! `text` field), plain `.jsonl` / `.json` (optionally gzipped), and `.txt` (one document per file, or
//! one per blank-line-separated block).

use super::error::DataError;
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The layout of an input file, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// One JSON object per line with a string `text` field (C4's `.json.gz`, `.jsonl`).
    JsonLines,
    /// Plain text.
    Text,
}

/// An input file: where it is, its layout, whether it is gzipped, and the stem its shard is named after.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// The file.
    pub path: PathBuf,
    /// Its layout.
    pub format: InputFormat,
    /// Whether it is gzip-compressed.
    pub gzip: bool,
    /// File name without the recognised extensions (`c4-train.00000-of-01024`).
    pub stem: String,
}

impl InputFile {
    /// Classifies `path` by its extension: `.json.gz`, `.jsonl.gz`, `.json`, `.jsonl`, `.txt`, `.txt.gz`.
    pub fn new(path: &Path) -> Result<InputFile, DataError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DataError::input(path, 0, "input file name is not valid UTF-8"))?;
        let (base, gzip) = match name.strip_suffix(".gz") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let (stem, format) = if let Some(s) = base.strip_suffix(".jsonl") {
            (s, InputFormat::JsonLines)
        } else if let Some(s) = base.strip_suffix(".json") {
            (s, InputFormat::JsonLines)
        } else if let Some(s) = base.strip_suffix(".txt") {
            (s, InputFormat::Text)
        } else {
            return Err(DataError::input(
                path,
                0,
                "unknown input type: expected .json.gz, .jsonl(.gz), .json or .txt(.gz)",
            ));
        };
        if stem.is_empty() {
            return Err(DataError::input(
                path,
                0,
                "input file name has an empty stem",
            ));
        }
        Ok(InputFile {
            path: path.to_path_buf(),
            format,
            gzip,
            stem: stem.to_string(),
        })
    }
}

/// Counts the bytes read from the underlying (compressed) file, for progress reporting.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[derive(serde::Deserialize)]
struct JsonDoc {
    text: Option<String>,
}

/// Reads the documents of one input file, in order, a batch at a time.
pub struct DocumentReader {
    file: InputFile,
    reader: Box<dyn BufRead + Send>,
    line: u64,
    txt_blocks: bool,
    done: bool,
    buf: Vec<u8>,
    /// Documents returned so far.
    pub documents: u64,
    /// Bytes of document text returned so far.
    pub text_bytes: u64,
}

impl DocumentReader {
    /// Opens `file`; for `.txt`, `txt_blocks` makes every blank-line-separated block a document.
    /// `compressed_read` is advanced by the bytes read from disk.
    pub fn open(
        file: &InputFile,
        txt_blocks: bool,
        compressed_read: Arc<AtomicU64>,
    ) -> Result<DocumentReader, DataError> {
        let f = File::open(&file.path).map_err(|e| DataError::io(&file.path, e))?;
        let counted = Counting {
            inner: f,
            count: compressed_read,
        };
        let reader: Box<dyn BufRead + Send> = if file.gzip {
            Box::new(BufReader::with_capacity(
                1 << 20,
                MultiGzDecoder::new(counted),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, counted))
        };
        Ok(DocumentReader {
            file: file.clone(),
            reader,
            line: 0,
            txt_blocks,
            done: false,
            buf: Vec::new(),
            documents: 0,
            text_bytes: 0,
        })
    }

    fn read_error(&self, line: u64, e: std::io::Error) -> DataError {
        let what = if self.file.gzip {
            "cannot read (gzip stream corrupt or cut short?)"
        } else {
            "cannot read"
        };
        DataError::input(&self.file.path, line, format!("{what}: {e}"))
    }

    /// The next documents, about `max_bytes` of text in all; empty at the end of the file.
    /// A file that yields no document at all is an error.
    pub fn next_batch(&mut self, max_bytes: usize) -> Result<Vec<String>, DataError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while !self.done && bytes < max_bytes {
            match self.next_document()? {
                Some(d) => {
                    bytes += d.len();
                    out.push(d);
                }
                None => self.done = true,
            }
        }
        if self.done && out.is_empty() && self.documents == 0 {
            return Err(DataError::input(
                &self.file.path,
                0,
                "empty input: no documents with text",
            ));
        }
        self.documents += out.len() as u64;
        self.text_bytes += bytes as u64;
        Ok(out)
    }

    fn next_document(&mut self) -> Result<Option<String>, DataError> {
        match self.file.format {
            InputFormat::JsonLines => self.next_json(),
            InputFormat::Text if self.txt_blocks => self.next_block(),
            InputFormat::Text => self.whole_text(),
        }
    }

    /// Reads one line into `self.buf`; false at the end.
    fn read_line(&mut self) -> Result<bool, DataError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| self.read_error(self.line + 1, e))?;
        if n == 0 {
            return Ok(false);
        }
        self.line += 1;
        Ok(true)
    }

    fn line_str(&self) -> Result<&str, DataError> {
        std::str::from_utf8(&self.buf).map_err(|e| {
            DataError::input(
                &self.file.path,
                self.line,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        })
    }

    fn next_json(&mut self) -> Result<Option<String>, DataError> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            let line = self.line_str()?;
            if line.trim().is_empty() {
                continue;
            }
            let doc: JsonDoc = serde_json::from_str(line).map_err(|e| {
                DataError::input(&self.file.path, self.line, format!("bad JSON: {e}"))
            })?;
            match doc.text {
                None => {
                    return Err(DataError::input(
                        &self.file.path,
                        self.line,
                        "JSON object has no \"text\" field",
                    ))
                }
                Some(t) if t.trim().is_empty() => continue,
                Some(t) => return Ok(Some(t)),
            }
        }
    }

    fn next_block(&mut self) -> Result<Option<String>, DataError> {
        let mut doc = String::new();
        loop {
            if !self.read_line()? {
                return Ok((!doc.is_empty()).then_some(doc));
            }
            let line = self.line_str()?;
            if line.trim().is_empty() {
                if !doc.is_empty() {
                    return Ok(Some(doc));
                }
                continue;
            }
            doc.push_str(line);
        }
    }

    fn whole_text(&mut self) -> Result<Option<String>, DataError> {
        let mut doc = String::new();
        while self.read_line()? {
            let line = self.line_str()?;
            doc.push_str(line);
        }
        self.done = true;
        Ok((!doc.trim().is_empty()).then_some(doc))
    }
}
