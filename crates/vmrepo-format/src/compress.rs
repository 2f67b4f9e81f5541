//! Inflating compressed clusters and grains into buffers of the size the
//! format allows, never more.

/// Inflates DEFLATE data (raw, or with a zlib header when `zlib_header`) into
/// exactly `out_len` bytes: the output must fill the buffer, as QEMU requires;
/// data beyond it is ignored.
pub(crate) fn inflate_exact(input: &[u8], out_len: usize, zlib_header: bool) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; out_len];
    let mut d = flate2::Decompress::new(zlib_header);
    // Each call makes progress or reports an error; bound the turns anyway.
    for _ in 0..64 {
        let in_pos = usize::try_from(d.total_in()).map_err(|_| "input position")?;
        let out_pos = usize::try_from(d.total_out()).map_err(|_| "output position")?;
        if out_pos >= out_len {
            return Ok(out);
        }
        let status = d
            .decompress(
                &input[in_pos.min(input.len())..],
                &mut out[out_pos..],
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| e.to_string())?;
        let new_out = usize::try_from(d.total_out()).map_err(|_| "output position")?;
        match status {
            flate2::Status::StreamEnd => {
                return if new_out == out_len {
                    Ok(out)
                } else {
                    Err(format!("inflated to {new_out} bytes, not {out_len}"))
                };
            }
            _ if new_out == out_pos && usize::try_from(d.total_in()).unwrap_or(0) == in_pos => {
                return if new_out == out_len {
                    Ok(out)
                } else {
                    Err(format!("the data ends after {new_out} of {out_len} bytes"))
                };
            }
            _ => {}
        }
    }
    Err("inflation does not end".into())
}

/// Decompresses a zstd stream into exactly `out_len` bytes.
pub(crate) fn zstd_exact(input: &[u8], out_len: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = vec![0u8; out_len];
    let mut cursor = input;
    let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut cursor).map_err(|e| e.to_string())?;
    let mut filled = 0;
    while filled < out_len {
        match dec.read(&mut out[filled..]) {
            Ok(0) => return Err(format!("the data ends after {filled} of {out_len} bytes")),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

/// Inflates as much as the data holds, up to `out_len` bytes, zeros after:
/// the last grain of a disk may be shorter than a grain.
pub(crate) fn inflate_prefix(input: &[u8], out_len: usize, zlib_header: bool) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; out_len];
    let mut d = flate2::Decompress::new(zlib_header);
    let status = d.decompress(input, &mut out, flate2::FlushDecompress::Finish).map_err(|e| e.to_string())?;
    match status {
        flate2::Status::StreamEnd => Ok(out),
        _ => Err("the compressed data is cut short".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn inflates_exactly_or_fails() {
        let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&data).unwrap();
        let raw = e.finish().unwrap();
        assert_eq!(inflate_exact(&raw, 65536, false).unwrap(), data);
        assert!(inflate_exact(&raw, 70000, false).is_err(), "too short an output is an error");
        assert_eq!(inflate_exact(&raw, 1000, false).unwrap(), data[..1000]);
        assert!(inflate_exact(&raw[..100], 65536, false).is_err());
        assert!(inflate_exact(b"garbage garbage", 512, false).is_err());
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&data).unwrap();
        assert_eq!(inflate_exact(&z.finish().unwrap(), 65536, true).unwrap(), data);
    }

    #[test]
    fn zstd_garbage_is_an_error() {
        assert!(zstd_exact(b"\x28\xb5\x2f\xfdgarbage", 512).is_err());
        assert!(zstd_exact(b"", 512).is_err());
    }
}
