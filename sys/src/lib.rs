//! The socket options the tokio adapter of `sansh` needs that neither the
//! standard library, tokio nor socket2 offers: setting `SO_RCVLOWAT` (the
//! receive low-water mark) and reading `SO_RCVBUF`. It lives in its own
//! crate so that `sansh` itself keeps `#![forbid(unsafe_code)]`; the only
//! `unsafe` here is one `setsockopt` and one `getsockopt` of an int on a
//! borrowed descriptor.

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
    set_int(socket, libc::SO_RCVLOWAT, bytes.clamp(1, i32::MAX as usize) as libc::c_int)
}

/// The socket's receive buffer size (`SO_RCVBUF`, as the kernel reports
/// it: on Linux twice the payload it holds), which autotuning grows.
#[cfg(unix)]
pub fn recv_buffer_size(socket: &impl AsFd) -> io::Result<usize> {
    get_int(socket, libc::SO_RCVBUF).map(|v| v.max(0) as usize)
}

/// `setsockopt(SOL_SOCKET, option)` with an int.
#[cfg(unix)]
fn set_int(socket: &impl AsFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live descriptor for the duration of
    // the call; the option value points to a c_int on our stack whose size
    // is passed with it, and the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `getsockopt(SOL_SOCKET, option)` of an int.
#[cfg(unix)]
fn get_int(socket: &impl AsFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `fd` is borrowed from a live descriptor for the call; the
    // kernel writes at most `len` bytes into `value` and the length into `len`.
    let rc = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut libc::c_int).cast(), &mut len)
    };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

/// Elsewhere: not supported (the adapter then never asks).
#[cfg(not(unix))]
pub fn set_recv_low_water<S>(_socket: &S, _bytes: usize) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_RCVLOWAT is set on Unix only"))
}

/// Elsewhere: not supported.
#[cfg(not(unix))]
pub fn recv_buffer_size<S>(_socket: &S) -> io::Result<usize> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "SO_RCVBUF is read on Unix only"))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn get(socket: &TcpStream) -> libc::c_int {
        get_int(socket, libc::SO_RCVLOWAT).unwrap()
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
        assert!(recv_buffer_size(&client).unwrap() > 0);
        drop(server);
    }
}
