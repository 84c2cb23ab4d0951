//! The one socket option the tokio adapter of `sansh` needs that neither
//! the standard library, tokio, socket2, nix nor rustix offers:
//! `SO_RCVLOWAT`, the receive low-water mark. It lives in its own crate so
//! that `sansh` itself keeps `#![forbid(unsafe_code)]`; the only `unsafe`
//! here is a `setsockopt` of an int on a borrowed descriptor (and, in the
//! test, the `getsockopt` that reads it back).

#![deny(unsafe_op_in_unsafe_fn)]

use std::io;

#[cfg(unix)]
use std::os::fd::{AsFd, AsRawFd};

/// Sets `SO_RCVLOWAT` on a socket: readiness (and a blocking read) then waits
/// for `bytes` bytes, or end of stream, or an error, instead of one byte. A
/// non-blocking read still returns whatever is buffered. 1 restores the
/// default. Linux reports readiness by it since 2.6.28 (and sizes the
/// receive buffer for it since 4.18).
#[cfg(unix)]
pub fn set_recv_low_water(socket: &impl AsFd, bytes: usize) -> io::Result<()> {
    let value = bytes.clamp(1, i32::MAX as usize) as libc::c_int;
    // SAFETY: the descriptor is borrowed from a live socket for the
    // duration of the call; the option value points to a c_int on our
    // stack whose size is passed with it, and the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Elsewhere: not supported (the adapter then never asks).
#[cfg(not(unix))]
pub fn set_recv_low_water<S>(_socket: &S, _bytes: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_RCVLOWAT is set on Unix only"))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// `SO_RCVLOWAT` as the kernel has it.
    fn get(socket: &TcpStream) -> libc::c_int {
        let mut value: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the socket is alive for the call; the kernel writes at most
        // `len` bytes into `value` and the length into `len`.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn sets_and_restores_the_low_water_mark() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(get(&client), 1);
        set_recv_low_water(&client, 4096).unwrap();
        assert_eq!(get(&client), 4096);
        // A non-blocking read still returns what is there, below the mark.
        server.write_all(b"hello").unwrap();
        client.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let mut c = &client;
        let mut n = None;
        for _ in 0..2000 {
            match c.read(&mut buf) {
                Ok(got) => {
                    n = Some(got);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        let n = n.expect("5 bytes below the mark are readable without blocking");
        assert_eq!(&buf[..n], b"hello");
        set_recv_low_water(&client, 0).unwrap();
        assert_eq!(get(&client), 1);
        drop(server);
    }
}
