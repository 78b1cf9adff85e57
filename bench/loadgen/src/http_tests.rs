use super::*;
use http::header;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[test]
fn parses_targets() {
    let e = HttpEndpoint::parse("http://127.0.0.1:8000").unwrap();
    assert_eq!(e.addr, "127.0.0.1:8000");
    assert_eq!(e.host, "127.0.0.1:8000");
    assert_eq!(e.prefix, "");
    let e = HttpEndpoint::parse("http://localhost/api/").unwrap();
    assert_eq!(e.addr, "localhost:80");
    assert_eq!(e.prefix, "/api");
    assert!(HttpEndpoint::parse("https://x:1").is_err());
}

#[test]
fn a_request_is_encoded_as_a_parser_reads_it() {
    let endpoint = HttpEndpoint::parse("http://127.0.0.1:8000").unwrap();
    let headers = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    )];
    let request = HttpRequest::new(
        &endpoint,
        Method::POST,
        "/v2/models/m/infer",
        &headers,
        b"{}",
    );
    let mut parsed_headers = [httparse::EMPTY_HEADER; 8];
    let mut parsed = httparse::Request::new(&mut parsed_headers);
    let httparse::Status::Complete(head) = parsed.parse(request.wire()).unwrap() else {
        panic!("incomplete head");
    };
    assert_eq!(parsed.method, Some("POST"));
    assert_eq!(parsed.path, Some("/v2/models/m/infer"));
    let value = |name: &str| {
        let h = parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name));
        h.map(|h| std::str::from_utf8(h.value).unwrap().to_string())
    };
    assert_eq!(value("host").as_deref(), Some("127.0.0.1:8000"));
    assert_eq!(value("content-length").as_deref(), Some("2"));
    assert_eq!(value("content-type").as_deref(), Some("application/json"));
    assert_eq!(&request.wire()[head..], b"{}");

    let get = HttpRequest::new(&endpoint, Method::GET, "/metrics", &[], &[]);
    assert!(!String::from_utf8_lossy(get.wire()).contains("content-length"));
}

/// A server that reads one request head per element of `answers` on one
/// connection after another and writes the element's bytes; an element of
/// `None` closes the connection without answering; it counts requests read.
async fn scripted(
    answers: Vec<Option<&'static [u8]>>,
) -> (Arc<HttpEndpoint>, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut read = 0;
        let mut answers = answers.into_iter().peekable();
        while answers.peek().is_some() {
            let (mut socket, _) = listener.accept().await.unwrap();
            for answer in answers.by_ref() {
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return read;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                read += 1;
                match answer {
                    Some(bytes) => {
                        // Split the answer to exercise partial reads.
                        let (a, b) = bytes.split_at(bytes.len() / 2);
                        socket.write_all(a).await.unwrap();
                        socket.flush().await.unwrap();
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        socket.write_all(b).await.unwrap();
                    }
                    None => break,
                }
            }
        }
        read
    });
    let endpoint = HttpEndpoint::parse(&format!("http://{addr}")).unwrap();
    (Arc::new(endpoint), server)
}

fn get_request(endpoint: &HttpEndpoint) -> HttpRequest {
    HttpRequest::new(endpoint, Method::GET, "/x", &[], &[])
}

#[tokio::test]
async fn reads_length_chunked_informational_and_close_framed_answers() {
    let (endpoint, server) = scripted(vec![
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"),
        Some(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"),
        Some(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy"),
        Some(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nto the end"),
    ])
    .await;
    let mut connection = HttpConnection::new(endpoint.clone());
    let request = get_request(&endpoint);
    let a = connection.send(&request).await.unwrap();
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"hello"[..]));
    let b = connection.send(&request).await.unwrap();
    assert_eq!(&b.body[..], b"abcde");
    let c = connection.send(&request).await.unwrap();
    assert_eq!(
        (c.status, c.retry_after, &c.body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, Some(7), &b"busy"[..])
    );
    let d = connection.send(&request).await.unwrap();
    assert_eq!(&d.body[..], b"to the end");
    assert!(
        connection.stream.is_none(),
        "a close-framed answer ends the connection"
    );
    assert_eq!(server.await.unwrap(), 4);
}

#[tokio::test]
async fn a_kept_alive_connection_the_server_closed_is_reopened_once() {
    let (endpoint, server) = scripted(vec![
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\na"),
        None,
        Some(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nb"),
    ])
    .await;
    let mut connection = HttpConnection::new(endpoint.clone());
    let request = get_request(&endpoint);
    assert_eq!(&connection.send(&request).await.unwrap().body[..], b"a");
    assert_eq!(&connection.send(&request).await.unwrap().body[..], b"b");
    assert_eq!(server.await.unwrap(), 3);
}

/// The error of one GET to a server scripted with `answers`.
async fn failure_of(answers: Vec<Option<&'static [u8]>>) -> (TransportError, HttpConnection) {
    let (endpoint, _server) = scripted(answers).await;
    let mut connection = HttpConnection::new(endpoint.clone());
    let err = connection.send(&get_request(&endpoint)).await.err();
    (err.expect("the send fails"), connection)
}

#[tokio::test]
async fn a_fresh_connection_closed_before_an_answer_fails_and_a_bad_head_fails() {
    let (err, _) = failure_of(vec![None]).await;
    assert!(err.0.contains("closed before an answer"), "{}", err.0);
    let (err, connection) = failure_of(vec![Some(b"HTTP/1.1 2x0 OK\r\n\r\n")]).await;
    assert!(err.0.contains("bad answer head"), "{}", err.0);
    assert!(connection.stream.is_none());
}
