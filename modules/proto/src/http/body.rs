//! Request bodies (read under a hard limit, then decompressed under the same
//! limit), response compression, and running CPU-heavy steps off the async
//! workers.

use std::io::Read;

use axum::body::{to_bytes, Body};
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use http_body_util::LengthLimitError;

use crate::body_guard::{BodyError, BodyLease};
use crate::ServiceError;

/// Work on more bytes than this runs on tokio's blocking pool, not on an async
/// worker: parsing, converting or compressing it takes long enough to stall
/// other requests.
const OFFLOAD_BYTES: usize = 256 * 1024;

/// A content coding of a body: HTTP's `gzip` or `deflate` (zlib framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Coding {
    /// `gzip` (RFC 1952).
    Gzip,
    /// `deflate`: a zlib stream (RFC 1950); a bare deflate stream is accepted too.
    Deflate,
}

impl Coding {
    /// The token of this coding in `Content-Encoding`.
    pub(super) fn token(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
        }
    }
}

fn too_large(limit: usize) -> ServiceError {
    ServiceError::new(
        crate::ErrorCode::PayloadTooLarge,
        format!("request body exceeds the limit of {limit} bytes"),
    )
}

/// Reads the whole request body, refusing more than `limit` bytes (413), and
/// decodes its `Content-Encoding` (gzip or deflate) with the same limit on the
/// decoded size, reserving the decoded bytes in the request's share of the
/// process's body budget (`lease`; 503 when it cannot hold them). A corrupt
/// stream or an unknown coding is 400; so is a body that arrives too slowly,
/// and one the budget ran out for while it came is 503
/// ([`crate::body_guard`]).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    lease: Option<BodyLease>,
) -> Result<Bytes, ServiceError> {
    let coding = content_coding(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    let raw = to_bytes(body, limit).await.map_err(|err| {
        let over_limit =
            std::error::Error::source(&err).is_some_and(|source| source.is::<LengthLimitError>());
        if over_limit {
            too_large(limit)
        } else if let Some(guarded) = BodyError::find(&err) {
            guarded.to_service_error()
        } else {
            ServiceError::bad_request(format!("failed to read the request body: {err}"))
        }
    })?;
    match coding {
        None => Ok(raw),
        // Inflating may produce up to `limit` bytes from a small body: always
        // run it on the blocking pool.
        Some(coding) => tokio::task::spawn_blocking(move || {
            decompress_within(coding, &raw, limit, lease.as_ref())
        })
        .await
        .map_err(|err| ServiceError::internal(format!("decompression task failed: {err}")))?,
    }
}

/// A request body read whole by [`read_body`]: under the server's body
/// limit, with its inflated bytes in the request's share of the budget.
pub(super) struct WholeBody(pub Bytes);

impl axum::extract::FromRequest<super::SharedState> for WholeBody {
    type Rejection = ServiceError;

    async fn from_request(
        request: axum::extract::Request,
        state: &super::SharedState,
    ) -> Result<Self, ServiceError> {
        let (parts, body) = request.into_parts();
        let lease = parts.extensions.get::<BodyLease>().cloned();
        read_body(&parts.headers, body, state.options.max_body_bytes, lease)
            .await
            .map(WholeBody)
    }
}

/// Decodes a body already read whole by its `Content-Encoding` (none,
/// `identity`, gzip or deflate), as [`read_body`] does after reading: an
/// unknown coding or a corrupt stream is 400, more than `limit` decoded
/// bytes 413. The entry point of the fuzz targets in `fuzz/`.
pub fn decode_body(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, ServiceError> {
    match content_coding(headers)? {
        None => Ok(raw),
        Some(coding) => decompress(coding, &raw, limit),
    }
}

/// The body's `Content-Encoding`: none (or `identity`), gzip or deflate.
fn content_coding(headers: &HeaderMap) -> Result<Option<Coding>, ServiceError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(None),
        "gzip" | "x-gzip" => Ok(Some(Coding::Gzip)),
        "deflate" => Ok(Some(Coding::Deflate)),
        _ => Err(ServiceError::bad_request(format!(
            "unsupported Content-Encoding '{}': use gzip or deflate",
            String::from_utf8_lossy(value.as_bytes())
        ))),
    }
}

/// Decodes `data`, failing with 413 once the output passes `limit` bytes and
/// with 400 when the stream is corrupt.
pub(super) fn decompress(coding: Coding, data: &[u8], limit: usize) -> Result<Bytes, ServiceError> {
    decompress_within(coding, data, limit, None)
}

/// Inflated bytes read, then reserved in the body budget, at a time.
const INFLATE_STEP: u64 = 64 * 1024;

