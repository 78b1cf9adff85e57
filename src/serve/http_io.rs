//! Threads that serve HTTP/1.1 connections, each running its own
//! single-threaded tokio runtime.
//!
//! The listeners accept on the process's runtime and hand each connection,
//! in turn, to one of these threads, where it stays until it closes. A
//! connection's tasks then never move between threads and never wake each
//! other across them, so HTTP gets more than one core without the
//! work-stealing and cross-thread wake-ups that more tokio workers cost; and
//! the gRPC listeners, whose one HTTP/2 connection carries every stream,
//! keep the runtime's workers to themselves. Without I/O threads (zero
//! configured) connections are served on the process's runtime, as tasks
//! of their own. Each thread is the home of its requests' answers
//! (`mlserve_inference::reply_home`): a model instance wakes it once per
//! batch, not once per answer.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The process's HTTP I/O threads (cheap to clone; every clone hands
/// connections to the same threads). The threads end, and their runtimes
/// with them, when the last clone is dropped.
#[derive(Clone, Debug, Default)]
pub struct HttpIoThreads {
    threads: Option<Arc<Threads>>,
}

#[derive(Debug)]
struct Threads {
    runtimes: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with the last clone: each thread's runtime then returns.
    _stop: Vec<oneshot::Sender<()>>,
}

impl HttpIoThreads {
    /// Starts `count` threads, named `mlserve-http-N`; zero starts none, and
    /// connections are then served on the caller's runtime. Call it outside
    /// async code: it waits for each thread's runtime to start.
    pub fn start(count: usize) -> Result<HttpIoThreads> {
        if count == 0 {
            return Ok(HttpIoThreads::default());
        }
        let mut runtimes = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        for index in 0..count {
            let (stop, stopped) = oneshot::channel::<()>();
            let (started, handle) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name(format!("mlserve-http-{index}"))
                .spawn(move || run_thread(index, &started, stopped))
                .context("cannot start an HTTP I/O thread")?;
            let handle = handle
                .recv()
                .context("an HTTP I/O thread ended while starting")?
                .context("cannot start an HTTP I/O runtime")?;
            runtimes.push(handle);
            stops.push(stop);
        }
        Ok(HttpIoThreads {
            threads: Some(Arc::new(Threads {
                runtimes,
                next: AtomicUsize::new(0),
                _stop: stops,
            })),
        })
    }

    /// Serves `tcp` with `serve` on the next thread in turn (or as a task of
    /// the current runtime when there are none). The socket is handed over
    /// as a std socket and registered again inside the thread's runtime, so
    /// the runtime that polls it is the one whose reactor watches it.
    pub fn spawn<F, Fut>(&self, tcp: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(threads) = &self.threads else {
            tokio::spawn(serve(tcp));
            return;
        };
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(err) => {
                tracing::debug!(error = %err, "cannot hand a connection to an HTTP I/O thread");
                return;
            }
        };
        let index = threads.next.fetch_add(1, Ordering::Relaxed) % threads.runtimes.len();
        threads.runtimes[index].spawn(async move {
            match TcpStream::from_std(tcp) {
                Ok(tcp) => serve(tcp).await,
                Err(err) => {
                    tracing::debug!(error = %err, "cannot register a connection on its HTTP I/O thread");
                }
            }
        });
    }
}

/// One I/O thread: builds its runtime, reports its handle (or why it could
/// not start), and runs spawned connections until `stopped`.
fn run_thread(
    index: usize,
    started: &std::sync::mpsc::Sender<std::io::Result<Handle>>,
    stopped: oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("mlserve-http-{index}-blocking"))
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = started.send(Err(err));
            return;
        }
    };
    if started.send(Ok(runtime.handle().clone())).is_err() {
        return;
    }
    runtime.block_on(async {
        // The answers to the requests this thread queues come back as one
        // delivery per batch (`reply_home`), not one wake-up each.
        #[cfg(feature = "inference")]
        tokio::spawn(mlserve_inference::reply_home::install_here());
        let _ = stopped.await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Each connection is served on the I/O thread its turn names, and
    /// answers there.
    #[test]
    fn connections_are_served_on_the_io_threads_in_turn() {
        let io = HttpIoThreads::start(2).unwrap();
        runtime().block_on(served_in_turn(io));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn served_in_turn(io: HttpIoThreads) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut names = Vec::new();
        for _ in 0..4 {
            let mut client = TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            io.spawn(server, |mut tcp| async move {
                let name = std::thread::current().name().unwrap_or("").to_string();
                tcp.write_all(name.as_bytes()).await.unwrap();
            });
            let mut name = String::new();
            client.read_to_string(&mut name).await.unwrap();
            names.push(name);
        }
        assert_eq!(
            names,
            [
                "mlserve-http-0",
                "mlserve-http-1",
                "mlserve-http-0",
                "mlserve-http-1"
            ]
        );
    }

    #[tokio::test]
    async fn without_threads_connections_stay_on_the_runtime() {
        let io = HttpIoThreads::start(0).unwrap();
        assert!(io.threads.is_none());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        io.spawn(server, |mut tcp| async move {
            tcp.write_all(b"ok").await.unwrap();
        });
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert_eq!(answer, "ok");
    }
}
