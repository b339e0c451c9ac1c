//! Bounds-checked reading and writing of the binary wire structures.
//!
//! Every wire type is parsed through [`Reader`], so a length field can never send a
//! read past the end of its buffer (the Heartbleed lesson of seed 004).

use crate::ProtocolError;

/// A cursor over untrusted bytes. Every read checks the remaining length first.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn err(&self) -> ProtocolError {
        ProtocolError::malformed(self.what)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(self.err());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], ProtocolError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A u16-length-prefixed byte string.
    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8], ProtocolError> {
        let n = self.u16()? as usize;
        self.take(n)
    }

    /// A u8 count followed by that many u16 values.
    pub(crate) fn u16_list(&mut self) -> Result<Vec<u16>, ProtocolError> {
        let n = self.u8()? as usize;
        (0..n).map(|_| self.u16()).collect()
    }

    pub(crate) fn rest_len(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Fails unless every byte was consumed: trailing bytes are never ignored.
    pub(crate) fn finish(self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.err())
        }
    }
}

/// Appends big-endian fields to a buffer.
pub(crate) trait Writer {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    /// u16 length prefix; callers guarantee `b.len() <= u16::MAX`.
    fn put_bytes16(&mut self, b: &[u8]);
    /// u32 length prefix; used in associated data where fields may be long.
    fn put_bytes32(&mut self, b: &[u8]);
    fn put_u16_list(&mut self, v: &[u16]);
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_bytes16(&mut self, b: &[u8]) {
        debug_assert!(b.len() <= u16::MAX as usize);
        self.put_u16(b.len() as u16);
        self.extend_from_slice(b);
    }
    fn put_bytes32(&mut self, b: &[u8]) {
        self.put_u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.extend_from_slice(b);
    }
    fn put_u16_list(&mut self, v: &[u16]) {
        debug_assert!(v.len() <= u8::MAX as usize);
        self.put_u8(v.len() as u8);
        for x in v {
            self.put_u16(*x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_errors() {
        let mut r = Reader::new(&[0, 5, 1, 2], "t");
        assert!(r.bytes16().is_err());
        let mut r = Reader::new(&[1, 2], "t");
        assert_eq!(r.u16().unwrap(), 0x0102);
        assert!(r.u8().is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut r = Reader::new(&[1, 2, 3], "t");
        r.u16().unwrap();
        assert!(r.finish().is_err());
    }
}