/// [`decompress`], reserving each step of output in `lease` before the
/// next step and before keeping it (503 when the budget cannot hold it).
/// A step inflates straight into the output's spare capacity.
fn decompress_within(
    coding: Coding,
    data: &[u8],
    limit: usize,
    lease: Option<&BodyLease>,
) -> Result<Bytes, ServiceError> {
    let cap = (limit as u64).saturating_add(1);
    let mut decoder: Box<dyn Read + '_> = match coding {
        Coding::Gzip => Box::new(MultiGzDecoder::new(data).take(cap)),
        Coding::Deflate if looks_like_zlib(data) => Box::new(ZlibDecoder::new(data).take(cap)),
        Coding::Deflate => Box::new(DeflateDecoder::new(data).take(cap)),
    };
    let mut out = Vec::new();
    let read = loop {
        let before = out.len();
        // Retries `Interrupted` itself; on an error, what it read before
        // the error is in `out` too, and counted like the rest.
        let step = (&mut decoder).take(INFLATE_STEP).read_to_end(&mut out);
        if let Some(lease) = lease {
            lease.reserve((out.len() - before) as u64)?;
        }
        match step {
            // Short of a whole step: the stream (or the cap) ended.
            Ok(n) if (n as u64) < INFLATE_STEP => break Ok(()),
            Ok(_) => {}
            Err(err) => break Err(err),
        }
    };
    if out.len() > limit {
        return Err(ServiceError::new(
            crate::ErrorCode::PayloadTooLarge,
            format!("request body exceeds the limit of {limit} bytes once decompressed"),
        ));
    }
    read.map_err(|err| {
        ServiceError::bad_request(format!("corrupt {} request body: {err}", coding.token()))
    })?;
    Ok(Bytes::from(out))
}

/// Whether `data` starts with a valid zlib header (RFC 1950: method 8, and the
/// first two bytes a multiple of 31).
fn looks_like_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// The coding to compress a response with, from the request's
/// `Accept-Encoding`: gzip when accepted, else deflate when accepted, else none.
/// A coding with `q=0` is not accepted; `*` is ignored (identity is fine).
pub(super) fn accepted_coding(headers: &HeaderMap) -> Option<Coding> {
    let mut gzip = false;
    let mut deflate = false;
    for value in headers.get_all(header::ACCEPT_ENCODING) {
        let Ok(text) = value.to_str() else { continue };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    == Some(0.0)
            });
            if refused {
                continue;
            }
            match token.as_str() {
                "gzip" | "x-gzip" => gzip = true,
                "deflate" => deflate = true,
                _ => {}
            }
        }
    }
    if gzip {
        Some(Coding::Gzip)
    } else if deflate {
        Some(Coding::Deflate)
    } else {
        None
    }
}

/// Compresses a response body (fast level: a response is compressed once and
/// the CPU matters more than the last few percent of size).
pub(super) fn compress(coding: Coding, data: &[u8]) -> Result<Vec<u8>, ServiceError> {
    use std::io::Write;
    let failed = |err: std::io::Error| {
        ServiceError::internal(format!("failed to compress the response: {err}"))
    };
    let out = Vec::with_capacity(data.len() / 2 + 64);
    match coding {
        Coding::Gzip => {
            let mut enc = GzEncoder::new(out, Compression::fast());
            enc.write_all(data).map_err(failed)?;
            enc.finish().map_err(failed)
        }
        Coding::Deflate => {
            let mut enc = ZlibEncoder::new(out, Compression::fast());
            enc.write_all(data).map_err(failed)?;
            enc.finish().map_err(failed)
        }
    }
}

