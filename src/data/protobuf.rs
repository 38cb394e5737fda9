//! A minimal protobuf wire-format reader: just enough to walk a SentencePiece `ModelProto`.

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug)]
pub enum WireValue<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    #[allow(dead_code)]
    Fixed64(u64),
    /// Wire type 2: bytes, string or embedded message.
    Bytes(&'a [u8]),
    /// Wire type 5 (e.g. a `float`).
    Fixed32(u32),
}

/// Iterates over `(field number, value)` pairs of one message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over the encoded message `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at byte {}", self.pos))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(format!("varint longer than 10 bytes at byte {}", self.pos))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| format!("field of {n} bytes runs past the end at byte {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, WireValue<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = (key >> 3) as u32;
        let value = match key & 7 {
            0 => WireValue::Varint(self.varint()?),
            1 => WireValue::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().unwrap_or([0; 8]),
            )),
            2 => {
                let n = self.varint()? as usize;
                WireValue::Bytes(self.take(n)?)
            }
            5 => WireValue::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().unwrap_or([0; 4]),
            )),
            t => return Err(format!("unsupported wire type {t} (field {field})")),
        };
        Ok(Some((field, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_rejects_truncation() {
        // field 1 varint 150, field 2 bytes "hi", field 3 fixed32 1.5f
        let mut msg = vec![0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1d];
        msg.extend(1.5f32.to_le_bytes());
        let mut r = Reader::new(&msg);
        assert!(matches!(
            r.next_field().unwrap(),
            Some((1, WireValue::Varint(150)))
        ));
        assert!(matches!(
            r.next_field().unwrap(),
            Some((2, WireValue::Bytes(b"hi")))
        ));
        match r.next_field().unwrap() {
            Some((3, WireValue::Fixed32(b))) => assert_eq!(f32::from_bits(b), 1.5),
            other => panic!("{other:?}"),
        }
        assert!(r.next_field().unwrap().is_none());
        assert!(Reader::new(&msg[..6]).next_field().is_ok());
        let mut cut = Reader::new(&msg[..6]);
        cut.next_field().unwrap();
        assert!(cut.next_field().is_err());
    }
}
