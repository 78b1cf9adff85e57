//! Reading one HTTP/1.1 answer off a connection: the head parsed by
//! `httparse`, the body framed by its length, by chunks or by the end of the
//! connection, informational answers skipped.

use bytes::{Buf, Bytes, BytesMut};
use http::{header, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::http::Answer;

/// Most bytes an answer's head may take.
const MAX_HEAD: usize = 64 * 1024;
/// Most header lines an answer may have.
const MAX_HEADERS: usize = 64;
/// Bytes a read asks for at least.
const READ_CHUNK: usize = 16 * 1024;

/// How an exchange failed.
pub enum Failure {
    /// The connection ended before any byte of an answer.
    ClosedBeforeAnswer,
    /// Anything else.
    Other(String),
}

impl Failure {
    /// A write or read error: the peer's close (reset, broken pipe, end of
    /// stream) is [`Failure::ClosedBeforeAnswer`], anything else is kept as text.
    pub fn closed_or(err: std::io::Error) -> Failure {
        use std::io::ErrorKind::*;
        match err.kind() {
            BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof => {
                Failure::ClosedBeforeAnswer
            }
            _ => Failure::Other(err.to_string()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::ClosedBeforeAnswer => f.write_str("connection closed before an answer"),
            Failure::Other(text) => f.write_str(text),
        }
    }
}

/// What an answer's head says.
struct Head {
    status: StatusCode,
    retry_after: Option<u64>,
    framing: Framing,
    keep_alive: bool,
    length: usize,
}

/// How the body is delimited.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads more bytes into `buffer`; an end of stream is an error, one before
/// any byte of the answer is [`Failure::ClosedBeforeAnswer`].
async fn fill(stream: &mut TcpStream, buffer: &mut BytesMut, started: bool) -> Result<(), Failure> {
    buffer.reserve(READ_CHUNK);
    match stream.read_buf(buffer).await {
        Ok(0) if !started => Err(Failure::ClosedBeforeAnswer),
        Ok(0) => Err(Failure::Other("connection closed mid-answer".into())),
        Ok(_) => Ok(()),
        Err(err) if !started => Err(Failure::closed_or(err)),
        Err(err) => Err(Failure::Other(err.to_string())),
    }
}

/// Parses a head at the start of `buffer`, if all of it is there.
fn parse_head(buffer: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buffer.len() > MAX_HEAD => {
            return Err(Failure::Other("answer head too large".into()))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(Failure::Other(format!("bad answer head: {err}"))),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Failure::Other(format!("bad answer status {code}")))?;
    let mut keep_alive = response.version == Some(1);
    let mut content_length = None;
    let mut chunked = false;
    let mut retry_after = None;
    for h in response.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        if h.name.eq_ignore_ascii_case(header::CONTENT_LENGTH.as_str()) {
            let n = value
                .parse()
                .map_err(|_| Failure::Other(format!("bad content-length '{value}'")))?;
            content_length = Some(n);
        } else if h
            .name
            .eq_ignore_ascii_case(header::TRANSFER_ENCODING.as_str())
        {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case(header::CONNECTION.as_str()) {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case(header::RETRY_AFTER.as_str()) {
            retry_after = value.parse().ok();
        }
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        retry_after,
        framing,
        keep_alive,
        length,
    }))
}

/// Reads one whole answer (informational ones skipped); says whether the
/// connection may carry another request.
pub async fn read_answer(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
) -> Result<(Answer, bool), Failure> {
    let mut started = !buffer.is_empty();
    let head = loop {
        match parse_head(buffer)? {
            Some(head) if head.status.is_informational() => buffer.advance(head.length),
            Some(head) => break head,
            None => {
                fill(stream, buffer, started).await?;
                started = true;
            }
        }
    };
    buffer.advance(head.length);
    let body = match head.framing {
        Framing::Length(n) => {
            while buffer.len() < n {
                fill(stream, buffer, true).await?;
            }
            buffer.split_to(n).freeze()
        }
        Framing::Chunked => read_chunked(stream, buffer).await?,
        Framing::UntilClose => loop {
            buffer.reserve(READ_CHUNK);
            match stream.read_buf(buffer).await {
                Ok(0) => break buffer.split().freeze(),
                Ok(_) => {}
                Err(err) => return Err(Failure::Other(err.to_string())),
            }
        },
    };
    let answer = Answer {
        status: head.status,
        retry_after: head.retry_after,
        body,
    };
    Ok((answer, head.keep_alive))
}

/// Reads a chunked body (trailers skipped) into one buffer.
async fn read_chunked(stream: &mut TcpStream, buffer: &mut BytesMut) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        let (size_len, size) = loop {
            match httparse::parse_chunk_size(buffer) {
                Ok(httparse::Status::Complete(found)) => break found,
                Ok(httparse::Status::Partial) => fill(stream, buffer, true).await?,
                Err(_) => return Err(Failure::Other("bad chunk size".into())),
            }
        };
        buffer.advance(size_len);
        if size == 0 {
            break;
        }
        let size = usize::try_from(size).map_err(|_| Failure::Other("chunk too large".into()))?;
        while buffer.len() < size + 2 {
            fill(stream, buffer, true).await?;
        }
        body.extend_from_slice(&buffer[..size]);
        if &buffer[size..size + 2] != b"\r\n" {
            return Err(Failure::Other("chunk not followed by CRLF".into()));
        }
        buffer.advance(size + 2);
    }
    // Trailer lines, up to the empty one.
    loop {
        match buffer.windows(2).position(|w| w == b"\r\n") {
            Some(0) => {
                buffer.advance(2);
                return Ok(body.freeze());
            }
            Some(end) => buffer.advance(end + 2),
            None if buffer.len() > MAX_HEAD => {
                return Err(Failure::Other("trailers too large".into()))
            }
            None => fill(stream, buffer, true).await?,
        }
    }
}
