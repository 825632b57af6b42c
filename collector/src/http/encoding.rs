//! Request body decompression by `Content-Encoding` (identity, gzip, zstd), with a cap on the
//! decompressed size so that a small compressed body cannot expand into a memory bomb.

use std::io::Read;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("unsupported content-encoding {0:?} (use gzip, zstd or none)")]
    Unsupported(String),
    #[error("decompressed body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("cannot decompress the {encoding} body: {message}")]
    Corrupt {
        encoding: &'static str,
        message: String,
    },
}

/// The body as sent, decompressed to at most `limit` bytes.
pub fn decode(
    content_encoding: Option<&str>,
    body: Vec<u8>,
    limit: usize,
) -> Result<Vec<u8>, EncodingError> {
    let encoding = content_encoding.map(|value| value.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") | Some("x-gzip") => {
            read_capped("gzip", flate2::read::GzDecoder::new(&body[..]), limit)
        }
        Some("zstd") => {
            let decoder = zstd::stream::read::Decoder::new(&body[..]).map_err(|error| {
                EncodingError::Corrupt {
                    encoding: "zstd",
                    message: error.to_string(),
                }
            })?;
            read_capped("zstd", decoder, limit)
        }
        Some(other) => Err(EncodingError::Unsupported(other.chars().take(40).collect())),
    }
}

fn read_capped(
    encoding: &'static str,
    reader: impl Read,
    limit: usize,
) -> Result<Vec<u8>, EncodingError> {
    let mut out = Vec::new();
    // One byte over the limit tells "too large" from "exactly at the limit".
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|error| EncodingError::Corrupt {
            encoding,
            message: error.to_string(),
        })?;
    if out.len() > limit {
        return Err(EncodingError::TooLarge(limit));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn check(
        encoding: Option<&str>,
        body: Vec<u8>,
        limit: usize,
        expected: Result<&[u8], EncodingError>,
    ) {
        assert_eq!(
            decode(encoding, body, limit)
                .as_deref()
                .map_err(Clone::clone),
            expected
        );
    }

    #[test]
    fn bodies_are_decoded_within_the_cap() {
        let text = b"{\"reports\":[]}";
        check(None, text.to_vec(), 100, Ok(text));
        check(Some("identity"), text.to_vec(), 100, Ok(text));
        check(Some("GZIP"), gzip(text), 100, Ok(text));
        check(
            Some("zstd"),
            zstd::encode_all(&text[..], 3).unwrap(),
            100,
            Ok(text),
        );
        check(Some("gzip"), gzip(text), text.len(), Ok(text));
        check(
            Some("gzip"),
            gzip(text),
            text.len() - 1,
            Err(EncodingError::TooLarge(text.len() - 1)),
        );
        // A bomb: 10 MB of zeros compress to about 10 kB.
        let bomb = gzip(&vec![0u8; 10_000_000]);
        assert!(bomb.len() < 20_000);
        check(
            Some("gzip"),
            bomb,
            1_000_000,
            Err(EncodingError::TooLarge(1_000_000)),
        );
        check(
            Some("br"),
            text.to_vec(),
            100,
            Err(EncodingError::Unsupported("br".into())),
        );
        assert!(matches!(
            decode(Some("gzip"), b"not gzip".to_vec(), 100),
            Err(EncodingError::Corrupt {
                encoding: "gzip",
                ..
            })
        ));
        assert!(matches!(
            decode(Some("zstd"), b"not zstd".to_vec(), 100),
            Err(EncodingError::Corrupt {
                encoding: "zstd",
                ..
            })
        ));
    }
}
