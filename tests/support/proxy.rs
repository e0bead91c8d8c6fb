//! A TCP proxy a test owns, between a server and PostgreSQL: cutting it is a database outage
//! for that server alone, without touching the machine's PostgreSQL service. Two faults: a
//! cut (every connection reset, new ones refused: an outage that announces itself) and a
//! blackhole (connections stay open and new ones are accepted, but nothing is forwarded
//! either way: a silent link, a frozen host).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Proxy {
    pub port: u16,
    state: Arc<Mutex<State>>,
    /// True while the link is a blackhole.
    silent: watch::Sender<bool>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    cut: bool,
    connections: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Forwards every connection to `upstream` until cut or blackholed.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let (silent, _) = watch::channel(false);
        let shared = state.clone();
        let link = silent.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mut state = shared.lock().unwrap();
                if state.cut {
                    // Refused: the connection closes at once.
                    continue;
                }
                let link = link.subscribe();
                state.connections.push(tokio::spawn(async move {
                    // Not even connecting upstream while silent: a frozen host answers nothing.
                    let mut quiet = link.clone();
                    if quiet.wait_for(|silent| !silent).await.is_err() {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::select! {
                        () = pump(from_client, to_server, link.clone()) => {}
                        () = pump(from_server, to_client, link) => {}
                    }
                }));
            }
        });
        Self {
            port,
            state,
            silent,
            accept,
        }
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Stops forwarding, either way, without closing anything.
    pub fn blackhole(&self) {
        self.silent.send_replace(true);
    }

    /// Lets connections through again, and resumes the ones a blackhole held.
    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
        self.silent.send_replace(false);
    }
}

/// Copies one direction, holding whatever it has while the link is silent.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if link.wait_for(|silent| !silent).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