/// Runs `work` inline when it concerns fewer than [`OFFLOAD_BYTES`] bytes, and
/// on tokio's blocking pool otherwise, so no async worker is held up.
pub(super) async fn offload<T, F>(bytes: usize, work: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ServiceError> + Send + 'static,
{
    if bytes < OFFLOAD_BYTES {
        return work();
    }
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| ServiceError::internal(format!("worker task failed: {err}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use axum::http::HeaderValue;

    fn gzip(data: &[u8]) -> Vec<u8> {
        compress(Coding::Gzip, data).unwrap()
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[tokio::test]
    async fn plain_body_is_read_up_to_the_limit() {
        let got = read_body(&HeaderMap::new(), Body::from(vec![7u8; 10]), 10, None)
            .await
            .unwrap();
        assert_eq!(&got[..], &[7u8; 10]);
        let err = read_body(&HeaderMap::new(), Body::from(vec![7u8; 11]), 10, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
        assert_eq!(err.message, "request body exceeds the limit of 10 bytes");
    }

    #[tokio::test]
    async fn declared_length_over_the_limit_is_refused_early() {
        let h = headers(&[(header::CONTENT_LENGTH, "1000")]);
        let err = read_body(&h, Body::from(vec![0u8; 3]), 10, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge);
    }

    #[tokio::test]
    async fn gzip_and_deflate_bodies_are_decoded() {
        let data = b"hello hello hello hello".to_vec();
        let h = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        assert_eq!(
            &read_body(&h, Body::from(gzip(&data)), 100, None)
                .await
                .unwrap()[..],
            &data[..]
        );
        let h = headers(&[(header::CONTENT_ENCODING, "deflate")]);
        let zlib = compress(Coding::Deflate, &data).unwrap();
        assert_eq!(
            &read_body(&h, Body::from(zlib), 100, None).await.unwrap()[..],
            &data[..]
        );
        // A bare deflate stream (no zlib header) is accepted as well.
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        std::io::Write::write_all(&mut raw, &data).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            &read_body(&h, Body::from(raw), 100, None).await.unwrap()[..],
            &data[..]
        );
    }

    #[tokio::test]
    async fn decompressed_size_is_limited_too() {
        let data = vec![0u8; 10_000];
        let packed = gzip(&data);
        assert!(packed.len() < 100);
        let h = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        let err = read_body(&h, Body::from(packed.clone()), 9_999, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err}");
        assert_eq!(
            read_body(&h, Body::from(packed), 10_000, None)
                .await
                .unwrap()
                .len(),
            10_000
        );
    }

    #[tokio::test]
    async fn corrupt_stream_and_unknown_coding_are_bad_requests() {
        let h = headers(&[(header::CONTENT_ENCODING, "gzip")]);
        let err = read_body(&h, Body::from(b"not gzip at all".to_vec()), 100, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        let mut truncated = gzip(b"some data that is long enough to matter");
        truncated.truncate(truncated.len() - 6);
        let err = read_body(&h, Body::from(truncated), 100, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        let h = headers(&[(header::CONTENT_ENCODING, "br")]);
        let err = read_body(&h, Body::from(b"x".to_vec()), 100, None)
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::BadRequest);
        assert!(err.message.contains("br"), "{err}");
    }

    #[test]
    fn accept_encoding_negotiation() {
        let pick = |v: &str| accepted_coding(&headers(&[(header::ACCEPT_ENCODING, v)]));
        assert_eq!(pick("gzip"), Some(Coding::Gzip));
        assert_eq!(pick("deflate"), Some(Coding::Deflate));
        assert_eq!(pick("deflate, gzip;q=0.5"), Some(Coding::Gzip));
        assert_eq!(pick("gzip;q=0, deflate"), Some(Coding::Deflate));
        assert_eq!(pick("br, *"), None);
        assert_eq!(pick("identity"), None);
        assert_eq!(accepted_coding(&HeaderMap::new()), None);
    }

    #[test]
    fn compression_round_trips() {
        let data: Vec<u8> = (0..5000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for coding in [Coding::Gzip, Coding::Deflate] {
            let packed = compress(coding, &data).unwrap();
            assert_eq!(
                &decompress(coding, &packed, data.len()).unwrap()[..],
                &data[..]
            );
        }
    }

    /// Inflating over many steps: the exact bytes, each step counted in the
    /// lease (the body's budget), refused with 503 once it cannot hold more.
    #[tokio::test]
    async fn inflated_steps_are_exact_and_counted_in_the_lease() {
        use crate::body_guard::{BodyBudget, BodyGuard, BodyPace};
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        assert!(data.len() as u64 > 6 * INFLATE_STEP);
        let packed = gzip(&data);
        let lease = |budget: &std::sync::Arc<BodyBudget>| {
            let pace = BodyPace {
                grace: std::time::Duration::from_secs(60),
                min_bytes_per_sec: 1,
            };
            let request = http::Request::new(());
            BodyGuard::new(budget.clone(), pace)
                .admit(request)
                .unwrap()
                .1
        };
        let budget = BodyBudget::new(1 << 20, 1 << 20);
        let held = lease(&budget);
        let got = decompress_within(Coding::Gzip, &packed, data.len(), Some(&held)).unwrap();
        assert_eq!(&got[..], &data[..]);
        assert_eq!(
            (1u64 << 20) - budget.available_bytes(),
            (data.len() as u64).div_ceil(1024) * 1024
        );
        // Past the limit: 413 as before, however the steps fall.
        let err = decompress_within(Coding::Gzip, &packed, data.len() - 1, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::PayloadTooLarge, "{err}");
        // A budget that holds half of it: 503.
        let budget = BodyBudget::new(data.len() as u64 / 2, 1 << 20);
        let held = lease(&budget);
        let err = decompress_within(Coding::Gzip, &packed, data.len(), Some(&held)).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    }
}
