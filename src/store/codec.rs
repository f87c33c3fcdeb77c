//! Versioned value encoding for the store: a version byte, then fixed-width big-endian integers and
//! `u32`-length-prefixed byte strings. Decoding never panics: every read is bounds-checked and a
//! short, long or malformed value is `StoreError::Corrupt`.

use super::StoreError;

/// Builds one encoded value.
pub(crate) struct Enc(Vec<u8>);

impl Enc {
    pub(crate) fn new(version: u8) -> Enc {
        Enc(vec![version])
    }
    pub(crate) fn u8(mut self, v: u8) -> Enc {
        self.0.push(v);
        self
    }
    pub(crate) fn u32(mut self, v: u32) -> Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub(crate) fn u64(mut self, v: u64) -> Enc {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    /// Fixed-width bytes (the reader must know the width).
    pub(crate) fn fixed(mut self, v: &[u8]) -> Enc {
        self.0.extend_from_slice(v);
        self
    }
    /// Length-prefixed bytes. Callers keep values far below 4 GiB (the lengths of names, origins
    /// and lines are capped before they get here); a longer value is cut at `u32::MAX`, which the
    /// reader then reports as corrupt rather than misreading.
    pub(crate) fn bytes(self, v: &[u8]) -> Enc {
        let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
        self.u32(len).fixed(v)
    }
    pub(crate) fn str(self, v: &str) -> Enc {
        self.bytes(v.as_bytes())
    }
    pub(crate) fn opt_u32(self, v: Option<u32>) -> Enc {
        match v {
            Some(n) => self.u8(1).u32(n),
            None => self.u8(0),
        }
    }
    pub(crate) fn bool(self, v: bool) -> Enc {
        self.u8(u8::from(v))
    }
    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads one encoded value. Each method names what it reads, for the error.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Dec<'a> {
    /// Checks the version byte. `what` names the value in errors ("token record").
    pub(crate) fn new(
        buf: &'a [u8],
        version: u8,
        what: &'static str,
    ) -> Result<Dec<'a>, StoreError> {
        match buf.split_first() {
            Some((&v, rest)) if v == version => Ok(Dec { buf: rest, what }),
            _ => Err(StoreError::Corrupt(what)),
        }
    }
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.buf.len() < n {
            return Err(StoreError::Corrupt(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let len = usize::try_from(self.u32()?).map_err(|_| StoreError::Corrupt(self.what))?;
        self.take(len)
    }
    pub(crate) fn string(&mut self) -> Result<String, StoreError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| StoreError::Corrupt(self.what))
    }
    pub(crate) fn opt_u32(&mut self) -> Result<Option<u32>, StoreError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u32()?)),
            _ => Err(StoreError::Corrupt(self.what)),
        }
    }
    pub(crate) fn bool(&mut self) -> Result<bool, StoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(StoreError::Corrupt(self.what)),
        }
    }
    /// Everything not yet read.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }
    /// Trailing bytes are corruption too.
    pub(crate) fn finish(self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(self.what))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_field_types() {
        let v = Enc::new(7)
            .u8(3)
            .u32(70000)
            .u64(u64::MAX - 1)
            .str("héllo")
            .opt_u32(Some(5))
            .opt_u32(None)
            .bool(true)
            .fixed(&[9; 4])
            .finish();
        let mut d = Dec::new(&v, 7, "test").unwrap();
        assert_eq!(d.u8().unwrap(), 3);
        assert_eq!(d.u32().unwrap(), 70000);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.string().unwrap(), "héllo");
        assert_eq!(d.opt_u32().unwrap(), Some(5));
        assert_eq!(d.opt_u32().unwrap(), None);
        assert!(d.bool().unwrap());
        assert_eq!(d.array::<4>().unwrap(), [9; 4]);
        d.finish().unwrap();
    }

    #[test]
    fn rejects_wrong_version_and_empty_value() {
        assert!(matches!(
            Dec::new(&[2, 0], 1, "x"),
            Err(StoreError::Corrupt("x"))
        ));
        assert!(matches!(
            Dec::new(&[], 1, "x"),
            Err(StoreError::Corrupt("x"))
        ));
    }

    #[test]
    fn rejects_length_prefix_beyond_value() {
        let v = Enc::new(1).u32(1000).fixed(b"short").finish();
        let mut d = Dec::new(&v, 1, "x").unwrap();
        assert!(matches!(d.bytes(), Err(StoreError::Corrupt("x"))));
    }

    #[test]
    fn rejects_truncated_integers_bad_flags_and_trailing_bytes() {
        let mut d = Dec::new(&[1, 0, 0, 1], 1, "x").unwrap();
        assert!(d.u32().is_err());
        let mut d = Dec::new(&[1, 2], 1, "x").unwrap();
        assert!(d.bool().is_err());
        let mut d = Dec::new(&[1, 7], 1, "x").unwrap();
        assert!(d.opt_u32().is_err());
        let d = Dec::new(&[1, 0], 1, "x").unwrap();
        assert!(d.finish().is_err());
        let v = Enc::new(1).bytes(&[0xff, 0xfe]).finish();
        assert!(Dec::new(&v, 1, "x").unwrap().string().is_err());
    }

    #[test]
    fn every_truncation_of_a_value_is_an_error_not_a_panic() {
        let v = Enc::new(1).str("abc").u64(5).opt_u32(Some(1)).finish();
        for cut in 0..v.len() {
            let r = Dec::new(&v[..cut], 1, "x").and_then(|mut d| {
                d.string()?;
                d.u64()?;
                d.opt_u32()?;
                d.finish()
            });
            assert!(r.is_err(), "cut at {cut}");
        }
    }
}
