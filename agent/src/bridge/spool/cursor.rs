//! The ack cursor: `acked seq u64 | acked position u64 | crc32 u32`, replaced atomically (write, fsync,
//! rename); when the disk is too full for a new file, overwritten in place (20 bytes in one sector, and a
//! torn one fails its CRC).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// The cursor in `dir`; `None` when there is none or it cannot be trusted (damaged, short): then
/// everything still on disk is sent again (duplicates, never loss).
pub(super) fn read(dir: &Path) -> io::Result<Option<(u64, u64)>> {
    let b = match fs::read(dir.join("cursor")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ok = b.len() == 20 && crc32fast::hash(&b[..16]).to_le_bytes()[..] == b[16..20];
    if !ok {
        tracing::warn!(
            len = b.len(),
            "spool: the cursor file is damaged; resending everything still in the spool"
        );
        return Ok(None);
    }
    let seq = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default());
    let pos = u64::from_le_bytes(b[8..16].try_into().unwrap_or_default());
    Ok(Some((seq, pos)))
}

/// Replaces the cursor in `dir`.
pub(super) fn write(dir: &Path, seq: u64, pos: u64) -> io::Result<()> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&pos.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&b).to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    let replaced = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(&b)?;
        f.sync_data()?;
        fs::rename(&tmp, dir.join("cursor"))
    })();
    match replaced {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            // A full disk has no block for a new file, but the old cursor's block takes the new one.
            let mut f = match OpenOptions::new().write(true).open(dir.join("cursor")) {
                Ok(f) => f,
                Err(_) => return Err(e),
            };
            f.write_all(&b)?;
            f.sync_data()
        }
    }
}
