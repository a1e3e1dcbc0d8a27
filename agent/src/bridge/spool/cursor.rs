//! The ack cursor: `acked seq u64 | acked position u64 | crc32 u32`, replaced atomically (write, fsync,
//! rename).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// The cursor in `dir`; `(0, 0)` when there is none yet.
pub(super) fn read(dir: &Path) -> io::Result<(u64, u64)> {
    match fs::read(dir.join("cursor")) {
        Ok(b) if b.len() == 20 => {
            let crc = u32::from_le_bytes(b[16..20].try_into().unwrap_or_default());
            if crc32fast::hash(&b[..16]) != crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "spool cursor file is corrupt",
                ));
            }
            let seq = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
            let pos = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
            Ok((seq, pos))
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "spool cursor file has the wrong size",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// Replaces the cursor in `dir`.
pub(super) fn write(dir: &Path, seq: u64, pos: u64) -> io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&pos.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join("cursor"))?;
    Ok(())
}
