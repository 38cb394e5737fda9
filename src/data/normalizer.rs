//! SentencePiece's `nmt_nfkc` normalizer: the precompiled charsmap (a darts-clone double-array trie over
//! UTF-8 plus a blob of NUL-terminated replacement strings), applied exactly as sentencepiece's
//! `normalizer.cc` does, with the dummy prefix, whitespace escaping to `▁` and whitespace collapsing.

/// The whitespace symbol U+2581 that replaces spaces in normalized text.
pub const SPACE_SYMBOL: &str = "\u{2581}";

/// Read-only darts-clone double array (the format sentencepiece stores in the charsmap).
struct DartsArray {
    units: Vec<u32>,
}

impl DartsArray {
    #[inline]
    fn unit(&self, i: usize) -> u32 {
        self.units.get(i).copied().unwrap_or(0)
    }
    #[inline]
    fn has_leaf(u: u32) -> bool {
        (u >> 8) & 1 == 1
    }
    #[inline]
    fn value(u: u32) -> u32 {
        u & ((1u32 << 31) - 1)
    }
    #[inline]
    fn label(u: u32) -> u32 {
        u & ((1u32 << 31) | 0xFF)
    }
    #[inline]
    fn offset(u: u32) -> usize {
        ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize
    }

    /// The longest key that is a prefix of `key`: `(value, length)`; `None` when no key matches.
    /// Mirrors darts-clone's `commonPrefixSearch` keeping the longest result.
    #[inline]
    fn longest_prefix(&self, key: &[u8]) -> Option<(u32, usize)> {
        let mut node_pos = 0usize;
        let mut unit = self.unit(node_pos);
        node_pos ^= Self::offset(unit);
        let mut best = None;
        for (i, &b) in key.iter().enumerate() {
            node_pos ^= b as usize;
            unit = self.unit(node_pos);
            if Self::label(unit) != b as u32 {
                return best;
            }
            node_pos ^= Self::offset(unit);
            if Self::has_leaf(unit) {
                best = Some((Self::value(self.unit(node_pos)), i + 1));
            }
        }
        best
    }

    /// Whether any key extends past the one-byte prefix `b` (so a longer match is possible).
    fn has_longer_keys(&self, b: u8) -> bool {
        let mut node_pos = Self::offset(self.unit(0));
        node_pos ^= b as usize;
        let unit = self.unit(node_pos);
        if Self::label(unit) != b as u32 {
            return false;
        }
        node_pos ^= Self::offset(unit);
        (1u8..=255).any(|c| Self::label(self.unit(node_pos ^ c as usize)) == c as u32)
    }
}

/// How one ASCII byte normalizes when no longer rule can start with it.
#[derive(Clone, Copy)]
enum AsciiRule {
    /// The byte stays itself.
    Keep,
    /// The byte becomes the NUL-terminated string at this offset of the replacement blob.
    Replace(u32, u32),
    /// A longer rule may start here: take the general path.
    Slow,
}

/// A SentencePiece normalizer (name, charsmap and flags of the model's `NormalizerSpec`).
pub struct Normalizer {
    trie: Option<DartsArray>,
    normalized: Vec<u8>,
    ascii: [AsciiRule; 128],
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    /// User-defined symbols: matched before normalization and passed through unchanged.
    user_symbols: Vec<Vec<u8>>,
    user_first_bytes: [bool; 256],
}

