//! Decoding one record's payload (zstd or raw) back into its chunk, checked against the record
//! header ([PACK-4]). Shared by the reader and the scanner; the header's bytes are
//! `format::pack`'s.

use std::cell::RefCell;

use crate::format::pack::{Encoding, RecordHeader};
use crate::ids::ChunkId;

thread_local! {
    // A zstd decompression context is ~100 KiB and costly to set up; one per thread, reused.
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Decode a crc-checked payload and check it is exactly `raw_len` bytes hashing to the chunk id
/// ([PACK-4]). `Err(reason)` otherwise.
pub(crate) fn decode_payload(h: &RecordHeader, payload: &[u8]) -> Result<Vec<u8>, String> {
    let data = match h.encoding {
        Encoding::Raw => payload.to_vec(),
        Encoding::Zstd => DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| format!("cannot create a zstd context: {e}"))?,
                );
            }
            let d = slot.as_mut().ok_or("zstd context missing")?;
            // Capacity bounds the output: a damaged frame cannot make us allocate more than raw_len.
            let mut out = Vec::with_capacity(h.raw_len as usize);
            d.decompress_to_buffer(payload, &mut out)
                .map_err(|e| format!("zstd payload does not decode to {} bytes: {e}", h.raw_len))?;
            Ok::<_, String>(out)
        })?,
    };
    if data.len() != h.raw_len as usize {
        return Err(format!(
            "payload decodes to {} bytes, header says {}",
            data.len(),
            h.raw_len
        ));
    }
    let got = ChunkId::of(&data);
    if got != h.chunk_id {
        return Err(format!("bytes hash to {got}, record says {}", h.chunk_id));
    }
    Ok(data)
}
