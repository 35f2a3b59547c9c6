//! A tiny HTTP/1.1 server on 127.0.0.1 for download tests: serves fixed replies, counts requests, and
//! stops when dropped or after `LIFETIME`, whichever comes first.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// No test needs the server longer; a forgotten one cannot outlive the test run by much.
const LIFETIME: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(5);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// What the server answers for one path.
#[derive(Clone)]
pub enum Reply {
    /// 200 with this body and its true length.
    Body(Vec<u8>),
    /// 200 declaring `declared` bytes, then only `body` before closing: a connection cut mid-transfer.
    CutShort { declared: usize, body: Vec<u8> },
}

pub struct TestServer {
    pub base_url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves `routes` (path such as `/a.tar.gz`, reply); any other path gets 404.
    pub fn start(routes: Vec<(&'static str, Reply)>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let started = Instant::now();
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        answer(stream, &routes);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(POLL),
                    Err(error) => panic!("test server accept failed: {error}"),
                }
            }
        });
        TestServer { base_url, requests, stop, thread: Some(thread) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Connections accepted so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panic in the server thread has already failed the request that caused it.
            let _ = thread.join();
        }
    }
}

fn answer(mut stream: TcpStream, routes: &[(&'static str, Reply)]) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = Vec::new();
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST_BYTES {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&chunk[..n]),
        }
    }
    let request = String::from_utf8_lossy(&request);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (declared, body) = match routes.iter().find(|(route, _)| *route == path) {
        Some((_, Reply::Body(body))) => (body.len(), body.as_slice()),
        Some((_, Reply::CutShort { declared, body })) => (*declared, body.as_slice()),
        None => {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
    };
    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n");
    // The client may hang up early (e.g. once it has seen too many bytes); that is its right.
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
}
