//! `TarGuard`: follows a tar stream's headers underneath the tar reader and stops the read
//! when an extension record (pax header, GNU long name, GNU long link) is over a limit.
//!
//! The tar crate reads each of those records whole into memory before it hands out the
//! entry they describe, with no bound: a 4 MB gzip layer whose pax header inflates to
//! gigabytes took gigabytes of memory (issue 12). The guard sees every header block as it
//! passes, before the tar crate asks for the record's bytes, and fails the read instead.
//! It follows the framing the same way the tar crate does (a local pax header's `size`
//! applies to the next non-extension entry); where it cannot follow (GNU sparse files,
//! which the view refuses anyway, or a header the tar crate will reject) it stops watching
//! and lets the tar reader report the problem.

use std::io::{self, Read};

const BLOCK: u64 = 512;

pub(crate) struct TarGuard<R> {
    inner: R,
    limit: u64,
    /// Bytes passed through so far.
    pos: u64,
    /// Where the next header starts; `None` once the guard has stopped following.
    next: Option<u64>,
    header: [u8; BLOCK as usize],
    filled: usize,
    /// The local pax record being passed through: where its data ends, and its bytes.
    pax: Option<(u64, Vec<u8>)>,
    /// `size` from the last local pax record, for the next non-extension entry.
    pax_size: Option<u64>,
}

impl<R> TarGuard<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        TarGuard {
            inner,
            limit,
            pos: 0,
            next: Some(0),
            header: [0; BLOCK as usize],
            filled: 0,
            pax: None,
            pax_size: None,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let Some(next) = self.next else {
                self.pos += bytes.len() as u64;
                return Ok(());
            };
            if self.pos < next {
                // Entry data (or padding): collect it if it is a pax record.
                let take = (next - self.pos).min(bytes.len() as u64) as usize;
                if let Some((end, buf)) = &mut self.pax {
                    let data = (end.saturating_sub(self.pos) as usize).min(take);
                    buf.extend_from_slice(&bytes[..data]);
                }
                self.pos += take as u64;
                bytes = &bytes[take..];
                continue;
            }
            let take = (BLOCK as usize - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            self.pos += take as u64;
            bytes = &bytes[take..];
            if self.filled == BLOCK as usize {
                self.filled = 0;
                self.on_header()?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        let at = self.pos - BLOCK;
        if let Some((_, buf)) = self.pax.take() {
            self.pax_size = pax_size(&buf);
        }
        if self.header.iter().all(|&b| b == 0) {
            // The end of the archive: the tar reader stops here.
            self.next = None;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&self.header);
        let ty = h.entry_type();
        let Ok(mut size) = h.entry_size() else {
            self.next = None;
            return Ok(());
        };
        // The tar crate treats these as extensions only in ustar/GNU headers; in an old
        // header it hands them out as entries, and reading their pax records (which the view
        // does for every entry) reads them whole just the same: the limit holds for both.
        let recognised = h.as_ustar().is_some() || h.as_gnu().is_some();
        let what = if ty.is_pax_local_extensions() {
            Some("pax extended header")
        } else if ty.is_gnu_longname() {
            Some("GNU long name record")
        } else if ty.is_gnu_longlink() {
            Some("GNU long link record")
        } else {
            None
        };
        if let Some(what) = what {
            if size > self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the {what} at offset {at} is {size} bytes, more than the limit of {} \
                         (minify reads it whole)",
                        self.limit
                    ),
                ));
            }
            if recognised && ty.is_pax_local_extensions() {
                self.pax = Some((self.pos + size, Vec::with_capacity(size as usize)));
            } else if !recognised
                && !ty.is_pax_global_extensions()
                && let Some(s) = self.pax_size.take()
            {
                // An entry for the tar crate: a pending pax size applies to it.
                size = s;
            }
        } else if ty.is_gnu_sparse() {
            // Its extension blocks change the framing; the view refuses sparse entries.
            self.next = None;
            return Ok(());
        } else if !ty.is_pax_global_extensions()
            && let Some(s) = self.pax_size.take()
        {
            size = s;
        }
        let next = size
            .checked_add(BLOCK - 1)
            .map(|s| s & !(BLOCK - 1))
            .and_then(|s| self.pos.checked_add(s));
        // An overflowing size: the tar reader reports it.
        self.next = next;
        Ok(())
    }
}

/// The `size` record of a pax header, parsed as the tar crate parses it.
fn pax_size(records: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(records) {
        let ext = ext.ok()?;
        if ext.key() == Ok("size") {
            return ext.value().ok()?.parse().ok();
        }
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.observe(&buf[..n])?;
        Ok(n)
    }
}
