//! A small `multipart/form-data` reader (RFC 7578) for the predict API: the
//! whole body is in memory already (and under the body limit), so each part
//! is a slice of it.

use bytes::Bytes;

use crate::error::GatewayError;

/// One form field.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// The `name` of its `Content-Disposition`.
    pub name: String,
    /// Its content.
    pub data: Bytes,
}

fn bad(message: &str) -> GatewayError {
    GatewayError::BadRequest(format!("invalid multipart body: {message}"))
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The boundary parameter of a `multipart/form-data` content type.
fn boundary(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"'))
    })
}

fn field_name(headers: &str) -> Option<String> {
    let disposition = headers.split("\r\n").find(|line| {
        line.to_ascii_lowercase()
            .starts_with("content-disposition:")
    })?;
    disposition.split(';').skip(1).find_map(|param| {
        let (key, value) = param.trim().split_once('=')?;
        (key.trim() == "name").then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Splits `body` into its parts.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, GatewayError> {
    let boundary = boundary(content_type)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| bad("no boundary in Content-Type"))?;
    let body = Bytes::copy_from_slice(body);
    let delimiter = format!("--{boundary}");
    let mut at = find(&body, delimiter.as_bytes(), 0).ok_or_else(|| bad("no opening boundary"))?
        + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            return Ok(parts);
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err(bad("boundary not followed by CRLF"));
        }
        let head_start = at + 2;
        let head_end =
            find(&body, b"\r\n\r\n", head_start).ok_or_else(|| bad("part without headers"))?;
        let headers = std::str::from_utf8(&body[head_start..head_end])
            .map_err(|_| bad("part headers are not UTF-8"))?;
        let name =
            field_name(headers).ok_or_else(|| bad("part without a Content-Disposition name"))?;
        let data_start = head_end + 4;
        let closing = format!("\r\n{delimiter}");
        let data_end =
            find(&body, closing.as_bytes(), data_start).ok_or_else(|| bad("unterminated part"))?;
        parts.push(Part {
            name,
            data: body.slice(data_start..data_end),
        });
        at = data_end + closing.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_split() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x00\x01\r\n--XyZ\r\nContent-Disposition: form-data; name=\"text\"\r\n\r\nhello\r\n--XyZ--\r\n";
        let parts = parse_multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].name, "image");
        assert_eq!(&parts[0].data[..], b"\x89PNG\r\n\x00\x01");
        assert_eq!(
            (parts[1].name.as_str(), &parts[1].data[..]),
            ("text", &b"hello"[..])
        );
    }

    #[test]
    fn malformed_bodies_are_400() {
        for (ct, body) in [
            ("multipart/form-data", &b"--a\r\n"[..]),
            ("multipart/form-data; boundary=a", b"nothing"),
            (
                "multipart/form-data; boundary=a",
                b"--a\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nno end",
            ),
            (
                "multipart/form-data; boundary=a",
                b"--a\r\nX: y\r\n\r\nv\r\n--a--",
            ),
        ] {
            assert!(parse_multipart(ct, body).is_err(), "{body:?}");
        }
    }
}
