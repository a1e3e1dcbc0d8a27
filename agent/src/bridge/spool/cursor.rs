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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_round_trips_and_its_layout_is_seq_pos_crc() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()).unwrap(), None, "no cursor yet");
        write(d.path(), 0x0102_0304_0506_0708, 99).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some((0x0102_0304_0506_0708, 99)));
        let b = fs::read(d.path().join("cursor")).unwrap();
        assert_eq!(b.len(), 20);
        assert_eq!(&b[..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&b[8..16], &99u64.to_le_bytes());
        assert_eq!(&b[16..], &crc32fast::hash(&b[..16]).to_le_bytes());
        assert!(!d.path().join("cursor.tmp").exists());
        write(d.path(), 5, 6).unwrap();
        assert_eq!(read(d.path()).unwrap(), Some((5, 6)), "replaced");
    }

    #[test]
    fn a_damaged_short_or_long_cursor_is_no_cursor() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 5, 6).unwrap();
        let good = fs::read(d.path().join("cursor")).unwrap();
        let mut flipped = good.clone();
        flipped[3] ^= 1;
        let mut crc_flipped = good.clone();
        crc_flipped[19] ^= 1;
        let longer = [good.as_slice(), &[0]].concat();
        for (what, bytes) in [
            ("a flipped field", flipped),
            ("a flipped CRC", crc_flipped),
            ("one byte short", good[..19].to_vec()),
            ("one byte long", longer),
            ("empty", vec![]),
        ] {
            fs::write(d.path().join("cursor"), &bytes).unwrap();
            assert_eq!(read(d.path()).unwrap(), None, "{what}");
        }
    }

    #[test]
    fn a_cursor_that_cannot_be_read_is_an_error_not_a_fresh_start() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(d.path().join("cursor")).unwrap();
        assert!(read(d.path()).is_err());
    }
}
