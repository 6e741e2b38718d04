//! A TCP relay on loopback between the push and a registry that cuts
//! every connection once a given number of bytes has gone upstream: a
//! registry that drops the connection in the middle of a blob. After the
//! cut it closes every new connection at once. Dropping it stops the
//! accepting thread and every pump, and joins them all.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Default)]
struct Shared {
    upstream_bytes: AtomicU64,
    cut: AtomicBool,
    stopping: AtomicBool,
    /// Both ends of every relayed connection, to shut down on drop.
    sockets: Mutex<Vec<TcpStream>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

pub struct Relay {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Relays to `upstream` until `cut_after` bytes went upstream in all.
    pub fn start(upstream: SocketAddr, cut_after: u64) -> Relay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind the relay");
        let address = listener.local_addr().expect("the relay's address");
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if shared.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    if shared.cut.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    relay_connection(&shared, client, server, cut_after);
                }
            })
        };
        Relay {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Whether the cut happened.
    pub fn cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

fn relay_connection(shared: &Arc<Shared>, client: TcpStream, server: TcpStream, cut_after: u64) {
    let clones = (
        client.try_clone(),
        server.try_clone(),
        server.try_clone(),
        client.try_clone(),
    );
    let (Ok(client_read), Ok(server_write), Ok(server_read), Ok(client_write)) = clones else {
        return;
    };
    if let Ok(mut sockets) = shared.sockets.lock() {
        sockets.push(client);
        sockets.push(server);
    }
    let upstream = {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || pump_upstream(&shared, client_read, server_write, cut_after))
    };
    let downstream = std::thread::spawn(move || pump(server_read, client_write));
    if let Ok(mut pumps) = shared.pumps.lock() {
        pumps.push(upstream);
        pumps.push(downstream);
    }
}

/// Client to registry, counting; at the limit both sides are shut down.
fn pump_upstream(shared: &Shared, mut from: TcpStream, mut to: TcpStream, cut_after: u64) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let before = shared
            .upstream_bytes
            .fetch_add(read as u64, Ordering::SeqCst);
        if before + read as u64 >= cut_after {
            shared.cut.store(true, Ordering::SeqCst);
            let allowed = cut_after.saturating_sub(before) as usize;
            let _ = to.write_all(&buffer[..allowed.min(read)]);
            break;
        }
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the accepting thread, which then sees `stopping`.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if let Ok(sockets) = self.shared.sockets.lock() {
            for socket in sockets.iter() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        let pumps = self
            .shared
            .pumps
            .lock()
            .map(|mut pumps| std::mem::take(&mut *pumps))
            .unwrap_or_default();
        for pump in pumps {
            let _ = pump.join();
        }
    }
}
