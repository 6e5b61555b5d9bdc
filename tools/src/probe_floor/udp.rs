//! The floor over UDP: one socket for every node, probes sent with `sendmmsg` and
//! acks received with `recvmmsg`, [`BATCH`] datagrams a system call.
//!
//! [`respond`] gives every node a socket of its own (`127.1.x.y`, see
//! [`sockets::numbered_loopback`], all on one port), each answering a probe with
//! one [`ACK`] to its sender; one datagram a round reaches each, so none of their
//! buffers fills. The [`Prober`]'s one socket receives every ack, so it asks for a
//! receive buffer of [`RECEIVE_BUFFER`] (the system may give less) and counts what
//! it got: acks fewer than probes sent are datagrams the system dropped.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::{ACK, PROBE};
use crate::sockets;

/// Datagrams one `sendmmsg` or `recvmmsg` moves at most.
pub const BATCH: usize = 64;

/// The receive buffer the prober asks for: a round's acks arrive at once.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// Binds `count` sockets, node `i`'s on `numbered_loopback(i)`, all on the port the
/// first one got, and answers every probe each receives with one [`ACK`]; returns
/// the first socket's address (the others follow from it) once all are bound.
///
/// # Errors
/// A bind that failed.
pub async fn respond(count: usize) -> io::Result<SocketAddr> {
    let first = UdpSocket::bind((sockets::numbered_loopback(0), 0)).await?;
    let addr = first.local_addr()?;
    let mut all = vec![first];
    for i in 1..count {
        all.push(UdpSocket::bind((sockets::numbered_loopback(i), addr.port())).await?);
    }
    for socket in all {
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = socket.recv_from(&mut buf).await {
                if socket.send_to(ACK, from).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(addr)
}

/// The node addresses [`respond`] bound, from the first one's.
pub fn targets(first: SocketAddr, count: usize) -> Vec<SocketAddrV4> {
    (0..count)
        .map(|i| SocketAddrV4::new(sockets::numbered_loopback(i), first.port()))
        .collect()
}

/// One socket probing every node in rounds.
pub struct Prober {
    socket: Arc<UdpSocket>,
    targets: Vec<libc::sockaddr_in>,
    acks: Arc<AtomicU64>,
}

impl Prober {
    /// Binds the prober's socket on 127.0.0.1 and starts the task that counts acks.
    ///
    /// # Errors
    /// The bind's.
    pub async fn bind(targets: &[SocketAddrV4]) -> io::Result<Prober> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER);
        let socket = Arc::new(socket);
        let acks = Arc::new(AtomicU64::new(0));
        tokio::spawn(count_acks(socket.clone(), acks.clone()));
        Ok(Prober {
            socket,
            targets: targets.iter().map(sockaddr_in).collect(),
            acks,
        })
    }

    /// The acks received so far.
    pub fn acks(&self) -> Arc<AtomicU64> {
        self.acks.clone()
    }

    /// Sends one [`PROBE`] to every node every `interval`, the first round at once,
    /// [`BATCH`] a system call; returns only on a send error.
    ///
    /// # Errors
    /// The first send that failed (other than the socket's buffer being full).
    pub async fn run(self, interval: Duration) -> io::Result<()> {
        let mut rounds = tokio::time::interval(interval);
        loop {
            rounds.tick().await;
            let mut rest = &self.targets[..];
            while !rest.is_empty() {
                let batch = &rest[..rest.len().min(BATCH)];
                let sent = self
                    .socket
                    .async_io(Interest::WRITABLE, || send_batch(&self.socket, batch))
                    .await?;
                rest = &rest[sent..];
            }
        }
    }
}

/// Counts the datagrams that reach `socket`, [`BATCH`] a system call, until a
/// receive fails.
async fn count_acks(socket: Arc<UdpSocket>, acks: Arc<AtomicU64>) {
    let mut buffers = vec![[0u8; 128]; BATCH];
    loop {
        let received = socket
            .async_io(Interest::READABLE, || receive_batch(&socket, &mut buffers))
            .await;
        match received {
            Ok(n) => {
                acks.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => return,
        }
    }
}

fn sockaddr_in(addr: &SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// One `sendmmsg` of [`PROBE`] to each of `targets` (at most [`BATCH`]): how many
/// went, or `WouldBlock` when none did.
fn send_batch(socket: &UdpSocket, targets: &[libc::sockaddr_in]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: PROBE.as_ptr() as *mut libc::c_void,
        iov_len: PROBE.len(),
    };
    // SAFETY: an all-zero mmsghdr is valid (null pointers, zero lengths).
    let mut messages: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    let count = targets.len().min(BATCH);
    for (message, target) in messages.iter_mut().zip(&targets[..count]) {
        message.msg_hdr.msg_name = std::ptr::from_ref(target) as *mut libc::c_void;
        message.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        message.msg_hdr.msg_iov = &mut iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `messages[..count]` point at `targets` and at `iov` (which points at
    // the static PROBE), all alive for the call; the kernel only reads them and
    // writes each message's `msg_len`.
    let sent = unsafe {
        libc::sendmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// One `recvmmsg` into `buffers`: how many datagrams came, or `WouldBlock` when
/// none was waiting.
fn receive_batch(socket: &UdpSocket, buffers: &mut [[u8; 128]]) -> io::Result<usize> {
    let count = buffers.len().min(BATCH);
    // SAFETY: all-zero iovec and mmsghdr are valid (null pointers, zero lengths).
    let mut iovs: [libc::iovec; BATCH] = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut messages: [libc::mmsghdr; BATCH] = unsafe { mem::zeroed() };
    for ((iov, message), buffer) in iovs
        .iter_mut()
        .zip(messages.iter_mut())
        .zip(buffers.iter_mut())
    {
        iov.iov_base = buffer.as_mut_ptr().cast();
        iov.iov_len = buffer.len();
        message.msg_hdr.msg_iov = iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: each of `messages[..count]` points at one iovec of `iovs`, which
    // points at one buffer of `buffers`; all outlive the call, and the kernel
    // writes at most each buffer's length into it. No address is asked for.
    let received = unsafe {
        libc::recvmmsg(
            socket.as_raw_fd(),
            messages.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    usize::try_from(received).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_probe_is_acked_once() {
        let first = respond(3).await.unwrap();
        let prober = Prober::bind(&targets(first, 3)).await.unwrap();
        let acks = prober.acks();
        tokio::spawn(prober.run(Duration::from_secs(3600)));
        // The first round goes out at once.
        crate::probe_floor::tests::expect_acks(&acks, 3).await;
    }
}