impl Normalizer {
    /// Builds a normalizer from a precompiled charsmap blob (empty: identity) and the spec's flags.
    pub fn new(
        charsmap: &[u8],
        add_dummy_prefix: bool,
        remove_extra_whitespaces: bool,
        escape_whitespaces: bool,
        user_symbols: Vec<Vec<u8>>,
    ) -> Result<Self, String> {
        let (trie, normalized) = if charsmap.is_empty() {
            (None, Vec::new())
        } else {
            if charsmap.len() < 4 {
                return Err("precompiled charsmap shorter than its 4-byte header".into());
            }
            let trie_size =
                u32::from_le_bytes([charsmap[0], charsmap[1], charsmap[2], charsmap[3]]) as usize;
            if !trie_size.is_multiple_of(4) || 4 + trie_size > charsmap.len() {
                return Err(format!(
                    "precompiled charsmap trie of {trie_size} bytes does not fit in {} bytes",
                    charsmap.len()
                ));
            }
            let units = charsmap[4..4 + trie_size]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                Some(DartsArray { units }),
                charsmap[4 + trie_size..].to_vec(),
            )
        };
        let mut n = Normalizer {
            trie,
            normalized,
            ascii: [AsciiRule::Slow; 128],
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces,
            user_first_bytes: [false; 256],
            user_symbols,
        };
        for s in &n.user_symbols {
            if let Some(&b) = s.first() {
                n.user_first_bytes[b as usize] = true;
            }
        }
        for b in 0u8..128 {
            if n.user_first_bytes[b as usize] {
                continue;
            }
            n.ascii[b as usize] = match &n.trie {
                None => AsciiRule::Keep,
                Some(t) if t.has_longer_keys(b) => AsciiRule::Slow,
                Some(t) => match t.longest_prefix(&[b]) {
                    None => AsciiRule::Keep,
                    Some((v, _)) => {
                        let (start, end) = n.replacement_range(v)?;
                        AsciiRule::Replace(start as u32, end as u32)
                    }
                },
            };
        }
        Ok(n)
    }

    fn replacement_range(&self, value: u32) -> Result<(usize, usize), String> {
        let start = value as usize;
        let tail = self
            .normalized
            .get(start..)
            .ok_or_else(|| format!("charsmap replacement offset {start} out of range"))?;
        let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Ok((start, start + len))
    }

    fn replacement(&self, value: u32) -> &[u8] {
        let start = (value as usize).min(self.normalized.len());
        let tail = &self.normalized[start..];
        let len = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        &tail[..len]
    }

    /// sentencepiece's `NormalizePrefix`: the normalized form of the longest rule at the start of
    /// `input` and the number of input bytes it consumes.
    #[inline]
    fn normalize_prefix<'s>(&'s self, input: &'s [u8]) -> (&'s [u8], usize) {
        let b0 = input[0];
        if b0 < 0x80 {
            match self.ascii[b0 as usize] {
                AsciiRule::Keep => return (&input[..1], 1),
                AsciiRule::Replace(s, e) => return (&self.normalized[s as usize..e as usize], 1),
                AsciiRule::Slow => {}
            }
        }
        if self.user_first_bytes[b0 as usize] {
            let best = self
                .user_symbols
                .iter()
                .filter(|s| input.starts_with(s))
                .map(|s| s.len())
                .max();
            if let Some(len) = best {
                return (&input[..len], len);
            }
        }
        if let Some(t) = &self.trie {
            if let Some((v, len)) = t.longest_prefix(input) {
                return (self.replacement(v), len);
            }
        }
        // No rule: copy one UTF-8 character (the input is valid UTF-8).
        let len = utf8_len(b0).min(input.len());
        (&input[..len], len)
    }

    /// Normalizes `text` into `out` (cleared first), as sentencepiece's `Normalizer::Normalize`.
    pub fn normalize_into(&self, text: &str, out: &mut Vec<u8>) {
        out.clear();
        let mut input = text.as_bytes();
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (sp, n) = self.normalize_prefix(input);
                if sp != b" " {
                    break;
                }
                input = &input[n..];
            }
        }
        if input.is_empty() {
            return;
        }
        out.reserve(input.len() + input.len() / 2 + 8);
        let space: &[u8] = if self.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        if self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut sp, n) = self.normalize_prefix(input);
            if is_prev_space {
                while let [b' ', rest @ ..] = sp {
                    sp = rest;
                }
            }
            if !sp.is_empty() {
                if self.escape_whitespaces {
                    for &c in sp {
                        if c == b' ' {
                            out.extend_from_slice(space);
                        } else {
                            out.push(c);
                        }
                    }
                } else {
                    out.extend_from_slice(sp);
                }
                is_prev_space = sp.last() == Some(&b' ');
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
    }
}

/// Length of the UTF-8 character starting with byte `b`, as sentencepiece's `OneCharLen`.
#[inline]
pub fn utf8_len(b: u8) -> usize {
    const TABLE: [u8; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    TABLE[(b >> 4) as usize] as usize
}
