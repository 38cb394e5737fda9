//! A minimal CSV reader (RFC 4180 quoting, header row) that keeps line numbers for error messages.

use super::error::FitError;
use std::path::{Path, PathBuf};

/// A CSV file held as text cells, with the line each row came from.
#[derive(Clone, Debug)]
pub struct Table {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    /// Column names, trimmed.
    pub header: Vec<String>,
    /// `(1-based line, cells)` for each data row.
    pub rows: Vec<(usize, Vec<String>)>,
}

/// Split one CSV record into cells (quotes may wrap cells; `""` inside quotes is a quote).
fn split_record(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(std::mem::take(&mut cur).trim().to_string()),
            _ => cur.push(ch),
        }
    }
    cells.push(cur.trim().to_string());
    cells
}

impl Table {
    /// Read `path`; the first non-blank line is the header. Blank lines are skipped.
    pub fn read(path: &Path) -> Result<Self, FitError> {
        let text = std::fs::read_to_string(path).map_err(|err| FitError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        Self::parse(path, &text)
    }

    /// Parse CSV `text` that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, FitError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut header: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let cells = split_record(line);
            match &header {
                None => header = Some(cells),
                Some(h) => {
                    if cells.len() != h.len() {
                        return Err(FitError::RaggedRow {
                            path: path.to_path_buf(),
                            line: i + 1,
                            expected: h.len(),
                            got: cells.len(),
                        });
                    }
                    rows.push((i + 1, cells));
                }
            }
        }
        let header = header.ok_or_else(|| FitError::Empty {
            path: path.to_path_buf(),
            what: "empty file (no header row)".into(),
        })?;
        if rows.is_empty() {
            return Err(FitError::Empty {
                path: path.to_path_buf(),
                what: "no data rows after the header".into(),
            });
        }
        Ok(Table {
            path: path.to_path_buf(),
            header,
            rows,
        })
    }

    /// Index of the first of `names` present in the header (exact match, then case-insensitive).
    pub fn find(&self, names: &[String]) -> Option<usize> {
        for n in names {
            if let Some(i) = self.header.iter().position(|h| h == n) {
                return Some(i);
            }
        }
        for n in names {
            if let Some(i) = self.header.iter().position(|h| h.eq_ignore_ascii_case(n)) {
                return Some(i);
            }
        }
        None
    }

    /// Like [`Table::find`], but a missing column is an error that names the flag `hint_flag`.
    pub fn require(&self, names: &[String], hint_flag: &str) -> Result<usize, FitError> {
        self.find(names).ok_or_else(|| FitError::MissingColumn {
            path: self.path.clone(),
            wanted: names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(" or "),
            available: self.header.join(", "),
            hint: if hint_flag.is_empty() {
                String::new()
            } else {
                format!("; choose one with {hint_flag}")
            },
        })
    }

    /// The number in column `col` of row `row`: `None` for an empty cell or `NA`; an error naming the
    /// line for text that is not a number. `nan`/`inf` parse (and are later dropped as non-finite).
    pub fn number(&self, row: usize, col: usize) -> Result<Option<f64>, FitError> {
        let (line, cells) = &self.rows[row];
        let s = cells[col].as_str();
        if s.is_empty() || s.eq_ignore_ascii_case("na") || s.eq_ignore_ascii_case("null") {
            return Ok(None);
        }
        s.parse::<f64>()
            .map(Some)
            .map_err(|_| FitError::NotNumeric {
                path: self.path.clone(),
                line: *line,
                column: self.header[col].clone(),
                value: s.to_string(),
            })
    }

    /// The text of column `col` of row `row`.
    pub fn text(&self, row: usize, col: usize) -> &str {
        &self.rows[row].1[col]
    }

    /// The 1-based file line of row `row`.
    pub fn line(&self, row: usize) -> usize {
        self.rows[row].0
    }
}

/// A number for the terminal tables of the fits: `—` for NaN, scientific notation when very large or
/// small, else four decimals.
pub fn num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v != 0.0 && (v.abs() >= 1e4 || v.abs() < 1e-2) {
        format!("{v:.3e}")
    } else {
        format!("{v:.4}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_lines() {
        let t = Table::parse(
            Path::new("x.csv"),
            "a,\"b,c\",d\n\n1,\"x\"\"y\",2\r\n3,z,\n",
        )
        .unwrap();
        assert_eq!(t.header, vec!["a", "b,c", "d"]);
        assert_eq!(t.rows[0], (3, vec!["1".into(), "x\"y".into(), "2".into()]));
        assert_eq!(t.line(1), 4);
        assert_eq!(t.number(1, 2).unwrap(), None);
        let e = t.number(1, 1).unwrap_err().to_string();
        assert!(
            e.contains("x.csv:4") && e.contains("'b,c'") && e.contains("'z'"),
            "{e}"
        );
    }

    #[test]
    fn ragged_and_empty() {
        let e = Table::parse(Path::new("r.csv"), "a,b\n1\n").unwrap_err();
        assert!(e.to_string().contains("r.csv:2"), "{e}");
        assert!(Table::parse(Path::new("e.csv"), "").is_err());
        assert!(Table::parse(Path::new("h.csv"), "a,b\n").is_err());
    }
}
