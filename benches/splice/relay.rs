//! A raw TCP relay, for one measurement: what splice(2) on uploads would
//! change (docs/benchmarks.md, "Fifth round"). Not part of the gate.
//!
//! `relay LISTEN UPSTREAM copy|splice`: every accepted connection is joined
//! to a new one to UPSTREAM; client -> upstream bytes are copied through a
//! 512 KiB buffer or spliced through a 1 MiB pipe, upstream -> client bytes
//! are copied. Built by `run.sh` with plain rustc (std only).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

extern "C" {
    fn splice(
        fd_in: i32,
        off_in: *mut i64,
        fd_out: i32,
        off_out: *mut i64,
        len: usize,
        flags: u32,
    ) -> isize;
    fn pipe2(fds: *mut i32, flags: i32) -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
}

const F_SETPIPE_SZ: i32 = 1031;
const O_CLOEXEC: i32 = 0o2000000;
const SPLICE_F_MOVE: u32 = 1;
const SPLICE_F_MORE: u32 = 4;
const PIPE: usize = 1 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (listen, upstream, spliced) = match &args[..] {
        [_, l, u, m] if m == "copy" || m == "splice" => (l, u, m == "splice"),
        _ => {
            eprintln!("usage: relay LISTEN UPSTREAM copy|splice");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(listen).unwrap_or_else(|e| {
        eprintln!("relay: cannot listen on {listen}: {e}");
        std::process::exit(1);
    });
    for client in listener.incoming() {
        // A failed connection is reported and the relay goes on: the
        // measuring script sees the push fail.
        if let Err(e) = client.and_then(|c| relay(c, upstream, spliced)) {
            eprintln!("relay: {e}");
        }
    }
}

/// Joins `client` to a new connection to `upstream` until the client is done.
fn relay(client: TcpStream, upstream: &str, spliced: bool) -> io::Result<()> {
    let up = TcpStream::connect(upstream)?;
    up.set_nodelay(true)?;
    client.set_nodelay(true)?;
    let (mut back_from, mut back_to) = (up.try_clone()?, client.try_clone()?);
    std::thread::spawn(move || {
        let _ = io::copy(&mut back_from, &mut back_to);
        let _ = back_to.shutdown(Shutdown::Write);
    });
    let moved = if spliced {
        splice_all(&client, &up)
    } else {
        copy_all(&client, &up)
    };
    let _ = up.shutdown(Shutdown::Write);
    moved
}

fn copy_all(mut from: &TcpStream, mut to: &TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 512 * 1024];
    loop {
        match from.read(&mut buf)? {
            0 => return Ok(()),
            n => to.write_all(&buf[..n])?,
        }
    }
}

fn splice_all(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    let (read_end, write_end) = pipe()?;
    let null = std::ptr::null_mut();
    loop {
        // SAFETY: splice(2) on descriptors owned or borrowed here.
        let n = unsafe {
            splice(
                from.as_raw_fd(),
                null,
                write_end.as_raw_fd(),
                null,
                PIPE,
                SPLICE_F_MOVE,
            )
        };
        let mut left = checked(n)?;
        if left == 0 {
            return Ok(());
        }
        while left > 0 {
            let flags = SPLICE_F_MOVE | SPLICE_F_MORE;
            // SAFETY: as above.
            let w = unsafe {
                splice(
                    read_end.as_raw_fd(),
                    null,
                    to.as_raw_fd(),
                    null,
                    left,
                    flags,
                )
            };
            left -= checked(w)?;
        }
    }
}

/// A 1 MiB pipe; both ends close when dropped.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors, owned from here on.
    let ends = unsafe {
        checked(pipe2(fds.as_mut_ptr(), O_CLOEXEC) as isize)?;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    };
    // SAFETY: fcntl on a descriptor owned here.
    checked(unsafe { fcntl(ends.1.as_raw_fd(), F_SETPIPE_SZ, PIPE as i32) } as isize)?;
    Ok(ends)
}

/// A system call's result as a count, or the error it set.
fn checked(ret: isize) -> io::Result<usize> {
    usize::try_from(ret).map_err(|_| io::Error::last_os_error())
}
