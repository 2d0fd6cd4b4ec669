//! Readers and writers that hash and count what passes through them, so a layer is digested
//! in the same single pass that indexes or writes it.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::Digest;

/// Hashes and counts every byte read through it.
pub(crate) struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Read the rest of the stream (a tar reader stops at the end-of-archive blocks, but the
    /// digest covers every byte) and return the digest and byte count.
    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count, self.inner))
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Hashes and counts every byte written through it.
pub(crate) struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(mut self) -> io::Result<(Digest, u64, W)> {
        self.inner.flush()?;
        Ok((Digest::from_hasher(self.hasher), self.count, self.inner))
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader over `len` bytes of a file starting at `offset`, by positioned reads, so many
/// readers can share one open file.
pub(crate) struct RangeReader<'a> {
    file: &'a std::fs::File,
    pos: u64,
    end: u64,
}

impl<'a> RangeReader<'a> {
    pub(crate) fn new(file: &'a std::fs::File, offset: u64, len: u64) -> Self {
        RangeReader {
            file,
            pos: offset,
            end: offset + len,
        }
    }
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt as _;
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file ends {} bytes early", self.end - self.pos),
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Like [`HashReader`], but the running hash stays reachable from outside
/// ([`SharedHash`]) while the reader itself is owned by a decoder chain.
pub(crate) struct SharedHashReader<R> {
    inner: R,
    state: std::rc::Rc<std::cell::RefCell<(Sha256, u64)>>,
}

/// The outside handle of a [`SharedHashReader`].
pub(crate) struct SharedHash(std::rc::Rc<std::cell::RefCell<(Sha256, u64)>>);

impl<R: Read> SharedHashReader<R> {
    pub(crate) fn new(inner: R) -> (Self, SharedHash) {
        let state = std::rc::Rc::new(std::cell::RefCell::new((Sha256::new(), 0)));
        (
            SharedHashReader {
                inner,
                state: state.clone(),
            },
            SharedHash(state),
        )
    }
}

impl<R: Read> Read for SharedHashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

impl SharedHash {
    /// Bytes hashed so far.
    pub(crate) fn count(&self) -> u64 {
        self.0.borrow().1
    }

    /// Hash `rest` too (what the decoder left unread) and return digest and total count.
    pub(crate) fn finish(self, rest: impl Read) -> io::Result<(Digest, u64)> {
        let mut rest = rest;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = rest.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let mut s = self.0.borrow_mut();
            s.0.update(&buf[..n]);
            s.1 += n as u64;
        }
        let (h, n) = self.0.replace((Sha256::new(), 0));
        Ok((Digest::from_hasher(h), n))
    }
}
