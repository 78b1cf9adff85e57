use std::convert::Infallible;

use http_body_util::{BodyExt, Full, StreamBody};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;

const KIB: u64 = 1024;

fn pace() -> BodyPace {
    BodyPace {
        grace: Duration::from_secs(60),
        min_bytes_per_sec: 1,
    }
}

fn declared(len: u64) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .header(http::header::CONTENT_LENGTH, len)
        .body(Full::new(Bytes::from(vec![0u8; len as usize])))
        .unwrap()
}

type Chunks = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;

/// A body without a declared length, fed through the returned sender.
fn chunked() -> (
    http::Request<Chunks>,
    mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let request = http::Request::new(StreamBody::new(ReceiverStream::new(rx)));
    (request, tx)
}

#[tokio::test]
async fn a_declared_length_is_reserved_and_a_request_past_the_budget_is_refused_at_once() {
    let budget = BodyBudget::new(10 * KIB, 1024 * KIB);
    let guard = BodyGuard::new(budget.clone(), pace());
    let (first, lease) = guard.admit(declared(8 * KIB)).unwrap();
    assert_eq!(budget.available_bytes(), 2 * KIB);
    assert!(first.extensions().get::<BodyLease>().is_some());
    let refused = guard.admit(declared(4 * KIB)).unwrap_err();
    assert_eq!(refused.code, ErrorCode::Unavailable, "{refused:?}");
    assert!(
        refused.message.contains("retry later"),
        "{}",
        refused.message
    );
    // Reading the body takes nothing more; answering returns it all.
    let bytes = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes.len() as u64, 8 * KIB);
    assert_eq!(budget.available_bytes(), 2 * KIB);
    drop(lease);
    assert_eq!(budget.available_bytes(), 10 * KIB);
    assert!(guard.admit(declared(4 * KIB)).is_ok());
}

#[tokio::test]
async fn a_body_counts_for_at_most_the_per_request_share() {
    let budget = BodyBudget::new(100 * KIB, 10 * KIB);
    let guard = BodyGuard::new(budget.clone(), pace());
    let (request, _lease) = guard.admit(declared(50 * KIB)).unwrap();
    assert_eq!(budget.available_bytes(), 90 * KIB);
    request.into_body().collect().await.unwrap();
    assert_eq!(budget.available_bytes(), 90 * KIB);
}

#[tokio::test]
async fn a_body_without_a_length_reserves_as_it_comes_and_fails_when_the_budget_runs_out() {
    let budget = BodyBudget::new(4 * KIB, 1024 * KIB);
    let guard = BodyGuard::new(budget.clone(), pace());
    let (request, lease) = {
        let (request, tx) = chunked();
        for _ in 0..3 {
            tx.send(Ok(Frame::data(Bytes::from(vec![1u8; 2048]))))
                .await
                .unwrap();
        }
        drop(tx);
        guard.admit(request).unwrap()
    };
    let err = request.into_body().collect().await.unwrap_err();
    let found = BodyError::find(err.as_ref()).expect("a body error");
    assert!(matches!(found, BodyError::OverBudget(_)), "{found:?}");
    assert_eq!(found.to_service_error().code, ErrorCode::Unavailable);
    // The two frames it took stay reserved until the request is answered.
    assert_eq!(budget.available_bytes(), 0);
    drop(lease);
    assert_eq!(budget.available_bytes(), 4 * KIB);
}

#[tokio::test]
async fn an_inflated_body_is_reserved_through_the_lease() {
    let budget = BodyBudget::new(64 * KIB, 16 * KIB);
    let guard = BodyGuard::new(budget.clone(), pace());
    let (request, _lease) = guard.admit(declared(KIB)).unwrap();
    let lease = request.extensions().get::<BodyLease>().unwrap().clone();
    lease.reserve(40 * KIB).unwrap();
    assert_eq!(budget.available_bytes(), 23 * KIB);
    let err = lease.reserve(30 * KIB).unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert_eq!(
        budget.available_bytes(),
        23 * KIB,
        "a refused reservation takes nothing"
    );
}

#[tokio::test]
async fn a_stalled_body_fails_once_its_time_is_up() {
    let budget = BodyBudget::new(1024 * KIB, 1024 * KIB);
    let pace = BodyPace {
        grace: Duration::from_millis(50),
        min_bytes_per_sec: 1024 * 1024,
    };
    let guard = BodyGuard::new(budget, pace);
    let (request, tx) = chunked();
    tx.send(Ok(Frame::data(Bytes::from_static(b"{\"inputs\""))))
        .await
        .unwrap();
    let (request, _lease) = guard.admit(request).unwrap();
    // The sender stays open: the body neither ends nor moves.
    let err = request.into_body().collect().await.unwrap_err();
    drop(tx);
    let found = BodyError::find(err.as_ref()).expect("a body error");
    assert_eq!(found, &BodyError::TooSlow { received: 9 });
    let answer = found.to_service_error();
    assert_eq!(answer.code, ErrorCode::BadRequest);
    assert!(answer.message.contains("too slowly"), "{}", answer.message);
}

#[tokio::test]
async fn a_body_that_keeps_its_pace_is_read_whole() {
    let budget = BodyBudget::new(1024 * KIB, 1024 * KIB);
    let pace = BodyPace {
        grace: Duration::from_secs(30),
        min_bytes_per_sec: 1,
    };
    let guard = BodyGuard::new(budget, pace);
    let (request, tx) = chunked();
    let (request, _lease) = guard.admit(request).unwrap();
    let feeder = tokio::spawn(async move {
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(b"abc"))))
                .await
                .unwrap();
        }
    });
    let bytes = request.into_body().collect().await.unwrap().to_bytes();
    feeder.await.unwrap();
    assert_eq!(&bytes[..], b"abcabcabcabcabc");
}
